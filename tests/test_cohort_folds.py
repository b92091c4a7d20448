"""Folds: patient-level stratified K-fold with inner validation, and the official split files."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from haf.artifacts.files import write_tsv
from haf.artifacts.folds import read_folds
from haf.cohort.folds import make_folds, stratified_holdout
from haf.errors import HafInputError


def _cv(scheme: str, **keys):
    from fakes.config import settings

    return settings("cv", scheme=scheme, **keys)


def _targets(n=200, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.choice([0.0, 1.0, np.nan], size=n, p=[0.45, 0.25, 0.30])
    return pd.DataFrame(
        {
            "patient_id": [f"{i:03d}" for i in rng.permutation(np.arange(1, n + 1))],
            "time": rng.uniform(10, 4000, n),
            "event": (label == 1).astype(int),
            "label": label,
            "label_reason": "x",
        }
    )


def test_kfold_partitions_patients_and_stratifies(tmp_path):
    targets = _targets()
    folds, counts = make_folds(targets, _cv("kfold", k=5, seed=42, val_fraction=0.15))
    assert set(folds.columns) == {"patient_id", "repeat", "fold", "part"}
    # every patient once per fold, in the test part of exactly one fold
    assert (folds.groupby("fold")["patient_id"].nunique() == len(targets)).all()
    tests = folds[folds["part"] == "test"]
    assert tests["patient_id"].is_unique and len(tests) == len(targets)
    labels = targets.set_index("patient_id")["label"]
    overall = {
        "1": (labels == 1).mean(),
        "0": (labels == 0).mean(),
        "none": labels.isna().mean(),
    }
    for _fold, frame in folds.groupby("fold"):
        for part in ("train", "val", "test"):
            lab = labels.loc[frame.loc[frame["part"] == part, "patient_id"]]
            assert abs((lab == 1).mean() - overall["1"]) < 0.1
            assert abs(lab.isna().mean() - overall["none"]) < 0.1
        n_train_val = (frame["part"] != "test").sum()
        assert abs((frame["part"] == "val").sum() / n_train_val - 0.15) < 0.03
    write_tsv(tmp_path / "folds.tsv", folds)
    back = read_folds(tmp_path / "folds.tsv")
    assert back["patient_id"].iloc[0] == folds["patient_id"].iloc[0] and back["fold"].dtype.kind == "i"
    assert counts["folds"][0]["test"]["n"] == len(tests[tests["fold"] == 0])


def test_kfold_is_seeded_and_order_independent():
    targets = _targets()
    a, _ = make_folds(targets, _cv("kfold", k=5, seed=1, val_fraction=0.2))
    b, _ = make_folds(targets.sample(frac=1.0, random_state=3), _cv("kfold", k=5, seed=1, val_fraction=0.2))
    c, _ = make_folds(targets, _cv("kfold", k=5, seed=2, val_fraction=0.2))
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    assert not a["part"].equals(c["part"])


def test_holdout_keeps_both_classes_in_small_strata():
    ids = np.array([f"{i:03d}" for i in range(10)])
    stratum = np.array(["1", "1", "0", "0", "0", "0", "0", "0", "0", "none"])
    held = stratified_holdout(ids, stratum, 0.1, np.random.default_rng(0))
    assert held[stratum == "1"].sum() == 1 and held[stratum == "0"].sum() == 1
    assert held[stratum == "none"].sum() == 0  # a single patient stays in training


def test_kfold_too_many_folds_for_the_cohort():
    with pytest.raises(HafInputError, match="cv.k"):
        make_folds(_targets(n=12), _cv("kfold", k=10, seed=0, val_fraction=0.15))


def test_official_split_counts_patients_outside_either_side(caplog):
    targets = _targets(n=6)
    targets["patient_id"] = ["001", "002", "003", "004", "005", "006"]
    targets["label"] = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    split = {
        "001": "training",
        "002": "training",
        "003": "test",
        "004": "training",
        "005": "test",
        "008": "training",
    }
    with caplog.at_level(logging.INFO, logger="haf"):
        folds, counts = make_folds(targets, _cv("official_in", seed=0, val_fraction=0.4), split=split)
    assert counts["cohort_not_in_split"] == 1 and counts["split_not_in_cohort"] == 1
    assert "006" in caplog.text and "left out of the folds" in caplog.text
    parts = folds.set_index("patient_id")["part"]
    assert parts.loc[["003", "005"]].tolist() == ["test", "test"]
    assert set(parts.loc[["001", "002", "004"]]) == {"train", "val"}
    assert (folds["fold"] == 0).all() and "006" not in parts.index


def test_read_folds_rejects_bad_parts(tmp_path):
    f = tmp_path / "folds.tsv"
    f.write_text("patient_id\trepeat\tfold\tpart\n001\t0\t0\ttrain\n002\t0\t0\tholdout\n")
    with pytest.raises(HafInputError, match=r"line 3, field 'part'"):
        read_folds(f)
    f.write_text("patient_id\trepeat\tfold\tpart\n001\t0\t0\ttrain\n002\t1\t0\ttest\n")
    with pytest.raises(HafInputError, match=r"fold 0 belongs to two repeats"):
        read_folds(f)


def test_repeated_kfold_gives_each_repeat_its_own_split_and_repeat_0_is_the_plain_kfold():
    from haf.artifacts.folds import fold_repeats
    from haf.cohort.folds import fold_ids

    targets = _targets(n=60)
    plain, _ = make_folds(targets, _cv("kfold", k=5, seed=3, val_fraction=0.2))
    cv = _cv("kfold", k=5, seed=3, val_fraction=0.2, repeats=3)
    folds, _ = make_folds(targets, cv)
    assert fold_ids(cv) == list(range(15)) and sorted(folds["fold"].unique()) == list(range(15))
    repeat_of = fold_repeats(folds)
    assert [repeat_of[f] for f in range(15)] == [r for r in range(3) for _ in range(5)]
    # repeat 0 reproduces the unrepeated split; every repeat puts each patient in exactly one test part
    first = folds[folds["repeat"] == 0].drop(columns="repeat").reset_index(drop=True)
    pd.testing.assert_frame_equal(first, plain.drop(columns="repeat").reset_index(drop=True))
    for r in range(3):
        test = folds[(folds["repeat"] == r) & (folds["part"] == "test")]
        assert sorted(test["patient_id"]) == sorted(targets["patient_id"])
    tests = [
        frozenset(folds[(folds["fold"] == f) & (folds["part"] == "test")]["patient_id"]) for f in (0, 5, 10)
    ]
    assert len(set(tests)) == 3  # different seeds, different splits
