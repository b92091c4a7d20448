"""Validation scores used for early stopping (higher is better); NaN when undefined on a part."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def auc_or_nan(label: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC over the patients with a binary label; NaN if only one class is present."""
    label = np.asarray(label, dtype=float)
    score = np.asarray(score, dtype=float)
    keep = ~np.isnan(label)
    if keep.sum() < 2 or len(np.unique(label[keep])) < 2:
        return float("nan")
    return float(roc_auc_score(label[keep], score[keep]))


def cindex_or_nan(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C-index (scikit-survival); NaN without an event or a comparable pair."""
    from sksurv.metrics import concordance_index_censored

    event = np.asarray(event, dtype=bool)
    if event.sum() == 0:
        return float("nan")
    try:
        return float(
            concordance_index_censored(event, np.asarray(time, dtype=float), np.asarray(risk, dtype=float))[0]
        )
    except ValueError:  # no comparable pairs
        return float("nan")
