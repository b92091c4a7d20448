"""A split-aware test of an effect measured per fold: the corrected resampled t-test.

The claims table's patient bootstrap keeps every model's predictions fixed, so its CI covers patient
sampling only. A difference that comes from how the folds were split and trained (a model that happened to
fit the noise of its training part, or fold-level offsets that pooling across folds turns into AUC) is
invisible to it. This test treats each fold's effect (e.g. a fold's test AUC of method a minus method b)
as one draw of the whole train-and-test procedure and asks whether their mean differs from the null.

Fold effects of cross-validation are correlated (training parts overlap), so the plain t-test's
variance ``s^2 / J`` is too small. Nadeau & Bengio (2003, Machine Learning 52:239) correct it to
``(1 / J + n_test / n_train) s^2``; Bouckaert & Frank (2004, PAKDD) use the same correction for
R repeats of K-fold CV with ``J = R K`` and ``J - 1`` degrees of freedom. ``n_test / n_train`` is the
ratio of the parts' sizes, read from ``folds.tsv`` (:func:`part_size_ratio`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class FoldTest:
    """The mean of the fold effects, its corrected ``level`` CI, the two-sided p of ``mean == null``."""

    mean: float
    ci_low: float
    ci_high: float
    p: float
    n_folds: int


def part_size_ratio(folds: pd.DataFrame) -> float:
    """Mean over folds of (test patients) / (training patients), from a ``folds.tsv`` frame."""
    counts = folds.groupby(["fold", "part"]).size().unstack("part", fill_value=0)
    for part in ("train", "test"):
        if part not in counts.columns:
            raise ValueError(f"folds table: no fold has a {part!r} part")
    if (counts["train"] == 0).any():
        fold = int(counts.index[counts["train"] == 0][0])
        raise ValueError(f"folds table: fold {fold} has no training patient")
    return float((counts["test"] / counts["train"]).mean())


def corrected_fold_test(
    effects: Iterable[float], test_train_ratio: float, null: float = 0.0, level: float = 0.95
) -> FoldTest:
    """Corrected resampled t-test of the fold ``effects`` (NaN folds left out) against ``null``.

    Fewer than two folds: NaN bounds and p. Zero spread: the CI is the mean itself (a verdict then
    needs the mean off the null) and p is 0 or 1.
    """
    if test_train_ratio < 0:
        raise ValueError(f"test_train_ratio must be >= 0, got {test_train_ratio}")
    values = np.asarray(list(effects), dtype=float)
    values = values[~np.isnan(values)]
    n = len(values)
    nan = float("nan")
    if n == 0:
        return FoldTest(nan, nan, nan, nan, 0)
    mean = float(values.mean())
    if n < 2:
        return FoldTest(mean, nan, nan, nan, n)
    se = float(np.sqrt((1.0 / n + test_train_ratio) * values.var(ddof=1)))
    if se == 0:
        return FoldTest(mean, mean, mean, 1.0 if mean == null else 0.0, n)
    df = n - 1
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    t = (mean - null) / se
    return FoldTest(mean, mean - half, mean + half, float(2 * stats.t.sf(abs(t), df)), n)
