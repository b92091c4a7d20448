"""Stages 2 and 3 of HAF: modality projectors, global alignment (GA) or CLIP, robust fusion with MoFe.

Modules: :mod:`~haf.alignment.losses` (losses, Eq. 5-7 and CLIP), :mod:`~haf.alignment.projectors`
(phi_m, Eq. 4), :mod:`~haf.alignment.train` (rule ``align``), :mod:`~haf.fusion.model` (fusion MLP,
random-modality subsets, Eq. 8-11), :mod:`~haf.fusion.spec` (a method is a declaration),
:mod:`~haf.fusion.train` (the one Stage 3 trainer), :mod:`~haf.fusion.joint` (no-detach, Eq. 12),
:mod:`~haf.fusion.train` (rule ``fusion``), :mod:`~tests/fakes/fusion.py` (test/benchmark inputs).
"""
