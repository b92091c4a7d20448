"""The training runtime every per-fold model shares.

* :mod:`.seeds`: :func:`~.seeds.fold_seed` (the one per-fold seed rule) and seeding;
* :mod:`.device`: device choice, bf16 autocast on CUDA, intra-op threads;
* :mod:`.fit`: the protocol (optimiser, ReduceLROnPlateau or cosine, early stopping with restore);
* :mod:`.tensors`: fold inputs as tensors, usable rows, minibatches, batched prediction;
* :mod:`.outputs`: the four per-fold method outputs (predictions, masked predictions, log, model).
"""
