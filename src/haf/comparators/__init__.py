"""Comparable methods of the HAF and PARACHUTE papers, re-implemented from their published descriptions.

``late_fusion`` (MDLM-style), ``attention_fusion`` (PS3-style), ``mfmf`` (asymmetric attention over
one value modality), ``feature_interaction`` (low-rank bilinear) and ``parachute`` (hierarchical
MHCA fusion, Cox loss, SAM + Gradient Curvature Steering).  One trainer
(:func:`haf.comparators.train.train_comparator`) serves all of them; each family's builder
(:mod:`haf.comparators.builders`) and step are named in :data:`haf.methods.METHOD_FAMILIES`.
"""
