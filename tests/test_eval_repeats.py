"""Evaluation over repeated cross-validation: aggregation by hand, the repeat-averaged bootstrap recomputed
with scikit-learn, and R = 1 against a trivially repeated R = 2 (identical splits and predictions), which
must give the same tables (docs/evaluation.md, "Repeated cross-validation")."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fakes.config import declare, load_config
from fakes.evaluation import write_fake_results
from sklearn.metrics import roc_auc_score

from haf.artifacts.aligned import read_aligned
from haf.artifacts.masked import load_masked
from haf.errors import HafInputError
from haf.eval import binary, claims, robustness, survival_tables, tables
from haf.eval.data import load_predictions, read_cohort_survival
from haf.eval.repeats import CV_REPEAT, read_repeats, repeat_of, summarise_repeats, within_repeats

METHODS = declare(
    {
        "haf": dict(family="fusion", align="ga", drop=True),
        "fusion_mlp_all": dict(family="fusion", align="none", drop=False),
        "haf_nodetach": dict(family="fusion", align="ga", drop=True, detach=False),
        "haf_cox": dict(family="fusion", align="ga", drop=True, task_loss="cox"),
    }
)
EVAL = load_config({"evaluation": {"dropout_p": [0.0, 0.4, 0.8], "repeats": 3}})["evaluation"]
K = 3


def test_summarise_repeats_by_hand():
    per_fold = pd.DataFrame(
        {
            CV_REPEAT: [0, 0, 0, 1, 1, 1],
            "auc": [0.6, 0.8, 0.7, 0.5, np.nan, 0.9],
        }
    )
    inner = within_repeats(per_fold, ["auc"]).set_index(CV_REPEAT)
    assert inner.loc[0, "auc_mean"] == pytest.approx(0.7) and inner.loc[1, "auc_mean"] == pytest.approx(0.7)
    assert inner.loc[0, "auc_std"] == pytest.approx(0.1)  # sd of 0.6, 0.8, 0.7 (ddof 1)
    assert inner.loc[1, "auc_std"] == pytest.approx(math.sqrt(0.08))  # 0.5, 0.9: the NaN fold is skipped
    assert inner.loc[1, "auc_n_folds"] == 2
    s = summarise_repeats(per_fold, ["auc"])
    assert s["auc_mean"] == pytest.approx(0.7)
    assert s["auc_std"] == pytest.approx((0.1 + math.sqrt(0.08)) / 2)
    assert s["auc_sd_all_folds"] == pytest.approx(np.std([0.6, 0.8, 0.7, 0.5, 0.9], ddof=1))
    assert s["auc_repeat_sd"] == pytest.approx(0.0, abs=1e-12) and s["auc_n_folds"] == 5
    one = summarise_repeats(per_fold[per_fold[CV_REPEAT] == 0], ["auc"])
    assert one["auc_std"] == one["auc_sd_all_folds"] and math.isnan(one["auc_repeat_sd"])


def test_fold_not_in_folds_tsv_is_an_error():
    assert list(repeat_of([0, 3, 5], {0: 0, 3: 1, 5: 1})) == [0, 1, 1]
    assert list(repeat_of([7, 8], None)) == [0, 0]
    with pytest.raises(HafInputError, match="fold 9"):
        repeat_of([0, 9], {0: 0})


def _pooled(label, risk, ids):
    return pd.DataFrame(
        dict(
            patient_id=ids,
            label=label,
            risk=np.asarray(risk, float),
            pred=(np.asarray(risk) >= 0).astype(int),
        )
    ).sort_values("patient_id", ignore_index=True)


def test_bootstrap_averages_each_resample_over_repeats_recomputed_with_sklearn():
    rng = np.random.default_rng(3)
    ids = [f"{i:03d}" for i in range(30)]
    label = rng.integers(0, 2, 30)
    r0 = _pooled(label, label + rng.normal(size=30), ids)
    r1 = _pooled(label, 0.5 * label + rng.normal(size=30), ids)
    other = {0: _pooled(label, rng.normal(size=30), ids), 1: _pooled(label, rng.normal(size=30), ids)}
    ci = binary.bootstrap_ci({0: r0, 1: r1}, 200, seed=5, level=0.9)
    idx = np.random.default_rng(5).integers(0, 30, size=(200, 30))  # the documented resampling

    def auc(frame, rows):
        y, s = frame["label"].to_numpy()[rows], frame["risk"].to_numpy()[rows]
        return roc_auc_score(y, s) if len(set(y)) == 2 else np.nan

    draws = np.array([(auc(r0, i) + auc(r1, i)) / 2 for i in idx])
    valid = draws[~np.isnan(draws)]
    assert ci["auc_ci_low"] == pytest.approx(np.quantile(valid, 0.05), abs=1e-12)
    assert ci["auc_ci_high"] == pytest.approx(np.quantile(valid, 0.95), abs=1e-12)
    points = [roc_auc_score(label, f.set_index("patient_id").loc[ids, "risk"]) for f in (r0, r1)]
    assert ci["auc_pooled"] == pytest.approx(np.mean(points), abs=1e-12)
    assert ci["auc_pooled_repeat_sd"] == pytest.approx(np.std(points, ddof=1), abs=1e-12)
    assert ci["n_cv_repeats"] == 2 and ci["n_pooled"] == 30
    # paired: the same resamples, each method averaged over its repeats before the difference
    paired = binary.paired_bootstrap({0: r0, 1: r1}, other, 200, seed=5)
    delta = draws - np.array([(auc(other[0], i) + auc(other[1], i)) / 2 for i in idx])
    delta = delta[~np.isnan(delta)]
    assert paired["delta_ci_low"] == pytest.approx(np.quantile(delta, 0.025), abs=1e-12)
    p = min(
        1.0, 2 * min((np.sum(delta <= 0) + 1) / (len(delta) + 1), (np.sum(delta >= 0) + 1) / (len(delta) + 1))
    )
    assert paired["p_value"] == pytest.approx(p, abs=1e-12)
    with pytest.raises(ValueError, match="different CV repeats"):
        binary.paired_bootstrap({0: r0, 1: r1}, {0: r0}, 10, seed=0)


def test_masked_aggregate_means_folds_within_a_repeat_then_repeats():
    metrics = pd.DataFrame(
        dict(
            method="m",
            scenario="dropout",
            p=0.5,
            fold=[0, 0, 1, 1, 2, 3],  # folds 0, 1: repeat 0; folds 2, 3: repeat 1
            repeat=[0, 1, 0, 1, 0, 0],
            auc=[0.6, 0.8, 0.9, 0.9, 0.5, 0.7],
        )
    )
    agg = robustness.aggregate(metrics, ("auc",), {0: 0, 1: 0, 2: 1, 3: 1}).iloc[0]
    # fold means 0.7, 0.9 | 0.5, 0.7 -> repeat means 0.8 | 0.6 -> 0.7; fold SDs within repeats both sqrt(.02)
    assert agg["auc_mean"] == pytest.approx(0.7) and agg["auc_std"] == pytest.approx(math.sqrt(0.02))
    assert agg["auc_sd_all_folds"] == pytest.approx(np.std([0.7, 0.9, 0.5, 0.7], ddof=1))
    assert agg["n_cv_repeats"] == 2 and agg["n_repeats"] == 2  # two CV repeats, two random masks
    plain = robustness.aggregate(metrics, ("auc",)).iloc[0]  # one repeat: the mean over the four folds
    assert plain["auc_mean"] == pytest.approx(np.mean([0.7, 0.9, 0.5, 0.7]))


# ---------------------------------------------------------------------------------------------
# R = 1 and a trivially repeated R = 2 give the same tables


def _tree(tmp_path_factory, repeats):
    root = tmp_path_factory.mktemp(f"r{repeats}")
    write_fake_results(root, METHODS, n=48, k=K, evaluation=EVAL, repeats=repeats, identical_repeats=True)
    folds = range(K * repeats)
    preds = load_predictions(
        [root / "methods" / m / f"fold_{f}" / "predictions.tsv" for m in METHODS for f in folds]
    )
    masked = load_masked(
        [
            root / "methods" / m / f"fold_{f}" / "masked.tsv.gz"
            for m in ("haf", "fusion_mlp_all")
            for f in folds
        ]
    )
    aligned = {f: read_aligned(root / "stage2" / "ga" / f"fold_{f}" / "aligned.npz") for f in folds}
    rep = read_repeats(root / "cohort" / "folds.tsv")
    grid = survival_tables.cohort_grid(
        read_cohort_survival(root / "cohort" / "folds.tsv", root / "cohort" / "targets.tsv"), 8
    )
    return dict(preds=preds, masked=masked, aligned=aligned, repeats=rep, grid=grid)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    return _tree(tmp_path_factory, 1), _tree(tmp_path_factory, 2)


# columns that by definition depend on R: the repeat count, the spread over repeats (undefined for R = 1),
# the SD over all R x K folds (checked separately) and per-fold/per-repeat keys
SPREAD = ("_repeat_sd", "_repeat_min", "_repeat_max", "_sd_all_folds", "n_cv_repeats", "n_folds")


def _same(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    keep = [c for c in a.columns if not any(s in c for s in SPREAD)]
    assert set(keep) <= set(b.columns), what
    pd.testing.assert_frame_equal(a[keep].reset_index(drop=True), b[keep].reset_index(drop=True), rtol=1e-12)


def _duplicated_sd_factor(k: int) -> float:
    """SD (ddof 1) of K values each taken twice, relative to the K values' SD: sqrt(2 (K - 1) / (2K - 1))."""
    return math.sqrt(2 * (k - 1) / (2 * k - 1))


def test_table1_and_table2_are_the_same_for_r1_and_an_identical_r2(trees):
    one, two = trees
    kw = dict(rule="fixed", n_boot=60, seed=2)
    t1 = tables.build_table1(one["preds"], METHODS, repeats=one["repeats"], **kw)
    t2 = tables.build_table1(two["preds"], METHODS, repeats=two["repeats"], **kw)
    _same(t1.table, t2.table, "table1")
    _same(t1.tests, t2.tests, "table1 tests")
    assert (t2.table["n_cv_repeats"] == 2).all() and "n_cv_repeats" not in t1.table
    assert np.allclose(
        t2.table["auc_sd_all_folds"], t1.table["auc_std"] * _duplicated_sd_factor(K), rtol=1e-12
    )
    assert np.allclose(t2.table["auc_pooled_repeat_sd"], 0.0)
    assert (t1.table["n_labelled"] == t2.table["n_labelled"]).all()  # counts per repeat, not summed
    md1 = tables.markdown_table(t1.table, tables.TABLE1_COLUMNS, title="T", notes=[])
    md2 = tables.markdown_table(t2.table, tables.TABLE1_COLUMNS, title="T", notes=[])
    assert md1 == md2
    assert "2 repeats of 3-fold" in tables.table1_notes("fixed", K, 60, False, repeats=2)[0]
    _same(
        tables.build_table2(one["preds"], METHODS, rule="fixed", repeats=one["repeats"]),
        tables.build_table2(two["preds"], METHODS, rule="fixed", repeats=two["repeats"]),
        "table2",
    )
    # read without folds.tsv's repeats, every patient would be tested twice in one pool: an error
    with pytest.raises(ValueError, match="test patient of two folds"):
        tables.build_table1(two["preds"], METHODS, repeats=None, **kw)


def test_masked_survival_and_claims_are_the_same_for_r1_and_an_identical_r2(trees):
    one, two = trees
    for scenario, metrics in (("dropout", ("auc", "accuracy")), ("mixed", ("cindex", "auc"))):
        agg = [
            robustness.aggregate(
                robustness.masked_metrics(
                    t["masked"], t["preds"], rule="fixed", scenarios=(scenario,), with_cindex=True
                ),
                metrics,
                t["repeats"],
            )
            for t in (one, two)
        ]
        _same(agg[0], agg[1], scenario)
    for method in ("haf", "haf_cox"):
        rows = [binary_rows(t, method) for t in (one, two)]
        s1, f1, c1 = survival_tables.survival_metrics(rows[0], one["grid"], one["repeats"])
        s2, f2, c2 = survival_tables.survival_metrics(rows[1], two["grid"], two["repeats"])
        _same(pd.DataFrame([s1]), pd.DataFrame([s2]), f"survival {method}")
        pooled = [c[c["scope"] == "pooled"]["auc"].to_numpy() for c in (c1, c2)]
        assert np.allclose(pooled[0], pooled[1], rtol=1e-12, equal_nan=True)
        ci = [
            survival_tables.survival_ci(
                survival_tables.pooled_sets(r, t["grid"], t["repeats"]), t["grid"], 40, 1
            )
            for r, t in zip(rows, (one, two), strict=True)
        ]
        assert ci[0] == pytest.approx(ci[1], rel=1e-12, nan_ok=True)
    kw = dict(rule="fixed", n_boot=60, seed=2, flat_margin=0.1, test_train_ratio=0.5)
    c = [
        claims.build_claims(
            t["preds"], t["masked"], t["aligned"], METHODS, grid=t["grid"], repeats=t["repeats"], **kw
        )
        for t in (one, two)
    ]
    # the fold-level test sees 2K folds in the copied repeat (same mean, narrower CI): only its mean compares
    fold_only = ["fold_ci_low", "fold_ci_high", "fold_p", "n_folds", "fold_verdict", "verdict", "note"]
    _same(c[0].table.drop(columns=fold_only), c[1].table.drop(columns=fold_only), "claims")
    assert set(c[1].table["n_cv_repeats"]) == {2}
    assert (c[1].table["n_folds"] == 2 * c[0].table["n_folds"]).all()


def binary_rows(tree, method):
    return tree["preds"][tree["preds"]["method"] == method]
