"""Fold-input assembly from synthetic targets, folds, tabular npz and Stage 1 embeddings npz."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from haf.artifacts.fold_inputs import FoldInputs
from haf.artifacts.tabular import write_tabular_npz
from haf.cohort.assemble import assemble_fold_inputs
from haf.errors import HafInputError
from haf.modalities import MODALITIES, TABULAR

IDS = ["001", "002", "003", "004", "005", "006"]
PARTS = ["train", "train", "val", "test", "train", "test"]


def _write_inputs(tmp_path, wsi_ids=("001", "002", "003"), tma_ids=("001", "004"), absent_all=("006",)):
    targets = pd.DataFrame(
        {
            "patient_id": IDS,
            "time": [100.0, 2000.0, 300.0, 50.0, 900.0, 1500.0],
            "event": [1, 0, 0, 1, 0, 1],
            "label": [1.0, 0.0, np.nan, 1.0, 0.0, 1.0],
            "label_reason": ["a"] * 6,
        }
    )
    folds = pd.concat(
        [
            pd.DataFrame({"patient_id": IDS, "fold": 0, "part": PARTS}),
            pd.DataFrame({"patient_id": IDS, "fold": 1, "part": PARTS[::-1]}),
        ],
        ignore_index=True,
    )
    rng = np.random.default_rng(0)
    arrays = {"patient_id": np.array(IDS, dtype="U"), "part": np.array(PARTS, dtype="U")}
    for k, m in enumerate(TABULAR):
        present = np.array([pid not in absent_all and (k + i) % 3 != 0 for i, pid in enumerate(IDS)])
        present[0] = True
        x = rng.normal(size=(len(IDS), k + 2)).astype(np.float32)
        x[~present] = 0.0
        arrays[f"x_{m}"] = x
        arrays[f"present_{m}"] = present
        arrays[f"columns_{m}"] = np.array([f"{m}{j}" for j in range(k + 2)], dtype="U")
    write_tabular_npz(tmp_path / "tab.npz", arrays, 0)
    part_of = dict(zip(IDS, PARTS, strict=True))
    for m, ids in (("wsi", wsi_ids), ("tma", tma_ids)):
        np.savez(
            tmp_path / f"{m}.npz",
            patient_id=np.array(ids, dtype="U"),
            part=np.array([part_of[i] for i in ids], dtype="U"),
            z=rng.normal(size=(len(ids), 4)).astype(np.float32),
        )
    return targets, folds, arrays


def _paths(tmp_path):
    return {"wsi": tmp_path / "wsi.npz", "tma": tmp_path / "tma.npz"}


def test_assemble_presence_features_and_exclusion(tmp_path):
    targets, folds, arrays = _write_inputs(tmp_path)
    inputs, counts = assemble_fold_inputs(0, targets, folds, tmp_path / "tab.npz", _paths(tmp_path))
    # 006 has no tabular modality and no embedding: excluded and counted
    assert inputs.patient_id.tolist() == IDS[:5] and counts["excluded_no_modality"] == 1
    assert inputs.part.tolist() == PARTS[:5]
    wsi, tma = MODALITIES.index("wsi"), MODALITIES.index("tma")
    assert inputs.present[:, wsi].tolist() == [True, True, True, False, False]
    assert inputs.present[:, tma].tolist() == [True, False, False, True, False]
    z = np.load(tmp_path / "wsi.npz")["z"]
    np.testing.assert_array_equal(inputs.features["wsi"][:3], z)
    assert (inputs.features["wsi"][3:] == 0).all()
    for m in TABULAR:
        np.testing.assert_array_equal(inputs.features[m], arrays[f"x_{m}"][:5])
        assert inputs.columns[m] == arrays[f"columns_{m}"].tolist()
    assert np.isnan(inputs.label[2]) and inputs.event.tolist() == [1, 0, 0, 1, 0]
    inputs.save(tmp_path / "fold_0.npz")
    back = FoldInputs.load(tmp_path / "fold_0.npz")
    np.testing.assert_array_equal(back.present, inputs.present)


def test_assemble_rejects_disagreeing_parts_and_unknown_patients(tmp_path):
    targets, folds, _ = _write_inputs(tmp_path)
    np.savez(
        tmp_path / "wsi.npz",
        patient_id=np.array(["001"], dtype="U"),
        part=np.array(["test"], dtype="U"),
        z=np.ones((1, 4), dtype=np.float32),
    )
    with pytest.raises(HafInputError, match=r"wsi\.npz, patient 001, field 'part'"):
        assemble_fold_inputs(0, targets, folds, tmp_path / "tab.npz", _paths(tmp_path))
    np.savez(
        tmp_path / "wsi.npz",
        patient_id=np.array(["042"], dtype="U"),
        part=np.array(["train"], dtype="U"),
        z=np.ones((1, 4), dtype=np.float32),
    )
    with pytest.raises(HafInputError, match="patient 042, who is not in fold 0"):
        assemble_fold_inputs(0, targets, folds, tmp_path / "tab.npz", _paths(tmp_path))
    np.savez(
        tmp_path / "wsi.npz", patient_id=np.array(["001"], dtype="U"), z=np.ones((1, 4), dtype=np.float32)
    )
    with pytest.raises(HafInputError, match="field 'part'"):
        assemble_fold_inputs(0, targets, folds, tmp_path / "tab.npz", _paths(tmp_path))


def test_assemble_rejects_tabular_of_another_fold(tmp_path):
    targets, folds, _ = _write_inputs(tmp_path)
    with pytest.raises(HafInputError, match="parts differ from fold 1"):
        assemble_fold_inputs(1, targets, folds, tmp_path / "tab.npz", _paths(tmp_path))


def test_assemble_counts_manifest_patients_without_embedding(tmp_path):
    targets, folds, _ = _write_inputs(tmp_path)
    manifest = pd.DataFrame({"patient_id": IDS, **{f"has_{m}": 1 for m in MODALITIES}})
    _, counts = assemble_fold_inputs(
        0, targets, folds, tmp_path / "tab.npz", _paths(tmp_path), manifest=manifest
    )
    assert counts["wsi_available_without_embedding"] == 3  # 004, 005, 006 have WSI but no embedding


def test_a_pathology_modality_left_out_is_absent_for_everyone(tmp_path):
    targets, folds, _ = _write_inputs(tmp_path)
    inputs, counts = assemble_fold_inputs(
        0, targets, folds, tmp_path / "tab.npz", {"wsi": tmp_path / "wsi.npz"}
    )
    tma = MODALITIES.index("tma")
    assert not inputs.present[:, tma].any() and inputs.features["tma"].shape == (inputs.n, 0)
    assert counts["tma_embeddings"] == 0
    # patient 004 had only TMA (and tabular) data: it stays with its tabular modalities
    assert "004" in inputs.patient_id.tolist()
