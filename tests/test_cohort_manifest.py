"""Manifest and targets on the hand-written mini cohort."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from haf.artifacts.files import write_tsv
from haf.artifacts.manifest import read_manifest
from haf.artifacts.targets import read_targets
from haf.cohort.manifest import build_manifest
from haf.cohort.targets import build_targets
from haf.errors import HafInputError
from haf.io.clinical import read_clinical
from haf.modalities import MODALITIES

_spec = importlib.util.spec_from_file_location(
    "hancock_mini_maker", Path(__file__).parent / "fixtures" / "hancock_mini" / "make_mini.py"
)
_maker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_maker)


@pytest.fixture()
def mini(tmp_path) -> Path:
    return _maker.make_mini(tmp_path / "Hancock_Dataset")


def _manifest(mini, paths, **kw):
    kw.setdefault("markers", ["HE"])
    kw.setdefault("wsi_dim", _maker.WSI_DIM)
    return build_manifest(mini, paths, progress=False, **kw)


def test_manifest_availability_paths_and_counts(mini, default_config, tmp_path):
    manifest, counts = _manifest(mini, default_config["paths"])
    rows = manifest.set_index("patient_id")
    assert rows.index.tolist() == ["001", "002", "003", "004", "005", "006"]
    assert rows.loc["001", ["has_" + m for m in MODALITIES]].tolist() == [1] * 7
    assert rows.loc["003", ["has_wsi", "has_tma", "has_cell", "has_blood", "has_icd"]].tolist() == [
        0,
        0,
        1,
        1,
        1,
    ]
    assert rows.loc["004", "has_blood"] == 0  # CRP only: none of the 16 blood features
    assert rows.loc["005", "has_icd"] == 0  # an ICD file without any code
    assert rows.loc["004", "n_modalities"] == 2
    wsi = rows.loc["001", "wsi_files"].split(";")
    assert [Path(p).name for p in wsi] == ["PrimaryTumor_HE_001.h5", "PrimaryTumor_HE_001_a.h5"]
    assert len(rows.loc["001", "tma_files"].split(";")) == 2 and rows.loc["003", "tma_files"] == ""
    # 007 is only a TMA map entry: no modality at all -> excluded and counted, never silent
    assert counts["n_excluded_no_modality"] == 1 and counts["excluded_no_modality"] == ["007"]
    assert counts["per_modality"] == {
        "wsi": 2,
        "tma": 2,
        "cell": 3,
        "clin": 6,
        "path": 6,
        "blood": 3,
        "icd": 3,
    }
    assert counts["wsi_extra_slides_pooled"] == 1 and counts["blood_duplicates_resolved"] == 2
    assert counts["blood_fraction_outside_sex_specific_range"]["Hemoglobin"] == 0.5
    json.dumps(counts)  # the counts are written as JSON
    write_tsv(tmp_path / "manifest.tsv", manifest)
    back = read_manifest(tmp_path / "manifest.tsv")
    assert back["patient_id"].tolist()[0] == "001" and back["has_wsi"].dtype.kind == "i"


def test_manifest_marker_aliases(mini, default_config):
    manifest, counts = _manifest(mini, default_config["paths"], markers=["HE", "MHC-1"])
    assert counts["tma_cores"] == 4
    assert len(manifest.set_index("patient_id").loc["001", "tma_files"].split(";")) == 3


def test_manifest_rejects_wsi_h5_without_features(mini, default_config):
    slide = (
        mini
        / "WSI_UNI_encodings/WSI_PrimaryTumor/WSI_PrimaryTumor_Oropharynx_Part1/h5_files/PrimaryTumor_HE_002.h5"
    )
    with h5py.File(slide, "w") as h:
        h.create_dataset("coords", data=np.zeros((2, 2), dtype=np.int32))
    with pytest.raises(HafInputError, match=r"PrimaryTumor_HE_002\.h5, field 'features'"):
        _manifest(mini, default_config["paths"])


def test_manifest_rejects_wrong_wsi_width(mini, default_config):
    with pytest.raises(HafInputError, match=r"PrimaryTumor_HE_001\.h5.*8-d but the config expects 1024-d"):
        _manifest(mini, default_config["paths"], wsi_dim=1024)


def test_manifest_empty_slide_is_dropped_and_counted(mini, default_config):
    slide = (
        mini
        / "WSI_UNI_encodings/WSI_PrimaryTumor/WSI_PrimaryTumor_Oropharynx_Part1/h5_files/PrimaryTumor_HE_002.h5"
    )
    with h5py.File(slide, "w") as h:
        h.create_dataset("features", data=np.zeros((0,), dtype=np.float32))
    manifest, counts = _manifest(mini, default_config["paths"])
    assert manifest.set_index("patient_id").loc["002", "has_wsi"] == 0
    assert counts["wsi_slides_empty_dropped"] == 1


def test_manifest_core_disagreeing_with_map(mini, default_config):
    folder = mini / "TMA_TumorCenter_Cores" / "tma_tumorcenter_HE"
    (folder / "TumorCenter_HE_block1_x2_y1_patient001.png").rename(
        folder / "TumorCenter_HE_block1_x2_y1_patient003.png"
    )
    with pytest.raises(HafInputError, match=r"patient003\.png.*TMA_Map_block1\.csv"):
        _manifest(mini, default_config["paths"])


def test_manifest_tolerates_missing_optional_sources(mini, default_config):
    paths = dict(
        default_config["paths"], blood="nowhere.json", icd_dir="none", tma_maps="none", wsi_h5="none"
    )
    manifest, counts = _manifest(mini, paths)
    assert counts["per_modality"]["blood"] == 0 and counts["per_modality"]["wsi"] == 0
    assert counts["tma_cores_unchecked_no_map"] == 3
    assert counts["sources"]["blood"] is None


@pytest.mark.parametrize(
    "rule, labels, reasons",
    [
        (
            "horizon",
            [1, 0, math.nan, 0, 1, 0],
            [
                "death_within_horizon",
                "alive_at_horizon",
                "censored_before_horizon",
                "death_after_horizon",
                "death_within_horizon",
                "alive_at_horizon",
            ],
        ),
        ("status", [1, 0, 0, 1, 1, 0], ["deceased", "living", "living", "deceased", "deceased", "living"]),
        (
            "status_tumor_specific",
            [1, 0, 0, math.nan, 1, 0],
            ["deceased", "living", "living", "non_tumour_death", "deceased", "living"],
        ),
    ],
)
def test_targets_rules(mini, rule, labels, reasons, tmp_path):
    clinical = read_clinical(mini / "StructuredData" / "clinical_data.json")
    targets, counts = build_targets(clinical, ["001", "002", "003", "004", "005", "006"], rule, 1825)
    np.testing.assert_array_equal(targets["label"].to_numpy(), np.array(labels, dtype=float))
    assert targets["label_reason"].tolist() == reasons
    assert targets["event"].tolist() == [1, 0, 0, 1, 1, 0]
    assert targets["time"].tolist() == [400, 2000, 300, 2500, 100, 1825]
    assert counts["no_label"] == sum(math.isnan(v) for v in labels)
    write_tsv(tmp_path / "targets.tsv", targets)
    back = read_targets(tmp_path / "targets.tsv")
    np.testing.assert_array_equal(back["label"].to_numpy(), targets["label"].to_numpy())
    assert back["patient_id"].tolist()[0] == "001"


def test_targets_count_every_exclusion(mini):
    clinical = read_clinical(mini / "StructuredData" / "clinical_data.json")
    clinical.loc["002", "survival_status"] = None
    clinical.loc["003", "days_to_last_information"] = math.nan
    targets, counts = build_targets(clinical, ["001", "002", "003", "009"], "horizon", 1825)
    assert targets["patient_id"].tolist() == ["001"]
    assert counts["excluded_no_clinical_record"] == 1
    assert counts["excluded_no_survival_status"] == 1
    assert counts["excluded_no_follow_up_time"] == 1
    clinical.loc["001", "days_to_last_information"] = -5
    with pytest.raises(HafInputError, match=r"patient 001, field 'days_to_last_information'"):
        build_targets(clinical, ["001"], "horizon", 1825)
