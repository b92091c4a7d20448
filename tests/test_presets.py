"""The two HAF presets validate, the paper's equals the schema defaults, the authors' code's switches work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from fakes.config import load_config, settings

from haf.cohort.folds import make_folds
from haf.fusion.model import draw_reduced_authors

REPO = Path(__file__).resolve().parents[1]


def _preset(name):
    return yaml.safe_load((REPO / "config" / "presets" / f"{name}.yaml").read_text())


def test_the_paper_preset_is_the_schema_defaults():
    preset = _preset("haf_paper")
    filled = load_config()
    for section, values in preset.items():
        for key, value in values.items():
            assert filled[section][key] == value, f"{section}.{key}"


def test_the_authors_code_preset_validates_and_differs_where_spec_10_says():
    config = load_config(_preset("haf_authors_code"))
    assert config["target"]["rule"] == "status" and config["cv"]["val_from"] == "heldout"
    assert config["stage3"]["lambda_mofe"] == 1.0 and config["stage3"]["reduced_draw"] == "authors"
    assert config["stage2"]["tau_sv"] == config["stage2"]["tau_pd"] == 1.0


def test_heldout_validation_halves_the_test_fold_and_keeps_every_other_fold_for_training():
    n = 80
    targets = pd.DataFrame({
        "patient_id": [f"{i:03d}" for i in range(1, n + 1)],
        "label": np.tile([0.0, 1.0, np.nan, 0.0], n // 4),
    })  # fmt: skip
    heldout, _ = make_folds(targets, settings("cv", k=4, seed=1, val_from="heldout"))
    plain, _ = make_folds(targets, settings("cv", k=4, seed=1))
    for fold in range(4):
        h = heldout[heldout["fold"] == fold].set_index("patient_id")["part"]
        p = plain[plain["fold"] == fold].set_index("patient_id")["part"]
        assert set(h.index[h.isin(["val", "test"])]) == set(p.index[p == "test"])  # same held-out fold
        assert abs((h == "val").sum() - (h == "test").sum()) <= 3  # split in half (stratified rounding)
        assert (h == "train").sum() == (p != "test").sum()


def test_the_authors_draw_counts_dropped_slots_among_all_slots():
    present = torch.tensor([[True] * 7, [True, False, False, False, False, False, True]] * 4000)
    reduced, has = draw_reduced_authors(present, torch.Generator().manual_seed(0))
    assert has.all()
    full = present[0::2].sum(1).float()
    kept_full = reduced[0::2].sum(1).float()
    # n dropped uniform in 1..6 of 7 present slots: E[kept] = 7 - 3.5 = 3.5 (binomial-size tolerance)
    assert abs(kept_full.mean().item() - 3.5) < 0.1 and (kept_full <= full - 1).all()
    # the 2-modality patient: dropped slots fall on absent ones too, so the set can stay whole or empty
    kept_two = reduced[1::2].sum(1)
    assert (kept_two == 2).any() and (kept_two == 0).any()
    assert not (reduced & ~present).any()


def test_the_parachute_small_cohort_preset_changes_only_capacity_and_budget_and_names_the_published_value():
    import re

    preset = _preset("parachute_small_cohort")
    assert list(preset) == ["parachute"]
    published = load_config()["parachute"]
    config = load_config(preset)["parachute"]
    changed = {k for k in published if config[k] != published[k]}
    assert changed == set(preset["parachute"]) == {
        "d", "d_int", "lr", "t_max", "batch_size", "max_epochs", "es_patience"
    }  # fmt: skip
    # the method itself stays as published: Cox loss, ties, SAM + GCS, dropout, heads, weight decay
    for key in (
        "cox_normalisation",
        "ties",
        "gcs",
        "rho",
        "gamma",
        "dropout",
        "heads",
        "weight_decay",
        "p_miss",
    ):
        assert config[key] == published[key], key
    assert config["d"] % config["heads"] == 0
    # every line names the published value it replaces, and that value is the schema default
    text = (REPO / "config" / "presets" / "parachute_small_cohort.yaml").read_text()
    for key in preset["parachute"]:
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{key}:"))
        named = re.search(r"published ([0-9.]+)", line)
        assert named and float(named.group(1)) == float(published[key]), line


def test_the_hancock_size_preset_is_the_demo_at_763_patients():
    preset = _preset("hancock_size")
    config = load_config(preset)
    assert config["demo"]["enabled"] and config["demo"]["n_patients"] == 763
    assert config["cv"]["k"] == 10 and config["cv"]["repeats"] == 1
    assert set(preset) == {"demo", "cv"}  # only the size and R differ from the defaults
