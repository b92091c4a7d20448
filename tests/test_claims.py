"""The claims table: the verdict rule by hand, and fake runs where each claim holds, fails or cannot be
told by construction (tests/fakes/evaluation.py's strengths, behaviours, geometries and controls)."""

from __future__ import annotations

import numpy as np
import pytest
from fakes.config import load_config
from fakes.evaluation import write_fake_results

from haf.artifacts.aligned import read_aligned
from haf.artifacts.folds import read_folds
from haf.artifacts.masked import load_masked
from haf.eval.claims import build_claims, verdict
from haf.eval.data import load_predictions, read_cohort_survival
from haf.eval.fold_test import part_size_ratio
from haf.eval.repeats import read_repeats
from haf.eval.survival_tables import cohort_grid
from haf.methods import active_methods

METHODS = ["haf", "fusion_mlp_all", "ga", "drop"]


@pytest.mark.parametrize(
    ("low", "high", "null", "direction", "expected"),
    [
        (0.01, 0.05, 0.0, "greater", "supported"),
        (-0.05, -0.01, 0.0, "greater", "refuted"),
        (-0.01, 0.02, 0.0, "greater", "inconclusive"),
        (-0.05, -0.01, 0.0, "less", "supported"),
        (0.01, 0.05, 0.0, "less", "refuted"),
        (0.01, 0.05, 0.02, "greater", "inconclusive"),  # the CI must clear the null, not 0
        (-0.04, -0.03, -0.05, "greater", "supported"),  # (c)'s flatness row: null = -margin
        (np.nan, 0.05, 0.0, "greater", "inconclusive"),
    ],
)
def test_verdict_rule_by_hand(low, high, null, direction, expected):
    assert verdict(low, high, null=null, direction=direction) == expected


def test_verdict_rejects_an_unknown_direction():
    with pytest.raises(ValueError, match="direction"):
        verdict(0.1, 0.2, direction="up")


def _claims(tmp_path, n_boot=200, n=600, k=10, **fake):
    # 10 folds of 60: enough power per fold for the fold-level test (haf.eval.fold_test) to see the
    # planted effects (at 3 folds of 80 its 2 degrees of freedom leave them inconclusive)
    config = load_config()
    config["run_methods"] = METHODS
    methods = active_methods(config)
    evaluation = {"dropout_p": [0.0, 0.25, 0.5, 0.75], "repeats": 2, "mask_seed": 3}
    root = tmp_path / "results"
    write_fake_results(root, methods, n=n, k=k, seed=5, evaluation=evaluation, **fake)
    preds = sorted(root.glob("methods/*/fold_*/predictions.tsv"))
    masked = sorted(root.glob("methods/*/fold_*/masked.tsv.gz"))
    aligned = {
        int(p.parent.name.split("_")[1]): read_aligned(p) for p in root.glob("stage2/ga/fold_*/aligned.npz")
    }
    folds, targets = root / "cohort" / "folds.tsv", root / "cohort" / "targets.tsv"
    table = build_claims(
        load_predictions(preds),
        load_masked(masked),
        aligned,
        methods,
        grid=cohort_grid(read_cohort_survival(folds, targets), 5),
        repeats=read_repeats(folds),
        rule="val",
        n_boot=n_boot,
        seed=11,
        flat_margin=0.05,
        test_train_ratio=part_size_ratio(read_folds(folds)),
    ).table
    return table


def _verdicts(table, claim):
    rows = table[table["claim"].str.startswith(f"({claim})")]
    assert len(rows), f"no row for claim ({claim})"
    return rows


def test_claims_follow_the_planted_effects(tmp_path):
    table = _claims(
        tmp_path,
        strengths={"haf": 3.0, "fusion_mlp_all": 0.3, "ga": 3.0, "drop": 0.3},
        behaviours={"haf": "robust", "fusion_mlp_all": "fragile"},
        geometry="aligned",
    )
    assert set(table.columns[:7]) == {"claim", "metric", "effect", "ci_low", "ci_high", "p", "verdict"}
    a = _verdicts(table, "a")
    assert (a["verdict"] == "supported").all() and (a["effect"] > 0).all(), a
    b = _verdicts(table, "b")
    assert (b["verdict"] == "supported").all(), b
    e = _verdicts(table, "e")
    assert (e["verdict"] == "supported").all(), e
    for _, row in table.iterrows():
        assert row["ci_low"] <= row["effect"] <= row["ci_high"] or np.isnan(row["effect"]), row


def test_claims_come_out_refuted_when_the_planted_effect_is_reversed(tmp_path):
    table = _claims(
        tmp_path,
        strengths={"haf": 0.3, "fusion_mlp_all": 3.0, "ga": 0.3, "drop": 3.0},
        geometry="reverse",
    )
    assert (_verdicts(table, "a")["verdict"] == "refuted").all()
    b = _verdicts(table, "b")
    assert (b.loc[b["methods"] == "haf vs drop", "verdict"] == "refuted").all(), b
    assert (_verdicts(table, "e")["verdict"] == "refuted").all()


@pytest.mark.parametrize(
    ("haf", "reference", "expected"), [("robust", "fragile", "supported"), ("fragile", "robust", "refuted")]
)
def test_the_drop_slope_claim_follows_which_model_degrades(tmp_path, haf, reference, expected):
    # equal strength: only how the two models use a masked modality differs
    table = _claims(
        tmp_path,
        strengths={"haf": 3.0, "fusion_mlp_all": 3.0},
        behaviours={"haf": haf, "fusion_mlp_all": reference},
    )
    c = _verdicts(table, "c")
    relative = c[c["methods"] == "haf vs fusion_mlp_all"]
    assert len(relative) == 1 and relative["verdict"].iloc[0] == expected, c


def test_no_signal_control_leaves_every_comparison_inconclusive(tmp_path):
    table = _claims(tmp_path, control="no_signal")
    for claim in ("a", "b", "e"):
        assert (_verdicts(table, claim)["verdict"] == "inconclusive").all(), _verdicts(table, claim)
    # a flat curve at chance proves nothing: (c)'s flatness row cannot be supported
    assert not (_verdicts(table, "c")["verdict"] == "supported").any()
