"""Bad inputs of issue 17: each gives a clear error naming the file (and record, field), or a counted,
logged exclusion; none is accepted silently. (The readers' older bad-input cases: test_io_readers.py.)"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from haf.artifacts.bags import probe_bag, read_bag, write_bag
from haf.cohort.manifest import build_manifest, unused_folders
from haf.cohort.sources import blood_outlier, load_tabular_sources
from haf.cohort.targets import build_targets
from haf.errors import HafInputError
from haf.io.blood import read_blood, read_blood_reference
from haf.io.cell_density import read_cell_density
from haf.io.clinical import read_clinical, read_pathological
from haf.io.splits import read_split
from haf.io.tma import list_tma_cores, read_tma_map, read_tma_maps
from haf.mil.bags import BagStore

_spec = importlib.util.spec_from_file_location(
    "hancock_mini_maker", Path(__file__).parent / "fixtures" / "hancock_mini" / "make_mini.py"
)
_maker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_maker)


@pytest.fixture()
def mini(tmp_path) -> Path:
    return _maker.make_mini(tmp_path / "Hancock_Dataset")


def _paths(default_config) -> dict:
    return default_config["paths"]


# --- item 4: JSON shape -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reader", [read_clinical, read_pathological, read_blood, read_split, read_blood_reference]
)
def test_empty_json_array_is_an_error_naming_the_file(tmp_path, reader):
    f = tmp_path / "some_data.json"
    f.write_text("[]")
    with pytest.raises(HafInputError, match=r"some_data\.json: the file holds an empty JSON array"):
        reader(f)


def test_empty_clinical_file_stops_the_manifest_naming_it(mini, default_config):
    (mini / "StructuredData" / "clinical_data.json").write_text("[]\n")
    with pytest.raises(HafInputError, match=r"clinical_data\.json: the file holds an empty JSON array"):
        build_manifest(mini, _paths(default_config), ["HE"], wsi_dim=_maker.WSI_DIM, progress=False)


@pytest.mark.parametrize("reader", [read_clinical, read_pathological, read_blood, read_split])
def test_single_record_object_is_an_error_not_a_one_patient_cohort(tmp_path, reader):
    f = tmp_path / "clinical_data.json"
    f.write_text(json.dumps({"patient_id": "012", "survival_status": "living"}))
    with pytest.raises(
        HafInputError, match=r"clinical_data\.json: the file holds a single JSON object \(patient '012'\)"
    ) as err:
        reader(f)
    assert "[{...}]" in str(err.value)


def test_single_record_object_in_the_mini_cohort_fails_before_any_fold(mini, default_config):
    f = mini / "StructuredData" / "clinical_data.json"
    f.write_text(json.dumps(json.loads(f.read_text())[0]))
    with pytest.raises(HafInputError, match=r"clinical_data\.json: the file holds a single JSON object"):
        load_tabular_sources(mini, _paths(default_config))


# --- item 4: CSV separators and decimal commas -------------------------------------------------


def _semicolon_decimal_comma(path: Path) -> Path:
    """The mini cell-density CSV as a German Excel export: ';' separators and decimal commas."""
    number = re.compile(r"^-?[0-9]+\.[0-9]+$")
    lines = [
        ";".join(v.replace(".", ",") if number.match(v) else v for v in line.split(","))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    out = path.with_name("semicolon.csv")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def test_semicolon_csv_with_decimal_commas_reads_as_the_comma_csv(mini, caplog):
    comma = mini / "TMA_CellDensityMeasurements" / "TMA_celldensity_measurements.csv"
    # densities with a fractional part, so that a decimal comma matters
    text = comma.read_text(encoding="utf-8")
    comma.write_text(text.replace(",100.0\n", ",100.25\n").replace(",200.0\n", ",200.5\n"), encoding="utf-8")
    semicolon = _semicolon_decimal_comma(comma)
    written = semicolon.read_text(encoding="utf-8")
    assert ";100,25\n" in written and ";1200,5;" in written and "," not in written.splitlines()[0]
    expected, _ = read_cell_density(comma)
    with caplog.at_level(logging.INFO, logger="haf.io.records"):
        got, _ = read_cell_density(semicolon)
    pd.testing.assert_frame_equal(got, expected)
    assert expected.loc["001", "cd3_z"] == pytest.approx((100.25 + 200.5) / 2)
    assert "read with a decimal comma" in caplog.text


def test_semicolon_tma_map_reads(tmp_path):
    f = tmp_path / "TMA_Map_block1.csv"
    f.write_text("core;Case ID\n1-1;001\n1-2;\n")
    assert read_tma_map(f) == {"1-1": "001", "1-2": None}


def test_csv_that_parses_with_no_separator_names_file_and_column(tmp_path):
    f = tmp_path / "TMA_celldensity_measurements.csv"
    f.write_text("Image|Case ID|Num Positive per mm^2\nTumorCenter_CD3_block1.svs|001|1,5\n")
    with pytest.raises(HafInputError) as err:
        read_cell_density(f)
    message = str(err.value)
    assert "TMA_celldensity_measurements.csv" in message and "field 'Image'" in message
    assert "separators ',', ';' and tab" in message and "Error tokenizing" not in message


# --- item 5: plausibility of clinical values ---------------------------------------------------


@pytest.mark.parametrize("age", [-3, 130])
def test_implausible_age_names_record_and_field(tmp_path, age):
    f = tmp_path / "clinical_data.json"
    f.write_text(json.dumps([{"patient_id": "001"}, {"patient_id": "002", "age_at_initial_diagnosis": age}]))
    with pytest.raises(
        HafInputError,
        match=rf"record 2 \(patient 002\), field 'age_at_initial_diagnosis': implausible age {age}",
    ):
        read_clinical(f)


def test_zero_follow_up_is_excluded_counted_and_logged(caplog):
    clinical = pd.DataFrame(
        {
            "survival_status": ["living", "deceased", "living"],
            "days_to_last_information": [0.0, 0.0, 2000.0],
            "survival_status_with_cause": [None, "deceased tumor specific", None],
        },
        index=["001", "002", "003"],
    )
    with caplog.at_level(logging.WARNING, logger="haf.cohort.targets"):
        targets, counts = build_targets(clinical, ["001", "002", "003"])
    assert targets["patient_id"].tolist() == ["003"]
    assert counts["excluded_zero_follow_up_time"] == 2
    assert "2 patients excluded from targets (zero follow up time): 001, 002" in caplog.text


def test_negative_follow_up_is_an_error():
    clinical = pd.DataFrame(
        {"survival_status": ["living"], "days_to_last_information": [-1.0]}, index=["001"]
    )
    with pytest.raises(HafInputError, match=r"patient 001, field 'days_to_last_information'"):
        build_targets(clinical, ["001"], source="clinical_data.json")


# --- item 5: plausibility of h5 features ---------------------------------------------------------


def _raw_bag(path: Path, features: np.ndarray) -> Path:
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", data=features)
        handle.create_dataset("coords", data=np.zeros((len(features), 2), np.int32))
    return path


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.bool_])
def test_integer_features_are_an_error_from_the_header(tmp_path, dtype):
    f = _raw_bag(tmp_path / "PrimaryTumor_HE_001.h5", np.ones((4, 8), dtype=dtype))
    for reader in (probe_bag, read_bag):
        with pytest.raises(HafInputError, match=r"PrimaryTumor_HE_001\.h5, field 'features': 'features' are"):
            reader(f)


def test_float16_and_float64_features_are_accepted(tmp_path):
    for dtype in (np.float16, np.float64):
        f = _raw_bag(tmp_path / f"bag_{np.dtype(dtype).name}.h5", np.full((3, 8), 0.5, dtype=dtype))
        assert probe_bag(f)[:2] == (3, 8)
        assert read_bag(f, 8, max_abs=1e4)[0].dtype == np.float32


def test_absurd_feature_magnitude_names_file_row_and_key(tmp_path):
    features = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
    features[4, 2] = 1e37  # finite in float32; trained to loss 1e36 before this check
    f = tmp_path / "bag.h5"
    write_bag(f, features, np.zeros((6, 2), np.int32))
    read_bag(f, 8)  # no threshold given: no check (the reader's default)
    with pytest.raises(
        HafInputError,
        match=r"bag\.h5, row 4, field 'features': feature magnitude 1e\+37 exceeds "
        r"stage1\.max_abs_feature = 10000",
    ):
        read_bag(f, 8, max_abs=1e4)


def test_stage1_bag_store_applies_max_abs_feature(tmp_path):
    features = np.ones((5, 8), np.float32)
    features[1, 0] = -2e5
    f = tmp_path / "TMA_001.h5"
    write_bag(f, features, np.zeros((5, 2), np.int32))
    store = BagStore.from_files({"001": [f]}, name="tma", max_abs=1e4)
    with pytest.raises(HafInputError, match=r"TMA_001\.h5, row 1, .*magnitude 2e\+05"):
        store.read("001")
    assert BagStore.from_files({"001": [f]}, name="tma", max_abs=None).read("001")[1, 0] == -2e5


def test_non_finite_features_are_an_error(tmp_path):
    features = np.ones((3, 8), np.float32)
    features[2, 5] = np.inf
    f = _raw_bag(tmp_path / "bag.h5", features)
    with pytest.raises(HafInputError, match=r"bag\.h5, row 2, field 'features': NaN or inf"):
        read_bag(f, 8)


def test_schema_default_max_abs_feature(default_config):
    assert default_config["stage1"]["max_abs_feature"] == 10000


# --- item 8 (c): HANCOCK's blood outlier --------------------------------------------------------


def _blood(leuk: dict[str, float], baso: dict[str, float]) -> pd.DataFrame:
    ids = sorted(set(leuk) | set(baso))
    return pd.DataFrame(
        {"Leukocytes": [leuk.get(i, np.nan) for i in ids], "Basophils": [baso.get(i, np.nan) for i in ids]},
        index=ids,
    )


def test_blood_outlier_keep_and_drop_log_the_patient(caplog):
    table = _blood({"001": 7.0, "002": 95.0, "003": 6.0}, {"001": 0.03, "002": 4.1, "003": 0.05})
    with caplog.at_level(logging.WARNING, logger="haf.cohort.sources"):
        kept, counts = blood_outlier(table, "keep")
    assert kept.index.tolist() == ["001", "002", "003"]
    assert counts["blood_outlier_patient"] == "002" and counts["blood_outlier_dropped"] == 0
    assert "patient 002 holds the maximum Leukocytes (95) and Basophils (4.1); kept" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="haf.cohort.sources"):
        dropped, counts = blood_outlier(table, "drop")
    assert dropped.index.tolist() == ["001", "003"] and counts["blood_outlier_dropped"] == 1
    assert "patient 002 holds the maximum" in caplog.text and "dropped" in caplog.text


def test_blood_outlier_two_different_maxima_drop_nobody(caplog):
    table = _blood({"001": 30.0, "002": 9.0}, {"001": 0.1, "002": 0.3})
    with caplog.at_level(logging.INFO, logger="haf.cohort.sources"):
        out, counts = blood_outlier(table, "drop")
    assert out.index.tolist() == ["001", "002"] and counts["blood_outlier_patient"] is None
    assert "no single patient holds both maxima (Leukocytes: 001; Basophils: 002)" in caplog.text


def test_blood_outlier_drop_removes_the_blood_modality_in_the_manifest(mini, default_config):
    blood = mini / "StructuredData" / "blood_data.json"
    records = json.loads(blood.read_text())
    template = records[0]
    records += [
        # 003's other Leukocytes are after treatment (negative days): closest_to_treatment takes this one
        dict(template, patient_id="003", analyte_name="Leukocytes", value=80.0),
        dict(template, patient_id="003", analyte_name="Basophils", value=3.0),
        dict(template, patient_id="001", analyte_name="Basophils", value=0.02),
    ]
    blood.write_text(json.dumps(records))
    paths = _paths(default_config)
    keep, counts = build_manifest(mini, paths, ["HE"], wsi_dim=_maker.WSI_DIM, progress=False)
    assert keep.set_index("patient_id").loc["003", "has_blood"] == 1
    assert counts["blood_outlier_patient"] == "003"
    drop, counts = build_manifest(
        mini, paths, ["HE"], wsi_dim=_maker.WSI_DIM, progress=False, blood_outlier_policy="drop"
    )
    assert drop.set_index("patient_id").loc["003", "has_blood"] == 0
    assert drop.set_index("patient_id").loc["001", "has_blood"] == 1
    assert counts["blood_outlier_dropped"] == 1
    # the tabular rule reads the sources with the same policy, so presence agrees with the manifest
    sources = load_tabular_sources(mini, paths, blood_outlier_policy="drop")
    assert "003" not in sources.tables["blood"].index


# --- item 8 (d): folders present but not used, markers configured but absent ---------------------


def test_unused_folders_are_logged_lymph_node_named(mini, default_config, caplog):
    (mini / "WSI_UNI_encodings" / "WSI_LymphNode" / "h5_files").mkdir(parents=True)
    (mini / "TextData" / "reports_english").mkdir()
    (mini / "WSI_PrimaryTumor_Annotations").mkdir()
    paths = _paths(default_config)
    assert unused_folders(mini, paths) == [
        "TextData/reports_english",
        "WSI_PrimaryTumor_Annotations",
        "WSI_UNI_encodings/WSI_LymphNode",
    ]
    with caplog.at_level(logging.INFO, logger="haf.cohort.manifest"):
        _, counts = build_manifest(mini, paths, ["HE"], wsi_dim=_maker.WSI_DIM, progress=False)
    assert counts["unused_folders"][-1] == "WSI_UNI_encodings/WSI_LymphNode"
    assert "WSI_UNI_encodings/WSI_LymphNode (lymph-node slides" in caplog.text


def test_configured_marker_without_folder_is_a_warning(mini, caplog):
    with caplog.at_level(logging.INFO, logger="haf.io.tma"):
        maps = read_tma_maps(mini / "TMA_Maps")
        cores, counts = list_tma_cores(mini / "TMA_TumorCenter_Cores", ["HE", "CD8"], maps)
    assert set(cores) == {"001", "002"} and counts["tma_markers_without_folder"] == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "extract.markers includes CD8" in warnings[0].getMessage()
    assert "no tma_tumorcenter_CD8 folder" in warnings[0].getMessage()
    # the MHC-1 folder of the mini cohort is present but not configured: one INFO line says so
    assert any(
        r.levelno == logging.INFO and "tma_tumorcenter_MHC-1" in r.getMessage() for r in caplog.records
    )
