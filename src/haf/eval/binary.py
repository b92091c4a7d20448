"""Binary metrics of the cross-validated predictions: thresholds, per-fold metrics, bootstrap.

Threshold rules (config ``evaluation.threshold``), decided per fold without looking at the test part:

* ``fixed``: predict 1 when ``prob >= 0.5``.  Risk-only (Cox) methods have no probability; their
  fixed cut is the median risk of the fold's validation part (``risk >= median``).
* ``val``: the cut on ``risk`` that maximises balanced accuracy on the fold's validation patients
  with a label (candidates: midpoints between sorted distinct validation risks); ties go to the cut
  closest to the fixed rule's cut.  Where the validation part lacks one class, the fixed rule is used
  and the note says so.

Binary metrics use only patients with a label.  Majority-class accuracy is the share of a fold's
labelled test patients in that fold's more frequent test class: the best any constant predictor can
score on that fold, the reference every accuracy is read against.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import balanced_accuracy_score

from haf.eval.data import is_risk_only
from haf.eval.repeats import Repeats, bootstrap_p, by_repeat, common_patients, over_repeats, percentile_ci
from haf.eval.scores import auc_or_nan

log = logging.getLogger(__name__)

THRESHOLD_RULES: tuple[str, ...] = ("fixed", "val")


@dataclass(frozen=True)
class Threshold:
    """Predict 1 where ``frame[column] >= value``."""

    column: str  # "prob" or "risk"
    value: float
    rule: str
    note: str = ""

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return (frame[self.column].to_numpy(dtype=float) >= self.value).astype(int)


def _balanced_accuracy(label: np.ndarray, pred: np.ndarray) -> float:
    return float(balanced_accuracy_score(label.astype(int), pred.astype(int)))


def cut_balanced_accuracies(label: np.ndarray, risk: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Balanced accuracy of ``risk >= cut`` for every cut at once (both classes present in ``label``);
    what :func:`_balanced_accuracy` gives per cut, without one scikit-learn call per candidate."""
    positive = np.asarray(label) == 1
    called = np.asarray(risk)[None, :] >= np.asarray(cuts)[:, None]  # (cuts, patients)
    sensitivity = (called & positive).sum(axis=1) / positive.sum()
    specificity = (~called & ~positive).sum(axis=1) / (~positive).sum()
    return (specificity + sensitivity) / 2


def choose_threshold(val: pd.DataFrame, rule: str, risk_only: bool | None = None) -> Threshold:
    """The decision rule of one fold from its validation predictions (see the module docstring)."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule must be one of {THRESHOLD_RULES}, got {rule!r}")
    if risk_only is None:
        risk_only = is_risk_only(val)
    risk = val["risk"].to_numpy(dtype=float)
    if risk_only:
        if len(risk) == 0:
            raise ValueError("a risk-only method needs validation predictions for its median cut")
        fixed = Threshold("risk", float(np.median(risk)), "fixed", "median validation risk (Cox method)")
        fixed_cut = fixed.value
    else:
        fixed = Threshold("prob", 0.5, "fixed", "probability 0.5")
        fixed_cut = 0.0  # logit of 0.5
    if rule == "fixed":
        return fixed
    label = val["label"].to_numpy(dtype=float)
    keep = ~np.isnan(label)
    y, r = label[keep], risk[keep]
    if len(np.unique(y)) < 2:
        return Threshold(
            fixed.column,
            fixed.value,
            "fixed",
            f"{fixed.note}; validation part lacks a class, fixed rule used",
        )
    values = np.unique(r)
    candidates = (values[:-1] + values[1:]) / 2 if len(values) > 1 else values
    scores = cut_balanced_accuracies(y, r, candidates)
    best = np.flatnonzero(np.isclose(scores, scores.max(), rtol=0, atol=1e-12))
    chosen = candidates[best[np.argmin(np.abs(candidates[best] - fixed_cut))]]
    return Threshold("risk", float(chosen), "val", f"balanced accuracy {scores.max():.3f} on validation")


def fold_thresholds(rows: pd.DataFrame, rule: str) -> dict[int, Threshold]:
    """One threshold per fold of one method."""
    risk_only = is_risk_only(rows)
    out = {}
    for fold, fold_rows in rows.groupby("fold", sort=True):
        val = fold_rows[fold_rows["part"] == "val"]
        if val.empty and (rule == "val" or risk_only):
            raise ValueError(
                f"{rows['method'].iloc[0]} fold {fold}: no validation predictions, needed by the "
                f"{rule!r} threshold rule{' (risk-only method)' if risk_only else ''}"
            )
        out[int(fold)] = choose_threshold(val, rule, risk_only)
    return out


def binary_metrics(label: np.ndarray, score: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, AUC and majority-class accuracy on labelled patients."""
    label = np.asarray(label, dtype=float)
    keep = ~np.isnan(label)
    y = label[keep].astype(int)
    p = np.asarray(pred)[keep].astype(int)
    s = np.asarray(score, dtype=float)[keep]
    if len(y) == 0:
        nan = float("nan")
        return dict(accuracy=nan, balanced_accuracy=nan, auc=nan, majority_accuracy=nan)
    positive_share = y.mean()
    return dict(
        accuracy=float((p == y).mean()),
        balanced_accuracy=_balanced_accuracy(y, p) if len(np.unique(y)) == 2 else float("nan"),
        auc=auc_or_nan(y, s),
        majority_accuracy=float(max(positive_share, 1 - positive_share)),
    )


def fold_metrics(rows: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Per fold of one method: test n, labelled n, label positives, deaths, metrics and the threshold."""
    thresholds = fold_thresholds(rows, rule)
    records = []
    for fold, fold_rows in rows.groupby("fold", sort=True):
        test = fold_rows[fold_rows["part"] == "test"]
        thr = thresholds[int(fold)]
        label = test["label"].to_numpy(dtype=float)
        metrics = binary_metrics(label, test["risk"].to_numpy(dtype=float), thr.predict(test))
        records.append(
            dict(
                method=rows["method"].iloc[0],
                fold=int(fold),
                n_test=len(test),
                n_labelled=int((~np.isnan(label)).sum()),
                n_label_positive=int(np.nansum(label)),
                n_events=int(test["event"].sum()),
                **metrics,
                threshold_column=thr.column,
                threshold=thr.value,
                threshold_rule=thr.rule,
                threshold_note=thr.note,
            )
        )
    return pd.DataFrame.from_records(records)


def summarise_folds(per_fold: pd.DataFrame, metrics: tuple[str, ...]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof 1) over folds; folds where a metric is NaN are skipped."""
    out: dict[str, float] = {}
    for metric in metrics:
        values = per_fold[metric].to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        out[f"{metric}_mean"] = float(values.mean()) if len(values) else float("nan")
        out[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        out[f"{metric}_n_folds"] = len(values)
    return out


def pooled_oof(rows: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Out-of-fold test predictions of one method, labelled patients only, with each fold's decision."""
    thresholds = fold_thresholds(rows, rule)
    parts = []
    for fold, fold_rows in rows.groupby("fold", sort=True):
        test = fold_rows[(fold_rows["part"] == "test") & fold_rows["label"].notna()]
        parts.append(
            pd.DataFrame(
                {
                    "patient_id": test["patient_id"].to_numpy(),
                    "fold": int(fold),
                    "label": test["label"].to_numpy(dtype=int),
                    "risk": test["risk"].to_numpy(dtype=float),
                    "pred": thresholds[int(fold)].predict(test),
                }
            )
        )
    pooled = pd.concat(parts, ignore_index=True)
    if pooled["patient_id"].duplicated().any():
        pid = pooled.loc[pooled["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise ValueError(f"{rows['method'].iloc[0]}: patient {pid} is a test patient of two folds")
    return pooled.sort_values("patient_id", ignore_index=True)


def batched_auc(label: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of (B, n) labels/scores (Mann-Whitney with mid-ranks: equals sklearn's AUC).

    Vectorised because the bootstrap and the masking protocol need thousands of AUCs; NaN for rows
    with one class only.
    """
    label = np.atleast_2d(np.asarray(label, dtype=float))
    score = np.atleast_2d(np.asarray(score, dtype=float))
    ranks = rankdata(score, axis=1)
    n_pos = label.sum(axis=1)
    n_neg = label.shape[1] - n_pos
    rank_sum = (ranks * label).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) patient indices drawn with replacement; the same for every method of a comparison."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _resampled(pooled: pd.DataFrame, idx: np.ndarray) -> dict[str, np.ndarray]:
    y = pooled["label"].to_numpy(dtype=float)[idx]
    p = pooled["pred"].to_numpy(dtype=float)[idx]
    s = pooled["risk"].to_numpy(dtype=float)[idx]
    correct = p == y
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = (correct * (y == 1)).sum(axis=1) / n_pos
        spec = (correct * (y == 0)).sum(axis=1) / n_neg
    return {
        "auc": batched_auc(y, s),
        "accuracy": correct.mean(axis=1),
        "balanced_accuracy": (sens + spec) / 2,
    }


def pooled_by_repeat(
    rows: pd.DataFrame, rule: str, repeats: Repeats | None = None
) -> dict[int, pd.DataFrame]:
    """:func:`pooled_oof` of each CV repeat's folds (within a repeat every patient is tested once)."""
    return {r: pooled_oof(part, rule) for r, part in by_repeat(rows, repeats).items()}


PooledInput = pd.DataFrame | Mapping[int, pd.DataFrame]
"""One pooled out-of-fold frame (one repeat), or CV repeat -> pooled frame."""


def _as_repeats(pooled: PooledInput) -> dict[int, pd.DataFrame]:
    return {0: pooled} if isinstance(pooled, pd.DataFrame) else dict(pooled)


def _on(frame: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    return frame.set_index("patient_id").loc[ids].reset_index()


def _point(frame: pd.DataFrame) -> dict[str, float]:
    return binary_metrics(
        frame["label"].to_numpy(dtype=float), frame["risk"].to_numpy(dtype=float), frame["pred"].to_numpy(int)
    )


def repeat_draws(
    pooled: Mapping[int, pd.DataFrame], ids: list[str], idx: np.ndarray
) -> dict[str, np.ndarray]:
    """Each resample's metrics averaged over the CV repeats (NaN where one repeat's is undefined).

    ``idx`` indexes ``ids``: the same resampled patients score every repeat.
    """
    per_repeat = [_resampled(_on(frame, ids), idx) for frame in pooled.values()]
    return {m: np.mean([d[m] for d in per_repeat], axis=0) for m in per_repeat[0]}


def bootstrap_ci(pooled: PooledInput, n_boot: int, seed: int, level: float = 0.95) -> dict[str, float]:
    """Pooled out-of-fold metrics (mean over CV repeats) and percentile CIs by patient resampling.

    Each resample of patients computes the pooled metric in every repeat and averages them, so the CI
    reflects patient sampling, not the split-to-split spread (that is ``{m}_pooled_repeat_sd``, given
    with its min and max and ``n_cv_repeats`` when there is more than one repeat). One repeat (a frame):
    the plain pooled metric and its bootstrap.
    """
    pooled = _as_repeats(pooled)
    points = {r: _point(frame) for r, frame in pooled.items()}
    ids = common_patients(pooled.values(), "bootstrap")
    idx = bootstrap_indices(len(ids), n_boot, seed)
    draws = repeat_draws(pooled, ids, idx)
    out: dict[str, float] = {"n_pooled": len(ids), "n_boot": n_boot}
    if len(pooled) > 1:
        out["n_cv_repeats"] = len(pooled)
    for metric, values in draws.items():
        spread = over_repeats({r: p[metric] for r, p in points.items()}, f"{metric}_pooled")
        low, high, valid = percentile_ci(values, level)
        out.update(spread if len(pooled) > 1 else {f"{metric}_pooled": spread[f"{metric}_pooled"]})
        out[f"{metric}_ci_low"] = low
        out[f"{metric}_ci_high"] = high
        out[f"{metric}_n_boot_valid"] = valid
    return out


def paired_bootstrap(
    reference: PooledInput,
    other: PooledInput,
    n_boot: int,
    seed: int,
    metric: str = "auc",
    level: float = 0.95,
) -> dict[str, float]:
    """Paired bootstrap of ``metric(reference) - metric(other)`` on the patients both have.

    The same resampled patient sets score both methods in every CV repeat; each method's metric is
    averaged over repeats before the difference.  Two-sided p-value: twice the smaller share of
    resampled deltas on either side of zero, with a +1 correction ((k + 1) / (B + 1)), capped at 1.
    """
    reference, other = _as_repeats(reference), _as_repeats(other)
    if sorted(reference) != sorted(other):
        raise ValueError(
            f"the two methods cover different CV repeats ({sorted(reference)} vs {sorted(other)})"
        )
    ids = common_patients([*reference.values(), *other.values()], "paired bootstrap")
    a = {r: _on(frame, ids) for r, frame in reference.items()}
    b = {r: _on(frame, ids) for r, frame in other.items()}
    for r in a:
        if not np.array_equal(a[r]["label"].to_numpy(), b[r]["label"].to_numpy()):
            raise ValueError("the two methods disagree on a patient's label")
    idx = bootstrap_indices(len(ids), n_boot, seed)
    delta = repeat_draws(a, ids, idx)[metric] - repeat_draws(b, ids, idx)[metric]
    point_a = float(np.mean([_point(frame)[metric] for frame in a.values()]))
    point_b = float(np.mean([_point(frame)[metric] for frame in b.values()]))
    low, high, k = percentile_ci(delta, level)
    ref_ids = set().union(*(set(f["patient_id"]) for f in reference.values()))
    other_ids = set().union(*(set(f["patient_id"]) for f in other.values()))
    return {
        "n_common": len(ids),
        "n_only_reference": len(ref_ids - set(ids)),
        "n_only_other": len(other_ids - set(ids)),
        f"{metric}_reference": point_a,
        f"{metric}_other": point_b,
        "delta": point_a - point_b,
        "delta_ci_low": low,
        "delta_ci_high": high,
        "p_value": bootstrap_p(delta),
        "n_boot_valid": k,
    }
