"""Repeated cross-validation in the evaluation: which CV repeat a fold belongs to, and how numbers are
aggregated over repeats (docs/evaluation.md, "Repeated cross-validation").

``cv.repeats`` (R) seeded K-fold splits: ``folds.tsv`` gives every global fold id its ``repeat``
(:func:`haf.artifacts.folds.fold_repeats`); prediction files and masked tables carry only the fold.
Evaluation frames call the split's repeat ``cv_repeat`` (the masked tables' ``repeat`` is the random
test-time mask, a different thing).

* Per-fold metrics: the fold mean and SD within each repeat, then their means over repeats
  (``{m}_mean``, ``{m}_std``); also the SD over all R x K folds (``{m}_sd_all_folds``) and the SD of the
  repeats' fold means (``{m}_repeat_sd``).
* Pooled metrics: within one repeat every patient has one test prediction, so a pooled metric is
  computed per repeat, then averaged (``{m}_pooled``), with its spread over repeats.
* Bootstrap: one set of resampled patients scores every repeat and the repeat average is taken per
  resample (:func:`haf.eval.binary.bootstrap_ci`), so a CI reflects patient sampling only.

With R = 1 every number equals the plain K-fold one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from haf.artifacts.folds import fold_repeats, read_folds
from haf.errors import HafInputError

log = logging.getLogger(__name__)

CV_REPEAT = "cv_repeat"
"""Column naming a row's cross-validation repeat in evaluation frames."""

Repeats = Mapping[int, int]
"""fold id -> CV repeat (:func:`read_repeats`); None where a function takes it = one repeat."""


def read_repeats(folds_path: str | Path) -> dict[int, int]:
    """fold -> CV repeat of ``folds.tsv``."""
    return fold_repeats(read_folds(folds_path))


def cv_shape(repeats: Repeats | None, folds: Iterable[int] = ()) -> tuple[int, int]:
    """``(R, K)``: the number of CV repeats and of folds per repeat (the largest repeat's)."""
    if repeats is None:
        return 1, len(set(int(f) for f in folds))
    counts = pd.Series(list(repeats.values())).value_counts()
    return int(len(counts)), int(counts.max()) if len(counts) else 0


def repeat_of(folds: Iterable[int], repeats: Repeats | None) -> np.ndarray:
    """The CV repeat of each fold id (every fold in repeat 0 when ``repeats`` is None)."""
    folds = np.asarray(list(folds), dtype=int)
    if repeats is None:
        return np.zeros(len(folds), dtype=int)
    unknown = sorted(set(folds.tolist()) - set(repeats))
    if unknown:
        raise HafInputError(
            None,
            f"fold {unknown[0]} of the predictions is not a fold of folds.tsv (folds: {sorted(repeats)})",
            field="fold",
        )
    return np.array([repeats[int(f)] for f in folds], dtype=int)


def with_repeat(frame: pd.DataFrame, repeats: Repeats | None) -> pd.DataFrame:
    """``frame`` (with a ``fold`` column) with its ``cv_repeat`` column added (or replaced)."""
    return frame.assign(**{CV_REPEAT: repeat_of(frame["fold"], repeats)})


def by_repeat(frame: pd.DataFrame, repeats: Repeats | None) -> dict[int, pd.DataFrame]:
    """The rows of each CV repeat, in repeat order."""
    tagged = with_repeat(frame, repeats)
    return {int(r): rows for r, rows in tagged.groupby(CV_REPEAT, sort=True)}


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def _sd(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def within_repeats(per_fold: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """One row per CV repeat: its number of folds and each metric's fold mean and sample SD.

    Folds where a metric is undefined (NaN) are skipped for that metric and not counted in
    ``{m}_n_folds``.
    """
    metrics = list(metrics)
    records = []
    for repeat, rows in per_fold.groupby(CV_REPEAT, sort=True):
        record: dict[str, float] = {CV_REPEAT: int(repeat), "n_folds": len(rows)}
        for metric in metrics:
            values = rows[metric].to_numpy(dtype=float)
            record[f"{metric}_mean"] = _mean(values)
            record[f"{metric}_std"] = _sd(values)
            record[f"{metric}_n_folds"] = int((~np.isnan(values)).sum())
        records.append(record)
    return pd.DataFrame.from_records(records)


def summarise_repeats(per_fold: pd.DataFrame, metrics: Iterable[str]) -> dict[str, float]:
    """Per-fold metrics aggregated over folds and repeats (``per_fold`` has ``cv_repeat``).

    ``{m}_mean``: mean over repeats of the within-repeat fold means; ``{m}_std``: mean over repeats of
    the within-repeat fold SDs (ddof 1); ``{m}_sd_all_folds``: SD over every fold of every repeat;
    ``{m}_repeat_sd``: SD over repeats of the within-repeat means (NaN with one repeat);
    ``{m}_n_folds``: folds where the metric is defined. With one repeat ``{m}_mean`` and ``{m}_std`` are
    the plain fold mean and SD.
    """
    metrics = list(metrics)
    inner = within_repeats(per_fold, metrics)
    out: dict[str, float] = {}
    for metric in metrics:
        out[f"{metric}_mean"] = _mean(inner[f"{metric}_mean"].to_numpy(dtype=float))
        out[f"{metric}_std"] = _mean(inner[f"{metric}_std"].to_numpy(dtype=float))
        out[f"{metric}_n_folds"] = int(inner[f"{metric}_n_folds"].sum())
        out[f"{metric}_sd_all_folds"] = _sd(per_fold[metric].to_numpy(dtype=float))
        out[f"{metric}_repeat_sd"] = _sd(inner[f"{metric}_mean"].to_numpy(dtype=float))
    return out


def over_repeats(values: Mapping[int, float], name: str) -> dict[str, float]:
    """A pooled metric's per-repeat values summarised: mean (``name``), SD, min and max over repeats."""
    array = np.array([values[r] for r in sorted(values)], dtype=float)
    valid = array[~np.isnan(array)]
    return {
        name: _mean(array),
        f"{name}_repeat_sd": _sd(array),
        f"{name}_repeat_min": float(valid.min()) if len(valid) else float("nan"),
        f"{name}_repeat_max": float(valid.max()) if len(valid) else float("nan"),
    }


def common_patients(frames: Iterable[pd.DataFrame], what: str = "") -> list[str]:
    """Sorted patient ids present in every frame (a patient missing from one of them is logged)."""
    sets = [set(f["patient_id"]) for f in frames]
    if not sets:
        return []
    common = set.intersection(*sets)
    union = set.union(*sets)
    if len(common) < len(union):
        log.warning(
            "%s%d of %d patients are not in every repeat (and method) compared: the bootstrap resamples "
            "the %d common ones",
            f"{what}: " if what else "",
            len(union) - len(common),
            len(union),
            len(common),
        )
    return sorted(common)


def counts_of(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, n) multiplicities of each patient in each resample of (B, m) index rows."""
    idx = np.asarray(idx, dtype=np.int64)
    b = idx.shape[0]
    flat = (idx + n * np.arange(b, dtype=np.int64)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)


def percentile_ci(draws: np.ndarray, level: float = 0.95) -> tuple[float, float, int]:
    """Percentile interval of the valid (non-NaN) resampled values and how many were valid."""
    valid = draws[~np.isnan(draws)]
    if not len(valid):
        return float("nan"), float("nan"), 0
    alpha = (1 - level) / 2
    return float(np.quantile(valid, alpha)), float(np.quantile(valid, 1 - alpha)), len(valid)


def bootstrap_p(draws: np.ndarray, null: float = 0.0) -> float:
    """Two-sided bootstrap p of ``effect == null``: twice the smaller tail share, +1 corrected, capped at 1.

    ``min(1, 2 min((#{d <= null} + 1) / (k + 1), (#{d >= null} + 1) / (k + 1)))`` over the k valid
    resampled effects (the rule of :func:`haf.eval.binary.paired_bootstrap`).
    """
    valid = draws[~np.isnan(draws)]
    k = len(valid)
    if not k:
        return float("nan")
    below = (np.sum(valid <= null) + 1) / (k + 1)
    above = (np.sum(valid >= null) + 1) / (k + 1)
    return float(min(1.0, 2 * min(below, above)))
