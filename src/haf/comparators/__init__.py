"""Comparable methods of seeds 000 and 004, re-implemented from their published descriptions.

``late_fusion`` (MDLM-style), ``attention_fusion`` (PS3-style), ``mfmf`` (asymmetric attention over
one value modality), ``feature_interaction`` (low-rank bilinear) and ``parachute`` (hierarchical
MHCA fusion, Cox loss, SAM + Gradient Curvature Steering).  One trainer
(:func:`haf.comparators.trainer.train_comparator`) serves all of them through the
:data:`~haf.comparators.trainer.COMPARATORS` registry.
"""

from haf.comparators.train import (
    COMPARATORS,
    ComparatorResult,
    ComparatorSpec,
    build_model,
    load_model,
    run_comparator,
    train_comparator,
)

__all__ = [
    "COMPARATORS",
    "ComparatorResult",
    "ComparatorSpec",
    "build_model",
    "load_model",
    "run_comparator",
    "train_comparator",
]
