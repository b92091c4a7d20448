"""Stage 1 stacked over folds: a fold trained among others gives what it gives alone; evaluation
embeds each bag on its own; a fold that cannot validate is an error naming it (or an explicit fallback).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fakes.config import load_config, settings, small_val_warnings
from fakes.mil import BagSpec, write_synthetic_cohort

from haf.artifacts.bags import write_bag
from haf.errors import HafInputError
from haf.mil.train import run_stage1, run_stage1_folds
from haf.runtime.seeds import fold_seed

torch.set_num_threads(1)
CPU = torch.device("cpu")
DIM = 16
SECTION = load_config(
    {
        "stage1": dict(
            wsi_dim=DIM, lr=1e-3, max_epochs=15, es_patience=5, batch_bags=8, max_instances=20, k_sample=4
        )
    }
)["stage1"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("stacked_stage1")
    return write_synthetic_cohort(
        root,
        n_patients=100,
        wsi=BagSpec(3, 30, DIM, signal=3.0),
        tma=BagSpec(2, 8, DIM, signal=0.0, coverage=0.9),
        k=4,
        seed=3,
        second_slide_rate=0.1,
    )


def _folds(cohort, pmod, folds, section=SECTION, selection=None, **paths):
    p = {"manifest": cohort.manifest, "targets": cohort.targets, "folds": cohort.folds, **paths}
    return run_stage1_folds(
        pmod, folds, p["manifest"], p["targets"], p["folds"], cohort.tma_index, section, CPU,
        selection=selection,
    )  # fmt: skip


@pytest.mark.parametrize("pmod", ["wsi", "tma", "wsi_tma"])
def test_a_fold_stacked_with_others_equals_it_trained_alone(cohort, pmod):
    together = _folds(cohort, pmod, [0, 1, 2])
    alone = _folds(cohort, pmod, [1])[0]
    a, b = together[1].history, alone.history
    assert a["epoch"].tolist() == b["epoch"].tolist()
    assert int(a.loc[a["best"], "epoch"].iloc[0]) == int(b.loc[b["best"], "epoch"].iloc[0])
    # measured: max |difference| 4e-8 in the losses, 0 in AUC and LR (float32 batched kernels)
    pd.testing.assert_frame_equal(a, b, rtol=0, atol=1e-6)
    # measured: max |difference| 5e-7 on z and 4e-7 on the logits
    np.testing.assert_array_equal(together[1].embeddings["patient_id"], alone.embeddings["patient_id"])
    np.testing.assert_allclose(together[1].embeddings["z"], alone.embeddings["z"], rtol=0, atol=1e-5)
    pd.testing.assert_frame_equal(together[1].predictions, alone.predictions, rtol=0, atol=1e-5)
    # the folds really are different runs
    assert not np.allclose(together[0].model.fc[0].weight.detach(), together[1].model.fc[0].weight.detach())
    if pmod == "tma":  # noise: the folds stop at different epochs, the others go on alone
        assert len({len(r.history) for r in together}) > 1


def _rewrite_test_bags(cohort, fold: int, root: Path) -> tuple[Path, set[str]]:
    """A manifest whose test patients of ``fold`` have other bags (other values and sizes)."""
    folds = pd.read_csv(cohort.folds, sep="\t", dtype={"patient_id": str})
    test = set(folds.loc[(folds["fold"] == fold) & (folds["part"] == "test"), "patient_id"])
    manifest = pd.read_csv(cohort.manifest, sep="\t", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(11)
    for i, rec in manifest.iterrows():
        if rec["patient_id"] in test and rec["wsi_files"]:
            n = int(rng.integers(1, 60))
            path = root / f"{rec['patient_id']}.h5"
            write_bag(path, rng.normal(size=(n, DIM)).astype(np.float32) * 3, np.zeros((n, 2), np.int32))
            manifest.loc[i, "wsi_files"] = str(path)
    out = root / "manifest.tsv"
    manifest.to_csv(out, sep="\t", index=False)
    return out, test


def test_test_bags_change_only_test_embeddings_bit_for_bit(cohort, tmp_path):
    # issue 16: a patient's embedding must not depend on which other patients share its batch, so
    # changing the test part's bags (values and sizes) leaves every fitted weight and every train/val
    # embedding of the fold bit-identical
    section = {**SECTION, "max_epochs": 4}
    manifest, test = _rewrite_test_bags(cohort, 1, tmp_path)
    ref = _folds(cohort, "wsi", [1], section)[0]
    changed = _folds(cohort, "wsi", [1], section, manifest=manifest)[0]
    for (name, p), q in zip(ref.model.state_dict().items(), changed.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    pd.testing.assert_frame_equal(ref.history, changed.history, rtol=0, atol=0)
    pids = ref.embeddings["patient_id"]
    np.testing.assert_array_equal(pids, changed.embeddings["patient_id"])
    is_test = np.isin(pids, list(test))
    np.testing.assert_array_equal(ref.embeddings["z"][~is_test], changed.embeddings["z"][~is_test])
    assert not np.allclose(ref.embeddings["z"][is_test], changed.embeddings["z"][is_test])
    # and stacking changes nothing for the changed fold's training artefacts beyond float rounding
    both = _folds(cohort, "wsi", [0, 1], section, manifest=manifest)
    assert both[1].history["best"].tolist() == changed.history["best"].tolist()


def _blind_targets(cohort, fold: int, path: Path) -> Path:
    """Targets where fold ``fold``'s val patients have no binary label."""
    targets = pd.read_csv(cohort.targets, sep="\t", dtype={"patient_id": str}, keep_default_na=False)
    folds = pd.read_csv(cohort.folds, sep="\t", dtype={"patient_id": str})
    val = set(folds.loc[(folds["fold"] == fold) & (folds["part"] == "val"), "patient_id"])
    targets["label"] = targets["label"].astype(object)
    targets.loc[targets["patient_id"].isin(val), "label"] = ""
    targets.to_csv(path, sep="\t", index=False)
    return path


def test_a_fold_without_validation_patients_is_an_error_naming_it(cohort, tmp_path):
    targets = _blind_targets(cohort, 2, tmp_path / "targets.tsv")
    with pytest.raises(
        HafInputError,
        match=r"folds.tsv.*fold 2: the validation part of pathology model wsi has no labelled patient",
    ):
        _folds(cohort, "wsi", [0, 2], targets=targets)


def test_the_train_loss_fallback_is_explicit_and_recorded(cohort, tmp_path):
    targets = _blind_targets(cohort, 2, tmp_path / "targets.tsv")
    section = {**SECTION, "on_empty_val": "train_loss", "max_epochs": 6}
    outputs = {k: tmp_path / f"{k}.{ext}" for k, ext in (
        ("model", "pt"), ("embeddings", "npz"), ("predictions", "tsv"), ("train_log", "tsv"), ("loss_curve", "png"),
        ("attention", "h5"),
    )}  # fmt: skip
    result = run_stage1(
        pmod="wsi", fold=2, manifest=cohort.manifest, targets=targets, folds=cohort.folds,
        tma_index=cohort.tma_index, section=section, device=CPU, outputs=outputs,
    )  # fmt: skip
    h = result.history
    assert h["val_loss"].isna().all() and h["val_score"].isna().all()
    # selected by the training loss: the epoch of its minimum, not the silent epoch 0 of before
    assert int(h.loc[h["best"], "epoch"].iloc[0]) == int(h["train_loss"].idxmin())
    assert int(h["train_loss"].idxmin()) > 0
    meta = torch.load(outputs["model"], weights_only=True)["meta"]
    assert meta["selected_by"] == "train_loss" and meta["seed"] == fold_seed(SECTION["seed"], 2)


def test_a_small_validation_part_is_a_warning_naming_the_fold_and_its_usable_patients(cohort, caplog):
    # usable, counted here from the files: validation patients of the fold with a TMA bag (every synthetic
    # patient is labelled; about 10% have no TMA)
    folds = pd.read_csv(cohort.folds, sep="\t", dtype={"patient_id": str})
    manifest = pd.read_csv(cohort.manifest, sep="\t", dtype={"patient_id": str})
    with_tma = set(manifest.loc[manifest["has_tma"] == 1, "patient_id"])
    val = folds[folds["part"] == "val"]
    usable = {f: int(val.loc[val["fold"] == f, "patient_id"].isin(with_tma).sum()) for f in range(4)}
    threshold = sorted(usable.values())[-1]  # below it: every fold but the largest
    section = load_config({"stage1": {**SECTION, "max_epochs": 1}})["stage1"]
    with caplog.at_level("WARNING", logger="haf.runtime.fit"):
        _folds(
            cohort, "tma", [0, 1, 2, 3], section, selection=settings("training", min_val_patients=threshold)
        )
    expected = {f"stage1 tma fold {f}": n for f, n in usable.items() if n < threshold}
    assert expected and small_val_warnings(caplog.records) == expected
