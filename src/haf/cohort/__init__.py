"""Cohort assembly: manifest, targets, folds, per-fold tabular preprocessing, fold inputs.

Modules: ``sources`` (read every tabular source once), ``features`` (raw per-modality tables and
column groups), ``manifest``, ``targets``, ``folds``, ``tabular`` (fitted per fold on the training
part only), ``assemble`` (one fold's :class:`haf.artifacts.fold_inputs.FoldInputs`).
"""
