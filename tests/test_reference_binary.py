"""Binary evaluation (``haf.eval.binary``) on hand-made folds: thresholds, per-fold metrics, pooling, CIs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from haf.eval import binary
from haf.eval.binary import Threshold


def _val(risk, label, prob=True) -> pd.DataFrame:
    risk = np.asarray(risk, dtype=float)
    return pd.DataFrame(
        {
            "risk": risk,
            "prob": 1 / (1 + np.exp(-risk)) if prob else np.nan,
            "label": np.asarray(label, dtype=float),
        }
    )


def _rows(method="m", prob=True, folds=(0, 1), with_val=True) -> pd.DataFrame:
    """Two folds of predictions; fold f's test patients are t{f}{i}."""
    frames = []
    for f in folds:
        risk_test = np.array([2.0, -1.0, 0.5, -0.2, 1.0])
        label_test = np.array([1.0, 0.0, 0.0, 1.0, np.nan])
        parts = [("test", risk_test + f, label_test, [f"t{f}{i}" for i in range(5)])]
        if with_val:
            parts.append(("val", np.array([1.5, -0.5, 0.2, -2.0]), np.array([1.0, 0.0, 1.0, 0.0]), None))
        for part, risk, label, ids in parts:
            frames.append(
                pd.DataFrame(
                    {
                        "method": method,
                        "fold": f,
                        "part": part,
                        "patient_id": ids or [f"v{f}{i}" for i in range(len(risk))],
                        "risk": risk,
                        "prob": 1 / (1 + np.exp(-risk)) if prob else np.nan,
                        "label": label,
                        "event": (label == 1).astype(int),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# thresholds
# ---------------------------------------------------------------------------------------------
def test_fixed_thresholds_in_full():
    val = _val([0.3, -1.0, 2.0, 0.1], [1, 0, 1, 0])
    assert binary.choose_threshold(val, "fixed") == Threshold("prob", 0.5, "fixed", "probability 0.5")
    cox = _val([0.3, -1.0, 2.0, 0.1], [1, 0, 1, 0], prob=False)
    assert binary.choose_threshold(cox, "fixed") == Threshold(
        "risk", 0.2, "fixed", "median validation risk (Cox method)"
    )
    one = _val([0.7], [np.nan], prob=False)  # one validation patient is enough for a median
    assert binary.choose_threshold(one, "fixed").value == 0.7
    with pytest.raises(
        ValueError, match="^a risk-only method needs validation predictions for its median cut$"
    ):
        binary.choose_threshold(_val([], [], prob=False), "fixed")
    with pytest.raises(ValueError, match=r"threshold rule must be one of \('fixed', 'val'\), got 'youden'"):
        binary.choose_threshold(val, "youden")
    # predictions are 0/1 integers
    pred = Threshold("risk", 0.2, "val").predict(val)
    assert pred.tolist() == [1, 0, 1, 0] and pred.dtype.kind == "i"


def test_val_threshold_when_validation_lacks_a_class():
    val = _val([0.3, -1.0, 2.0], [1, 1, np.nan])
    assert binary.choose_threshold(val, "val") == Threshold(
        "prob", 0.5, "fixed", "probability 0.5; validation part lacks a class, fixed rule used"
    )
    cox = _val([0.3, -1.0, 2.0], [0, 0, 0], prob=False)
    assert binary.choose_threshold(cox, "val") == Threshold(
        "risk",
        0.3,
        "fixed",
        "median validation risk (Cox method); validation part lacks a class, fixed rule used",
    )


def test_val_threshold_candidates_and_ties_by_hand():
    # two distinct risks: the one candidate is their midpoint
    thr = binary.choose_threshold(_val([1.0, 3.0, 1.0], [0, 1, 0]), "val")
    assert thr == Threshold("risk", 2.0, "val", "balanced accuracy 1.000 on validation")
    # one distinct risk: the cut is that value (everyone predicted 1)
    assert binary.choose_threshold(_val([0.4, 0.4], [0, 1]), "val").value == 0.4
    # tied best cuts -5.5 and 5.5 (balanced accuracy 0.375 both); a Cox method's fixed cut is the
    # median risk 3.0, so the tie goes to 5.5
    cox = _val([-8.0, -3.0, 1.0, 5.0, 6.0, 10.0], [1, 1, 1, 0, 1, 0], prob=False)
    thr = binary.choose_threshold(cox, "val")
    assert thr.value == 5.5 and thr.note == "balanced accuracy 0.375 on validation"


def test_val_threshold_ties_are_exact_not_relative():
    # 300 positives, 301 negatives; one of each shares the risk 0.  Cutting below 0 gives balanced
    # accuracy (1 + 300/301) / 2, above 0 gives (299/300 + 1) / 2: 5.5e-6 apart, a relative gap under 1e-5.
    # The best is the cut below 0 (-5, midpoint to the next negative at -10), not the one closer to 0.
    pos = np.r_[0.0, np.arange(1.0, 300.0)]
    neg = np.r_[0.0, -10.0 - np.arange(300.0)]
    val = _val(np.r_[pos, neg], np.r_[np.ones(300), np.zeros(301)])
    thr = binary.choose_threshold(val, "val")
    assert thr.value == -5.0


def test_fold_thresholds_need_validation_rows_only_where_used():
    rows = _rows(prob=True, with_val=False)
    fixed = binary.fold_thresholds(rows, "fixed")  # probability 0.5: no validation needed
    assert set(fixed) == {0, 1} and fixed[0] == Threshold("prob", 0.5, "fixed", "probability 0.5")
    with pytest.raises(
        ValueError, match="m fold 0: no validation predictions, needed by the 'val' threshold rule$"
    ):
        binary.fold_thresholds(rows, "val")
    cox = _rows(prob=False, with_val=False)
    with pytest.raises(
        ValueError,
        match=r"m fold 0: no validation predictions, needed by the 'fixed' threshold rule \(risk-only",
    ):
        binary.fold_thresholds(cox, "fixed")
    # a Cox method with validation rows: the median cut of each fold's validation risks
    assert binary.fold_thresholds(_rows(prob=False), "fixed")[1].value == pytest.approx(-0.15)


# ---------------------------------------------------------------------------------------------
# per-fold metrics and their summary
# ---------------------------------------------------------------------------------------------
def test_binary_metrics_edge_cases():
    one = binary.binary_metrics(np.array([1.0]), np.array([0.3]), np.array([1]))
    assert one["accuracy"] == 1.0 and one["majority_accuracy"] == 1.0
    assert math.isnan(one["balanced_accuracy"]) and math.isnan(one["auc"])  # one class: undefined
    none = binary.binary_metrics(np.array([np.nan, np.nan]), np.array([0.1, 0.2]), np.array([0, 1]))
    assert set(none) == {"accuracy", "balanced_accuracy", "auc", "majority_accuracy"}
    assert all(math.isnan(v) for v in none.values())


def test_fold_metrics_rows_in_fold_order_with_their_thresholds():
    rows = _rows()
    shuffled = pd.concat([rows[rows["fold"] == 1], rows[rows["fold"] == 0]], ignore_index=True)
    per_fold = binary.fold_metrics(shuffled, "val")
    assert per_fold["fold"].tolist() == [0, 1] and (per_fold["method"] == "m").all()
    thresholds = binary.fold_thresholds(rows, "val")
    for _, row in per_fold.iterrows():
        thr = thresholds[row["fold"]]
        assert (row["threshold_column"], row["threshold"], row["threshold_rule"], row["threshold_note"]) == (
            thr.column,
            thr.value,
            thr.rule,
            thr.note,
        )
    # fold 0's validation part: risks 1.5, -0.5, 0.2, -2 with labels 1, 0, 1, 0 -> cut at -0.15 (closest to 0)
    assert thresholds[0] == Threshold("risk", -0.15, "val", "balanced accuracy 1.000 on validation")
    # fold 0's test part, cut -0.15: risks 2, -1, .5, -.2 -> 1, 0, 1, 0 against labels 1, 0, 0, 1
    assert per_fold.loc[0, "accuracy"] == 0.5 and per_fold.loc[0, "n_labelled"] == 4


def test_summarise_folds_skips_nan_folds_and_needs_two_for_an_sd():
    per_fold = pd.DataFrame({"auc": [0.6, np.nan, 0.8], "acc": [np.nan, 0.7, np.nan], "x": [np.nan] * 3})
    out = binary.summarise_folds(per_fold, ("auc", "acc", "x"))
    assert out["auc_mean"] == pytest.approx(0.7) and out["auc_std"] == pytest.approx(math.sqrt(0.02))
    assert out["auc_n_folds"] == 2 and out["acc_n_folds"] == 1 and out["x_n_folds"] == 0
    assert out["acc_mean"] == pytest.approx(0.7) and math.isnan(out["acc_std"])
    assert math.isnan(out["x_mean"]) and math.isnan(out["x_std"])


# ---------------------------------------------------------------------------------------------
# pooling, bootstrap and the paired test
# ---------------------------------------------------------------------------------------------
def test_pooled_oof_takes_labelled_test_rows_with_each_folds_decision():
    rows = _rows()
    pooled = binary.pooled_oof(rows, "val")
    # labelled test rows only (t04 and t14 have no label), sorted by patient id
    assert pooled["patient_id"].tolist() == ["t00", "t01", "t02", "t03", "t10", "t11", "t12", "t13"]
    assert pooled["fold"].tolist() == [0] * 4 + [1] * 4
    assert pooled["label"].tolist() == [1, 0, 0, 1] * 2 and pooled["label"].dtype.kind == "i"
    np.testing.assert_allclose(pooled["risk"], [2.0, -1.0, 0.5, -0.2, 3.0, 0.0, 1.5, 0.8])
    assert pooled["pred"].tolist() == [1, 0, 1, 0, 1, 1, 1, 1]  # both folds cut at -0.15
    assert pooled.index.tolist() == list(range(8))
    # fold 1's ids sorting first: the pooled table is still indexed 0..n-1 in patient order
    renamed = rows.assign(patient_id=rows["patient_id"].str.replace("t1", "a1"))
    reordered = binary.pooled_oof(renamed, "val")
    assert reordered["patient_id"].tolist()[:4] == ["a10", "a11", "a12", "a13"]
    assert reordered.index.tolist() == list(range(8)) and reordered["fold"].tolist() == [1] * 4 + [0] * 4
    twice = pd.concat([rows, rows[rows["fold"] == 0].assign(fold=2)], ignore_index=True)
    with pytest.raises(ValueError, match="m: patient t00 is a test patient of two folds"):
        binary.pooled_oof(twice, "fixed")


def _pooled(label, risk):
    label = np.asarray(label, dtype=int)
    return pd.DataFrame(
        {
            "patient_id": [f"p{i:02d}" for i in range(len(label))],
            "label": label,
            "risk": np.asarray(risk, float),
            "pred": (np.asarray(risk) >= 0).astype(int),
        }
    )


def test_bootstrap_and_paired_test_without_a_valid_resample():
    pooled = _pooled([1, 1, 1], [0.2, -0.1, 0.5])  # one class: no resample has an AUC
    ci = binary.bootstrap_ci(pooled, 20, seed=0)
    assert ci["auc_n_boot_valid"] == 0 and math.isnan(ci["auc_ci_low"]) and math.isnan(ci["auc_ci_high"])
    assert ci["accuracy_n_boot_valid"] == 20 and ci["accuracy_ci_low"] <= ci["accuracy_ci_high"]
    paired = binary.paired_bootstrap(pooled, pooled.assign(risk=-pooled["risk"]), 20, seed=0)
    assert paired["n_boot_valid"] == 0
    assert (
        math.isnan(paired["p_value"])
        and math.isnan(paired["delta_ci_low"])
        and math.isnan(paired["delta_ci_high"])
    )


def test_paired_test_is_symmetric_in_its_p_value():
    rng = np.random.default_rng(12)
    label = rng.integers(0, 2, 30)
    a = _pooled(label, label * 0.6 + rng.normal(size=30))
    b = _pooled(label, label * 0.3 + rng.normal(size=30))
    forward = binary.paired_bootstrap(a, b, 300, seed=4)
    backward = binary.paired_bootstrap(b, a, 300, seed=4)  # its p-value comes from the other tail
    assert backward["p_value"] == pytest.approx(forward["p_value"], abs=1e-12)
    assert backward["delta"] == pytest.approx(-forward["delta"], abs=1e-12)
    assert backward["delta_ci_low"] == pytest.approx(-forward["delta_ci_high"], abs=1e-12)
    # the other method better on every resample: p = 2 / (B + 1) from the upper tail
    good = _pooled([0, 1] * 10, np.array([0, 1] * 10) + 0.01 * np.arange(20))
    bad = _pooled([0, 1] * 10, -np.array([0, 1] * 10) + 0.01 * np.arange(20))
    assert binary.paired_bootstrap(bad, good, 99, seed=0)["p_value"] == pytest.approx(2 / 100)
    with pytest.raises(ValueError, match="^the two methods disagree on a patient's label$"):
        binary.paired_bootstrap(good, bad.assign(label=1 - bad["label"]), 10, seed=0)
