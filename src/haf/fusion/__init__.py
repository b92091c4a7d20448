"""Stages 2 and 3 of HAF: modality projectors, global alignment (GA) or CLIP, robust fusion with MoFe.

Modules: :mod:`~haf.fusion.alignment` (losses, Eq. 5-7 and CLIP), :mod:`~haf.fusion.projectors`
(phi_m, Eq. 4), :mod:`~haf.fusion.stage2` (rule ``align``), :mod:`~haf.fusion.model` (fusion MLP,
random-modality subsets, Eq. 8-11), :mod:`~haf.fusion.spec` (a method is a declaration),
:mod:`~haf.fusion.trainer` (the one Stage 3 trainer), :mod:`~haf.fusion.joint` (no-detach, Eq. 12),
:mod:`~haf.fusion.jobs` (rule ``fusion``), :mod:`~haf.fusion.synthetic` (test/benchmark inputs).
"""
