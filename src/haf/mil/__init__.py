"""Stage 1: CLAM gated-attention MIL over WSI/TMA bags, batched (see ``docs/stage1.md``).

* :mod:`haf.mil.clam`: :class:`~haf.mil.clam.GatedAttentionMIL` (batched, masked forward; one fold or K
  folds stacked) and :func:`~haf.mil.clam.clam_loss` (Eq. 3).
* :mod:`haf.mil.bags`: :class:`~haf.mil.bags.BagStore`, lazy h5 bags per pathology model and padded
  batches for any list of patient ids (one per member of a stacked model: ``stacked_batch``).
* :mod:`haf.mil.train`: :func:`~haf.mil.train.run_stage1_folds` (K folds at once on the stacked
  runtime) and :func:`~haf.mil.train.run_stage1` (one fold, the rule).

Submodules import torch; import them directly (this package's ``__init__`` stays import-light).
"""
