"""Stage 1: CLAM gated-attention MIL over WSI/TMA bags, batched (see ``docs/stage1.md``).

* :mod:`haf.mil.clam`: :class:`~haf.mil.clam.GatedAttentionMIL` (batched, masked forward) and
  :func:`~haf.mil.clam.clam_loss` (Eq. 3).
* :mod:`haf.mil.bags`: :class:`~haf.mil.bags.BagStore`, lazy h5 bags per pathology model and padded
  batches for any list of patient ids.
* :mod:`haf.mil.train`: the per-fold trainer and :func:`~haf.mil.train.run_stage1` (the rule).

Submodules import torch; import them directly (this package's ``__init__`` stays import-light).
"""
