"""Stage 2 of HAF: per-modality projectors phi_m and their alignment into one shared space.

* :mod:`.projectors`: phi_m (Eq. 4), unit projections, zero where absent;
* :mod:`.losses`: the alignment registry (``ga``: L_SV + lambda_PD L_PD, Eq. 5-7; ``clip``);
* :mod:`.train`: the rule ``align`` (one fold's projectors, aligned embeddings, log).
"""
