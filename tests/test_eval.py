"""Evaluation library: aggregation against hand-computed values, thresholds, bootstrap, masking
protocol, Table 5 slopes, survival metrics (risk sign, grid clamping), embeddings and figure files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fakes.config import declare, load_config
from fakes.evaluation import write_fake_results
from sklearn.metrics import roc_auc_score

from haf.artifacts.aligned import read_aligned
from haf.artifacts.masked import load_masked
from haf.artifacts.predictions import make_predictions, write_predictions
from haf.errors import HafInputError
from haf.eval import binary, robustness, survival, tables
from haf.eval.data import load_predictions, read_cohort_survival


def _logit(p):
    p = np.asarray(p, dtype=float)
    return np.log(p / (1 - p))


def _fold(fold, ids, parts, prob, label, event, cox=False, method="m"):
    prob = np.asarray(prob, dtype=float)
    return make_predictions(
        method=method,
        seed=0,
        fold=fold,
        part=np.array(parts),
        patient_id=np.array(ids),
        risk=_logit(prob),
        prob=None if cox else prob,
        label=np.array(label, dtype=float),
        time=np.arange(len(ids), dtype=float) * 100 + 50,
        event=np.array(event),
    )


def hand_made_predictions(method="m", cox=False) -> pd.DataFrame:
    """Two folds whose metrics are computed by hand in the test below."""
    f0 = _fold(
        0,
        ["010", "011", "001", "002", "003", "004", "005"],
        ["val", "val", "test", "test", "test", "test", "test"],
        [0.3, 0.7, 0.9, 0.6, 0.4, 0.2, 0.7],
        [0, 1, 1, 0, 1, 0, np.nan],
        [0, 1, 1, 0, 1, 0, 0],
        cox,
        method,
    )
    f1 = _fold(
        1,
        ["012", "013", "006", "007", "008", "009"],
        ["val", "val", "test", "test", "test", "test"],
        [0.2, 0.8, 0.8, 0.3, 0.1, 0.55],
        [0, 1, 1, 0, 0, 0],
        [0, 1, 1, 0, 0, 1],
        cox,
        method,
    )
    return pd.concat([f0, f1], ignore_index=True)


# ---------------------------------------------------------------------------------------------
# aggregation against hand-computed values
# ---------------------------------------------------------------------------------------------
def test_fold_metrics_match_hand_computed_values(tmp_path):
    for fold, rows in hand_made_predictions().groupby("fold"):
        write_predictions(tmp_path / f"p{fold}.tsv", rows)
    preds = load_predictions([tmp_path / "p0.tsv", tmp_path / "p1.tsv"])
    per_fold = binary.fold_metrics(preds, "fixed").set_index("fold")
    # fold 0: labelled test 001-004, predictions (prob >= .5) 1,1,0,0 vs labels 1,0,1,0
    assert per_fold.loc[0, "n_test"] == 5 and per_fold.loc[0, "n_labelled"] == 4
    assert per_fold.loc[0, "n_events"] == 2 and per_fold.loc[0, "n_label_positive"] == 2
    assert per_fold.loc[0, "accuracy"] == pytest.approx(0.5)
    assert per_fold.loc[0, "balanced_accuracy"] == pytest.approx(0.5)
    assert per_fold.loc[0, "auc"] == pytest.approx(0.75)  # 3 of 4 positive-negative pairs ordered
    assert per_fold.loc[0, "majority_accuracy"] == pytest.approx(0.5)
    # fold 1: predictions 1,0,0,1 vs labels 1,0,0,0
    assert per_fold.loc[1, "n_test"] == 4 and per_fold.loc[1, "n_events"] == 2
    assert per_fold.loc[1, "accuracy"] == pytest.approx(0.75)
    assert per_fold.loc[1, "balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert per_fold.loc[1, "auc"] == pytest.approx(1.0)
    assert per_fold.loc[1, "majority_accuracy"] == pytest.approx(0.75)
    summary = binary.summarise_folds(per_fold, ("accuracy", "auc", "majority_accuracy"))
    assert summary["accuracy_mean"] == pytest.approx(0.625)
    assert summary["accuracy_std"] == pytest.approx(0.25 / np.sqrt(2))  # sample SD, ddof 1
    assert summary["auc_mean"] == pytest.approx(0.875)
    assert summary["majority_accuracy_mean"] == pytest.approx(0.625)


def test_table1_groups_counts_and_paired_tests():
    methods = declare(
        {
            "wsi_clam": dict(family="clam", label="WSI-CLAM", pathology_model="wsi"),
            "haf": dict(family="fusion", label="HAF", detach=True),
            "haf_nodetach": dict(family="fusion", label="HAF nd", detach=False),
            "mfmf": dict(family="mfmf", label="MFMF"),
            "parachute": dict(family="parachute", label="PARACHUTE", task_loss="cox"),
        }
    )
    preds = pd.concat([hand_made_predictions(m, cox=(m == "parachute")) for m in methods], ignore_index=True)
    result = tables.build_table1(preds, methods, rule="fixed", n_boot=50, seed=1)
    assert list(result.table["method"]) == ["wsi_clam", "haf", "mfmf", "parachute"]
    assert result.excluded == ["haf_nodetach"]
    assert list(result.table["group"]) == [
        tables.GROUPS[0],
        tables.GROUPS[1],
        tables.GROUPS[2],
        tables.GROUPS[3],
    ]
    row = result.table.set_index("method").loc["haf"]
    assert row["n_labelled"] == 8 and row["n_test"] == 9 and row["n_events"] == 4
    assert row["accuracy"] == f"0.625 ± {0.25 / np.sqrt(2):.3f}"
    # identical predictions: every paired test says "no difference"
    assert set(result.tests["method"]) == {"wsi_clam", "mfmf", "parachute"}
    same = result.tests.set_index("method").loc["mfmf"]
    assert same["delta"] == 0 and same["p_value"] == 1
    per_fold = result.per_fold
    assert set(per_fold.loc[per_fold["method"] == "parachute", "threshold_column"]) == {"risk"}
    md = tables.markdown_table(result.table, tables.TABLE1_COLUMNS, title="T", notes=["n"], group="group")
    assert "*Pathology-only baselines*" in md and "| HAF |" in md
    tex = tables.latex_table(
        result.table, tables.TABLE1_COLUMNS, caption="T_1 & 2", label="t", notes=[], group="group"
    )
    assert r"\pm" in tex and r"T\_1 \& 2" in tex and r"\multicolumn{7}" in tex


def test_table2_pairs_detach_and_nodetach():
    methods = {
        "haf": dict(family="fusion", detach=True),
        "haf_nodetach": dict(family="fusion", detach=False),
        "ga": dict(family="fusion", detach=True),  # no partner: skipped
    }
    preds = pd.concat([hand_made_predictions(m) for m in methods], ignore_index=True)
    table = tables.build_table2(preds, methods, rule="fixed")
    assert list(table["setting"]) == ["HAF"]
    assert table.loc[0, "auc_detach_mean"] == pytest.approx(0.875)
    long = tables.table2_long(table)
    assert list(long["metric"]) == ["Accuracy", "AUC"]
    with pytest.raises(ValueError, match="at least one pair"):
        tables.build_table2(preds, {"ga": methods["ga"]}, rule="fixed")


def test_table2_shows_both_no_detach_variants_labelled_on_fake_results(tmp_path):
    from haf.methods import evaluation_methods

    # strengths known in advance (warm HAF has signal, scratch HAF none); GA has only a warm ablation; drop none
    methods = declare(
        {
            "haf": dict(family="fusion", align="ga", drop=True),
            "haf_nodetach": dict(family="fusion", align="ga", drop=True, detach=False),
            "haf_nodetach_warm": dict(family="fusion", align="ga", drop=True, detach=False, init="stage1"),
            "ga": dict(family="fusion", align="ga"),
            "ga_nodetach_warm": dict(family="fusion", align="ga", detach=False, init="stage1"),
            "drop": dict(family="fusion", drop=True),
        }
    )
    strengths = {
        "haf": 1.0,
        "haf_nodetach": 0.0,
        "haf_nodetach_warm": 3.0,
        "ga": 1.0,
        "ga_nodetach_warm": 0.5,
    }
    write_fake_results(tmp_path, methods, n=90, k=3, strengths=strengths, with_masked=False)
    listed = evaluation_methods(methods, load_config()["evaluation"])["table2"]
    assert listed == ["ga", "haf", "haf_nodetach", "ga_nodetach_warm", "haf_nodetach_warm"]
    preds = load_predictions(
        [tmp_path / "methods" / m / f"fold_{f}" / "predictions.tsv" for m in listed for f in range(3)]
    )
    table = tables.build_table2(preds, {m: methods[m] for m in listed}, rule="fixed")
    assert list(table["setting"]) == ["+ Global Alignment", "HAF"]
    by = table.set_index("setting")
    assert by.loc["HAF", "method_nodetach"] == "haf_nodetach"
    assert by.loc["HAF", "method_nodetach_warm"] == "haf_nodetach_warm"
    assert (
        by.loc["+ Global Alignment", "method_nodetach"] == ""
        and by.loc["+ Global Alignment", "auc_nodetach"] == "–"
    )
    # each column is its own method's fold-mean test AUC (computed here with scikit-learn)
    for setting, column, method in [
        ("HAF", "auc_detach_mean", "haf"),
        ("HAF", "auc_nodetach_mean", "haf_nodetach"),
        ("HAF", "auc_nodetach_warm_mean", "haf_nodetach_warm"),
        ("+ Global Alignment", "auc_nodetach_warm_mean", "ga_nodetach_warm"),
    ]:
        rows = preds[(preds["method"] == method) & (preds["part"] == "test") & preds["label"].notna()]
        aucs = [roc_auc_score(r["label"], r["risk"]) for _, r in rows.groupby("fold")]
        assert by.loc[setting, column] == pytest.approx(np.mean(aucs), abs=1e-12), (setting, column)
    assert by.loc["HAF", "auc_nodetach_warm_mean"] > by.loc["HAF", "auc_nodetach_mean"]  # strength 3 vs 0
    long = tables.table2_long(table)
    columns = tables.table2_columns(table)
    assert list(columns.values()) == [
        "Setting",
        "Metric",
        "w (with detach)",
        "w/o, from scratch",
        "w/o, warm (Stage 1)",
    ]
    md = tables.markdown_table(long, columns, title="T2", notes=tables.table2_notes())
    haf_auc = next(line for line in md.splitlines() if line.startswith("| HAF | AUC"))
    assert haf_auc.split(" | ")[2:] == [
        by.loc["HAF", "auc_detach"],
        by.loc["HAF", "auc_nodetach"],
        by.loc["HAF", "auc_nodetach_warm"] + " |",
    ]
    assert "warm (Stage 1) (X_nodetach_warm)" in md and "training.selection" in md
    # a run with the from-scratch ablations only keeps the paper's three columns
    scratch_only = tables.build_table2(preds, {m: methods[m] for m in ("haf", "haf_nodetach")}, rule="fixed")
    assert list(tables.table2_columns(scratch_only).values())[2:] == ["w (with detach)", "w/o, from scratch"]


# ---------------------------------------------------------------------------------------------
# thresholds
# ---------------------------------------------------------------------------------------------
def _val(risk, label, cox=False):
    risk = np.asarray(risk, dtype=float)
    return pd.DataFrame(
        dict(risk=risk, prob=np.nan if cox else 1 / (1 + np.exp(-risk)), label=np.asarray(label, dtype=float))
    )


def test_fixed_threshold_is_prob_half_or_median_validation_risk_for_cox():
    thr = binary.choose_threshold(_val([-1, 2], [0, 1]), "fixed")
    assert (thr.column, thr.value) == ("prob", 0.5)
    cox = binary.choose_threshold(_val([1, 2, 4], [0, 1, np.nan], cox=True), "fixed")
    assert (cox.column, cox.value) == ("risk", 2.0)
    assert "median" in cox.note
    test = pd.DataFrame(dict(risk=[1.9, 2.0, 3.0], prob=np.nan))
    assert cox.predict(test).tolist() == [0, 1, 1]


def test_val_threshold_maximises_balanced_accuracy_on_validation():
    thr = binary.choose_threshold(_val([-2, -1, 0.5, 1, 3], [0, 0, 1, 0, 1]), "val")
    assert thr.column == "risk" and thr.value == pytest.approx(-0.25)  # balanced accuracy 5/6
    # ties (-2 and 3 both give 0.75) go to the cut closest to the fixed rule's cut (logit 0)
    tie = binary.choose_threshold(_val([-3, -1, 1, 5], [0, 1, 0, 1]), "val")
    assert tie.value == pytest.approx(-2.0)
    # validation part with one class: fall back to the fixed rule and say so
    fallback = binary.choose_threshold(_val([-1, 1], [0, 0]), "val")
    assert fallback.rule == "fixed" and "lacks a class" in fallback.note
    with pytest.raises(ValueError):
        binary.choose_threshold(_val([0], [1]), "youden")


def test_val_rule_changes_accuracy_only_through_validation_predictions():
    preds = hand_made_predictions()
    a = binary.fold_metrics(preds, "val")
    moved = preds.copy()
    moved.loc[moved["part"] == "test", "label"] = moved.loc[moved["part"] == "test", "label"].map(
        lambda v: 1 - v if not np.isnan(v) else v
    )
    b = binary.fold_metrics(moved, "val")
    assert (a["threshold"].to_numpy() == b["threshold"].to_numpy()).all()  # test labels never used


# ---------------------------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------------------------
def test_batched_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(20, 30)).astype(float)
    s = rng.integers(0, 5, size=(20, 30)).astype(float)  # many ties
    expected = [roc_auc_score(y[i], s[i]) for i in range(20)]
    assert np.allclose(binary.batched_auc(y, s), expected)
    assert np.isnan(binary.batched_auc(np.ones((1, 4)), np.arange(4.0)[None]))[0]


def _pooled(label, risk):
    label = np.asarray(label, dtype=int)
    return pd.DataFrame(
        dict(
            patient_id=[f"{i:03d}" for i in range(len(label))],
            fold=0,
            label=label,
            risk=np.asarray(risk, float),
            pred=(np.asarray(risk) >= 0).astype(int),
        )
    )


def test_paired_bootstrap_identical_methods_gives_p_one_and_zero_delta():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 2, 80)
    a = _pooled(label, label + rng.normal(size=80))
    result = binary.paired_bootstrap(a, a.copy(), n_boot=200, seed=3)
    assert result["delta"] == 0 and result["p_value"] == 1.0
    assert result["delta_ci_low"] == 0 and result["delta_ci_high"] == 0


def test_paired_bootstrap_detects_a_clearly_better_method():
    rng = np.random.default_rng(2)
    label = rng.integers(0, 2, 200)
    good = _pooled(label, 3 * label + rng.normal(size=200))
    bad = _pooled(label, rng.normal(size=200))
    result = binary.paired_bootstrap(good, bad, n_boot=500, seed=3)
    assert result["delta"] > 0.3 and result["delta_ci_low"] > 0.2
    assert result["p_value"] < 0.01
    reverse = binary.paired_bootstrap(bad, good, n_boot=500, seed=3)
    assert reverse["delta"] == pytest.approx(-result["delta"]) and reverse["p_value"] < 0.01


def test_bootstrap_ci_brackets_the_pooled_estimate_and_is_seeded():
    rng = np.random.default_rng(4)
    label = rng.integers(0, 2, 100)
    pooled = _pooled(label, label + rng.normal(size=100))
    ci = binary.bootstrap_ci(pooled, 300, seed=5)
    assert ci["auc_ci_low"] < ci["auc_pooled"] < ci["auc_ci_high"]
    assert ci["accuracy_ci_low"] < ci["accuracy_pooled"] < ci["accuracy_ci_high"]
    assert ci == binary.bootstrap_ci(pooled, 300, seed=5)
    assert ci != binary.bootstrap_ci(pooled, 300, seed=6)


# ---------------------------------------------------------------------------------------------
# masking protocol
# ---------------------------------------------------------------------------------------------
METHODS = declare(
    {
        "haf": dict(family="fusion", detach=True),
        "parachute": dict(family="parachute", task_loss="cox"),
    }
)
EVAL = load_config({"evaluation": {"dropout_p": [0.0, 0.3], "repeats": 4}})["evaluation"]


@pytest.fixture(scope="module")
def fake_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake")
    write_fake_results(root, METHODS, n=40, k=2, evaluation=EVAL)
    return root


def _load(root, methods=METHODS, k=2):
    preds = load_predictions(
        [root / "methods" / m / f"fold_{f}" / "predictions.tsv" for m in methods for f in range(k)]
    )
    masked = load_masked(
        [root / "methods" / m / f"fold_{f}" / "masked.tsv.gz" for m in methods for f in range(k)]
    )
    return preds, masked


def test_masked_metrics_have_the_configured_repeats_and_keep_a_modality(fake_tree):
    preds, masked = _load(fake_tree)
    assert (masked["n_present"] >= 1).all()
    metrics = robustness.masked_metrics(masked, preds, rule="fixed", with_cindex=True)
    protocols = {
        "dropout": EVAL["dropout_p"],
        **{s: EVAL["parachute_p"] for s in robustness.PARACHUTE_SCENARIOS},
    }
    robustness.check_protocol(metrics, protocols, EVAL["repeats"])
    counts = metrics.groupby(["method", "fold", "scenario", "p"])["repeat"].nunique()
    assert (counts.xs(0.0, level="p") == 1).all()
    assert (counts[counts.index.get_level_values("p") > 0] == EVAL["repeats"]).all()
    assert len(counts) == 2 * 2 * (2 + 3 * 3)  # methods x folds x (dropout p + 3 scenarios x 3 p)
    # the masks do not depend on the method: same patients lose the same modalities
    key = ["fold", "scenario", "p", "repeat", "patient_id"]
    a = masked[masked["method"] == "haf"].set_index(key)["kept"]
    b = masked[masked["method"] == "parachute"].set_index(key)["kept"]
    assert a.sort_index().equals(b.sort_index())
    # kept is auditable: the group scenarios drop whole groups, so a row keeps all of a group or none
    for scenario, group in (
        ("pathology", {"wsi", "tma"}),
        ("tabular", {"cell", "clin", "path", "blood", "icd"}),
    ):
        rows = masked[(masked["scenario"] == scenario) & (masked["p"] > 0)]
        assert rows["kept"].map(lambda k, g=group: not (set(k.split(",")) & g)).any()  # some lose the group
        full = masked[(masked["scenario"] == "dropout") & (masked["p"] == 0)].set_index(
            ["method", "fold", "patient_id"]
        )["kept"]
        before = rows.set_index(["method", "fold", "patient_id"]).index.map(full)
        for kept, had in zip(rows["kept"], before, strict=True):
            lost = set(had.split(",")) - set(kept.split(","))
            assert lost <= group and (not lost or lost == set(had.split(",")) & group)
    with pytest.raises(HafInputError, match="repeats"):
        robustness.check_protocol(metrics[metrics["repeat"] != 3], protocols, EVAL["repeats"])
    with pytest.raises(HafInputError, match="p="):
        robustness.check_protocol(metrics, {**protocols, "dropout": [0.0, 0.3, 0.6]}, EVAL["repeats"])


def test_masks_are_seeded(tmp_path, fake_tree):
    other = tmp_path / "again"
    write_fake_results(other, METHODS, n=40, k=2, evaluation=EVAL)
    _, first = _load(fake_tree)
    _, again = _load(other)
    pd.testing.assert_frame_equal(first, again)
    reseeded = tmp_path / "reseeded"
    write_fake_results(reseeded, METHODS, n=40, k=2, evaluation={**EVAL, "mask_seed": 8})
    _, changed = _load(reseeded)
    assert not first["n_present"].equals(changed["n_present"])


def test_masked_tables_without_or_with_a_wrong_kept_column_are_refused(fake_tree, tmp_path):
    from haf.artifacts.files import write_tsv
    from haf.artifacts.masked import read_masked

    path = fake_tree / "methods" / next(iter(METHODS)) / "fold_0" / "masked.tsv.gz"
    frame = pd.read_csv(path, sep="\t", dtype={"patient_id": str})
    old = tmp_path / "old.tsv.gz"
    write_tsv(old, frame.drop(columns="kept"))
    with pytest.raises(HafInputError, match=r"old\.tsv\.gz.*kept.*predates the audited masking.*re-run"):
        read_masked(old)
    for bad, why in (
        ("clin,wsi", "in that order"),
        ("wsi,radiology", "in that order"),
        ("wsi", "n_present says"),
    ):
        wrong = frame.copy()
        wrong.loc[3, "kept"], wrong.loc[3, "n_present"] = bad, 2
        write_tsv(tmp_path / "bad.tsv.gz", wrong)
        with pytest.raises(HafInputError, match=rf"line 5.*{why}|{why}.*line 5"):
            read_masked(tmp_path / "bad.tsv.gz")


def test_masked_row_of_an_unknown_patient_is_an_error(fake_tree):
    preds, masked = _load(fake_tree)
    masked = masked.copy()
    masked.loc[0, "patient_id"] = "999"
    with pytest.raises(HafInputError, match="999"):
        robustness.masked_metrics(masked, preds, rule="fixed")


def test_aggregate_means_repeats_within_fold_then_folds():
    metrics = pd.DataFrame(
        dict(
            method="m",
            scenario="s",
            p=0.1,
            fold=[0, 0, 1, 1],
            repeat=[0, 1, 0, 1],
            auc=[0.6, 0.8, 0.5, 0.7],
        )
    )
    agg = robustness.aggregate(metrics, ("auc",))
    assert agg.loc[0, "auc_mean"] == pytest.approx(0.65)
    assert agg.loc[0, "auc_std"] == pytest.approx(np.std([0.7, 0.6], ddof=1))
    assert agg.loc[0, "n_repeats"] == 2 and agg.loc[0, "auc_n_folds"] == 2


# ---------------------------------------------------------------------------------------------
# Table 5: deltas and per-10% slopes
# ---------------------------------------------------------------------------------------------
def _agg(values: dict[float, list[float]], method="m"):
    rows = []
    for p, per_scenario in values.items():
        for s, v in zip(robustness.PARACHUTE_SCENARIOS, per_scenario, strict=True):
            rows.append(dict(method=method, scenario=s, p=p, cindex_mean=v))
    return pd.DataFrame(rows)


def test_degradation_deltas_and_slopes_hand_computed():
    agg = _agg({0.05: [0.70, 0.68, 0.66], 0.15: [0.66, 0.64, 0.62], 0.30: [0.60, 0.565, 0.53]})
    row = robustness.degradation_table(agg, "cindex", [0.05, 0.15, 0.30]).iloc[0]
    assert row["avg_5"] == pytest.approx(0.68) and row["avg_15"] == pytest.approx(0.64)
    assert row["avg_30"] == pytest.approx(0.565)
    assert row["delta_5_15"] == pytest.approx(-0.04) and row["slope_5_15"] == pytest.approx(-0.04)
    assert row["delta_5_30"] == pytest.approx(-0.115) and row["slope_5_30"] == pytest.approx(-0.046)
    assert row["delta_15_30"] == pytest.approx(-0.075) and row["slope_15_30"] == pytest.approx(-0.05)


# PARACHUTE paper, supplement Table 5: Delta(5->15), Delta(5->30), Delta(15->30), Speed(5->15), Speed(5->30),
# Speed(15->30), as printed (three decimals).  Only the deltas and speeds are published, so the inputs
# are per-scenario C-indices whose averages over the three scenarios give the published Delta(5->15)
# and Delta(5->30); Delta(15->30) and all three speeds are then checked against the printed values.
TABLE5 = {
    "PDA CoxPH": (0.015, 0.011, -0.005, 0.015, 0.004, -0.003),
    "PDA DRIM": (0.027, -0.031, -0.058, 0.027, -0.012, -0.038),
    "PDA AttentionMOI": (0.040, -0.056, -0.096, 0.040, -0.022, -0.064),
    "PDA MMD": (-0.040, -0.113, -0.073, -0.040, -0.045, -0.049),
    "PDA ShaSpec": (-0.040, -0.109, -0.069, -0.040, -0.043, -0.046),
    "PDA PARACHUTE": (-0.064, -0.145, -0.081, -0.064, -0.058, -0.054),
    "UCEC CoxPH": (0.058, -0.036, -0.093, 0.058, -0.014, -0.062),
    "UCEC DRIM": (0.006, 0.019, 0.013, 0.006, 0.008, 0.009),
    "UCEC AttentionMOI": (-0.009, 0.010, 0.019, -0.009, 0.004, 0.013),
    "UCEC MMD": (-0.016, -0.020, -0.004, -0.016, -0.008, -0.003),
    "UCEC ShaSpec": (-0.031, -0.050, -0.019, -0.031, -0.020, -0.013),
    "UCEC PARACHUTE": (-0.028, -0.034, -0.006, -0.028, -0.014, -0.004),
    "ccRCC CoxPH": (-0.013, 0.049, 0.062, -0.013, 0.020, 0.041),
    "ccRCC DRIM": (0.066, -0.017, -0.083, 0.066, -0.007, -0.055),
    "ccRCC AttentionMOI": (-0.007, -0.004, 0.003, -0.007, -0.002, 0.002),
    "ccRCC MMD": (-0.004, -0.080, -0.076, -0.004, -0.032, -0.051),
    "ccRCC ShaSpec": (0.030, -0.042, -0.072, 0.030, -0.017, -0.048),
    "ccRCC PARACHUTE": (0.023, -0.022, -0.045, 0.023, -0.009, -0.030),
}


@pytest.mark.parametrize("row", sorted(TABLE5))
def test_slopes_reproduce_parachute_table5_row(row):
    d5_15, d5_30, d15_30, s5_15, s5_30, s15_30 = TABLE5[row]
    # unequal scenarios (pathology, tabular, mixed) with the published averages: 0.70, 0.70 + d5_15, 0.70 + d5_30
    spread = np.array([0.03, -0.05, 0.02])
    agg = _agg(
        {0.05: list(0.70 + spread), 0.15: list(0.70 + d5_15 - spread), 0.30: list(0.70 + d5_30 + 2 * spread)}
    )
    got = robustness.degradation_table(agg, "cindex", [0.30, 0.05, 0.15]).iloc[0]
    assert got["avg_15"] - got["avg_5"] == pytest.approx(d5_15, abs=1e-12)
    # every printed value is rounded to 3 decimals (error <= r = 0.0005): a value derived from k printed
    # deltas divided by w is off the printed one by at most r + k r / w
    r = 0.0005 + 1e-9
    assert got["delta_15_30"] == pytest.approx(d15_30, abs=r + 2 * r)
    assert got["slope_5_15"] == pytest.approx(s5_15, abs=r + r)
    assert got["slope_5_30"] == pytest.approx(s5_30, abs=r + r / 2.5)
    assert got["slope_15_30"] == pytest.approx(s15_30, abs=r + 2 * r / 1.5)


def test_table5_display_columns():
    agg = _agg({0.05: [0.7] * 3, 0.15: [0.7 - 0.064] * 3, 0.30: [0.7 - 0.145] * 3})
    row = robustness.degradation_table(agg, "cindex", [0.05, 0.15, 0.30]).iloc[0]
    display, columns = tables.format_table5(row.to_frame().T.assign(label="m"), [0.05, 0.15, 0.30])
    assert columns["slope_5_30"] == "Speed(5→30)" and display["delta_5_30"].iloc[0] == "-0.145"


def test_degradation_needs_every_scenario():
    agg = _agg({0.05: [0.7] * 3, 0.15: [0.6] * 3})
    agg = agg[~((agg["scenario"] == "mixed") & (agg["p"] == 0.15))]
    with pytest.raises(HafInputError, match="mixed"):
        robustness.degradation_table(agg, "cindex", [0.05, 0.15])


def test_per_p_rows_take_each_p_from_the_model_trained_at_that_p():
    # PARACHUTE's protocol: at p, the model trained at p_miss = p. Each member is given a distinct level
    # at every p (member at 0.05: 0.80 at its own p; 0.15: 0.70; 0.30: 0.55), so the per-p row's averages
    # are 0.80, 0.70, 0.55 by hand, while the one-model row (parachute) stays at 0.60, 0.58, 0.50
    ps = [0.05, 0.15, 0.30]
    own = {"parachute": {0.05: 0.60, 0.15: 0.58, 0.30: 0.50}, "parachute_p05": {0.05: 0.80, 0.15: 0.1, 0.30: 0.1},
           "parachute_p15": {0.05: 0.1, 0.15: 0.70, 0.30: 0.1}, "parachute_p30": {0.05: 0.1, 0.15: 0.1, 0.30: 0.55},
           "haf": {0.05: 0.65, 0.15: 0.64, 0.30: 0.63}}  # fmt: skip
    agg = pd.concat([_agg({p: [v] * 3 for p, v in levels.items()}, method=m) for m, levels in own.items()])
    groups = {"parachute": {0.05: "parachute_p05", 0.15: "parachute_p15", 0.30: "parachute_p30"}}
    labels = {m: m.upper() for m in own}
    rows = tables.table5_rows(agg, groups, ps, labels)
    assert list(dict.fromkeys(rows["method"])) == ["parachute", "parachute:per_p", "haf"]
    per_p = rows[rows["method"] == "parachute:per_p"]
    assert per_p.groupby("p")["trained_method"].unique().map(list).to_dict() == {
        0.05: ["parachute_p05"], 0.15: ["parachute_p15"], 0.30: ["parachute_p30"]
    }  # fmt: skip
    assert set(per_p["label"]) == {"PARACHUTE — a model per p (trained at p_miss = p)"}
    assert set(rows.loc[rows["method"] == "parachute", "label"]) == {"PARACHUTE — one model at every p"}
    assert set(rows.loc[rows["method"] == "haf", "label"]) == {"HAF"}
    table = tables.build_table5(rows, ps, metrics=("cindex",)).set_index("method")
    assert table.loc["parachute:per_p", ["avg_5", "avg_15", "avg_30"]].tolist() == pytest.approx(
        [0.80, 0.70, 0.55]
    )
    assert table.loc["parachute:per_p", "delta_5_30"] == pytest.approx(-0.25)
    assert table.loc["parachute:per_p", "slope_15_30"] == pytest.approx(-0.10)
    assert table.loc["parachute", ["avg_5", "avg_15", "avg_30"]].tolist() == pytest.approx([0.60, 0.58, 0.50])
    # without the per-p methods (not in run_methods) Table 5 is as before
    plain = tables.table5_rows(agg[agg["method"].isin(["parachute", "haf"])], {}, ps, labels)
    assert list(dict.fromkeys(plain["method"])) == ["parachute", "haf"] and set(plain["label"]) == {
        "PARACHUTE",
        "HAF",
    }
    # a p of the protocol that no per-p model was trained at is an error naming the config keys
    with pytest.raises(
        HafInputError, match=r"p=0\.3, but no method declared per_p_of: parachute has p_miss 0\.3"
    ):
        tables.table5_rows(agg, {"parachute": {0.05: "parachute_p05", 0.15: "parachute_p15"}}, ps, labels)


# ---------------------------------------------------------------------------------------------
# survival metrics
# ---------------------------------------------------------------------------------------------
def test_cindex_risk_sign_higher_risk_earlier_death():
    time = np.arange(1, 21, dtype=float) * 30
    event = np.ones(20, dtype=int)
    event[::4] = 0
    assert survival.harrell_c(time, event, -time) == pytest.approx(1.0)
    assert survival.harrell_c(time, event, time) == pytest.approx(0.0)
    uno = survival.uno_c(time, event, time, event, -time, tau=time.max())
    assert uno == pytest.approx(1.0)
    auc, mean = survival.td_auc(time, event, time, event, -time, np.array([150.0, 300.0]))
    assert (auc > 0.99).all() and mean > 0.99


def test_time_grid_clamped_inside_train_and_test_follow_up():
    assert survival.follow_up_window([10, 300], [20, 250]) == (20.0, 250.0)
    grid = survival.clamp_times([50, 100, 150, 200, 250], [(80, 220), (60, 200)])
    assert grid.tolist() == [100.0, 150.0]


def test_td_auc_survives_test_deaths_beyond_training_follow_up():
    from sksurv.metrics import cumulative_dynamic_auc

    train_t = np.array([10, 20, 30, 40, 50, 60, 70, 100.0])
    train_e = np.array([1, 0, 1, 1, 0, 1, 0, 0])  # last training time censored: G(t) = 0 after 100
    test_t = np.array([15, 25, 35, 45, 55, 150.0])
    test_e = np.array([1, 1, 0, 1, 0, 1])
    risk = -test_t
    with pytest.raises(ValueError, match="censoring survival"):
        cumulative_dynamic_auc(survival.surv(train_e, train_t), survival.surv(test_e, test_t), risk, [30.0])
    auc, _ = survival.td_auc(train_t, train_e, test_t, test_e, risk, np.array([30.0, 50.0]))
    assert np.isfinite(auc).all()


def test_cohort_grid_and_survival_metrics_on_fake_results(fake_tree):
    from haf.eval import survival_tables as st

    cohort = read_cohort_survival(fake_tree / "cohort" / "folds.tsv", fake_tree / "cohort" / "targets.tsv")
    grid = st.cohort_grid(cohort, 10)
    for fold, (lo, hi) in grid.windows.items():
        assert ((grid.times >= lo) & (grid.times < hi)).all(), fold
    preds, _ = _load(fake_tree)
    summary, per_fold, curves = st.survival_metrics(preds[preds["method"] == "haf"], grid)
    assert len(per_fold) == 2 and summary["n"] == 40
    assert summary["harrell_c_pooled"] > 0.5  # the fake risk drives death
    assert set(curves["scope"]) == {"fold_0", "fold_1", "pooled"}
    groups = st.risk_groups(preds[preds["method"] == "parachute"])
    assert set(groups["group"]) == {"high", "low"} and len(groups) == 40
    km = st.km_summary(groups)
    assert 0 <= km["logrank_p"] <= 1 and km["n_high"] + km["n_low"] == 40
    bins, calib = st.calibration_table(preds[preds["method"] == "parachute"], grid, [730.0], 4, 1825.0)
    assert calib.loc[0, "status"].startswith("Breslow baseline on the val part")
    # folds whose validation part has no death before the horizon get no Breslow baseline: counted, not hidden
    assert bins["n"].sum() == calib.loc[0, "n"] <= 40 and bins["predicted_mean"].between(0, 1).all()
    _, binary_calib = st.calibration_table(preds[preds["method"] == "haf"], grid, [730.0], 4, 1825.0)
    assert binary_calib.loc[0, "status"].startswith("not defined")


def test_breslow_probability_increases_with_risk():
    rng = np.random.default_rng(0)
    risk = rng.normal(size=50)
    time = rng.exponential(1000 * np.exp(-risk))
    event = rng.random(50) < 0.7
    p = survival.breslow_event_probability(risk, time, event, np.array([-1.0, 0.0, 1.0]), 500.0)
    assert np.all(np.diff(p) > 0) and ((p > 0) & (p < 1)).all()
    assert survival.breslow_event_probability(risk, time, event, np.zeros(2), time.max() + 1) is None


# ---------------------------------------------------------------------------------------------
# embeddings and figures
# ---------------------------------------------------------------------------------------------
def test_representative_patient_and_aligned_checks(tmp_path, fake_tree):
    from haf.eval import embeddings

    aligned = read_aligned(fake_tree / "stage2" / "ga" / "fold_0" / "aligned.npz")
    pid = embeddings.representative_patient(aligned, "test")
    test = aligned.part == "test"
    counts = aligned.present[test].sum(axis=1)
    best = sorted(aligned.patient_id[test][counts == counts.max()])
    assert pid == best[0]
    pre, post, mods = embeddings.patient_matrix(aligned, pid)
    assert pre.shape == post.shape == (len(mods), 128)
    x_pre, _, modality, _ = embeddings.stack(aligned, "test")
    assert len(modality) == aligned.present[test].sum() == len(x_pre)
    with np.load(fake_tree / "stage2" / "ga" / "fold_0" / "aligned.npz") as data:
        arrays = {k: data[k] for k in data.files if k != "u_icd"}
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(HafInputError, match="u_icd"):
        read_aligned(tmp_path / "bad.npz")


def _is_pdf_and_png(pdf, png):
    return pdf.read_bytes()[:4] == b"%PDF" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_functions_write_pdf_and_png(tmp_path, fake_tree):
    from haf.eval import embeddings, figures
    from haf.eval import survival_tables as st

    preds, masked = _load(fake_tree)
    labels = {"haf": "HAF", "parachute": "PARACHUTE"}
    metrics = robustness.masked_metrics(masked, preds, rule="fixed", scenarios=("dropout",))
    agg = robustness.aggregate(metrics, ("auc", "accuracy"))
    out = {}
    for name in ("dropout", "tsne", "heatmap", "td_auc", "calibration", "km"):
        out[name] = (tmp_path / f"{name}.pdf", tmp_path / f"{name}.png")
    figures.plot_dropout(agg, labels, *out["dropout"], title="t")
    aligned = read_aligned(fake_tree / "stage2" / "ga" / "fold_0" / "aligned.npz")
    pre, post, modality, _ = embeddings.stack(aligned)
    figures.plot_tsne(
        embeddings.tsne_2d(pre, 0), embeddings.tsne_2d(post, 0), modality, *out["tsne"], title="t"
    )
    a, b, mods = embeddings.patient_matrix(aligned, embeddings.representative_patient(aligned))
    figures.plot_heatmap(a, b, mods, *out["heatmap"], title="t")
    cohort = read_cohort_survival(fake_tree / "cohort" / "folds.tsv", fake_tree / "cohort" / "targets.tsv")
    grid = st.cohort_grid(cohort, 5)
    curves = pd.concat(
        [st.survival_metrics(preds[preds["method"] == m], grid)[2].assign(method=m) for m in labels]
    )
    figures.plot_td_auc(curves, labels, *out["td_auc"], title="t")
    bins = pd.concat(
        [
            st.calibration_table(preds[preds["method"] == m], grid, [730.0, 1825.0], 3, 1825.0)[0]
            for m in labels
        ]
    )
    figures.plot_calibration(bins, [730.0, 1825.0], labels, *out["calibration"], title="t")
    groups = {m: st.risk_groups(preds[preds["method"] == m]) for m in labels}
    figures.plot_km(groups, {m: st.km_summary(g) for m, g in groups.items()}, labels, *out["km"], title="t")
    for name, (pdf, png) in out.items():
        assert _is_pdf_and_png(pdf, png), name
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_palette_is_keyed_by_name():
    from haf.eval.palette import method_color, method_colors

    assert method_colors(["haf", "ga"])["haf"] == method_colors(["ga", "late_fusion", "haf"])["haf"]
    assert method_color("some_new_method") == method_color("some_new_method")
    assert len({method_color(m) for m in ("haf", "ga", "drop", "clip", "parachute")}) == 5


def test_cut_balanced_accuracies_equal_scikit_learn_per_cut():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(3)
    label = rng.integers(0, 2, size=41)
    label[:2] = [0, 1]
    risk = np.round(rng.normal(size=41), 1)  # ties included
    cuts = np.concatenate([np.unique(risk), [risk.min() - 1, risk.max() + 1]])
    ours = binary.cut_balanced_accuracies(label, risk, cuts)
    ref = [balanced_accuracy_score(label, (risk >= c).astype(int)) for c in cuts]
    assert np.allclose(ours, ref, rtol=0, atol=1e-15)
