"""Readers of every HANCOCK format on the hand-written mini cohort, and their bad-input errors."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from haf.artifacts.bags import read_pooled_bag
from haf.errors import HafInputError
from haf.io.blood import blood_range_flags, pivot_blood, read_blood, read_blood_reference
from haf.io.cell_density import parse_image_name, read_cell_density
from haf.io.clinical import read_clinical, read_pathological
from haf.io.icd import icd_patient_id, normalise_icd, parse_icd_text, read_icd_dir
from haf.io.splits import read_split
from haf.io.tma import canonical_marker, list_tma_cores, parse_core_name, read_tma_maps
from haf.io.wsi import check_bag_header, list_wsi_h5, parse_wsi_name

_spec = importlib.util.spec_from_file_location(
    "hancock_mini_maker", Path(__file__).parent / "fixtures" / "hancock_mini" / "make_mini.py"
)
_maker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_maker)


@pytest.fixture()
def mini(tmp_path) -> Path:
    return _maker.make_mini(tmp_path / "Hancock_Dataset")


# --- clinical / pathological JSON -------------------------------------------------------------


def test_clinical_and_pathological_records(mini):
    clin = read_clinical(mini / "StructuredData" / "clinical_data.json")
    assert clin.index.tolist() == ["001", "002", "003", "004", "005", "006"]
    assert clin.loc["004", "survival_status_with_cause"] == "deceased not tumor specific"
    path = read_pathological(mini / "StructuredData" / "pathological_data.json")
    assert path.loc["001", "pT_stage"] == "pT4a"
    assert math.isnan(path.loc["003", "number_of_positive_lymph_nodes"])


def test_single_dict_form_is_refused(tmp_path):
    """HANCOTHON's per-patient object is not a cohort file (tests/test_bad_inputs.py has the details)."""
    f = tmp_path / "clinical_data.json"
    f.write_text(
        json.dumps({"patient_id": "012", "survival_status": "living", "days_to_last_information": 50})
    )
    with pytest.raises(HafInputError, match="single JSON object"):
        read_clinical(f)


def test_malformed_json_names_line_and_column(tmp_path):
    f = tmp_path / "clinical_data.json"
    f.write_text('[\n  {"patient_id": "001",\n   "sex": "male"\n  ,]\n')
    with pytest.raises(
        HafInputError, match=r"clinical_data\.json, line 4, column \d+: malformed JSON"
    ) as err:
        read_clinical(f)
    assert err.value.where.startswith("line 4")


def test_duplicated_patient_names_both_records(tmp_path):
    f = tmp_path / "pathological_data.json"
    f.write_text(json.dumps([{"patient_id": "001"}, {"patient_id": "002"}, {"patient_id": "001"}]))
    with pytest.raises(HafInputError, match=r"patient 001 appears twice \(records 1 and 3\)"):
        read_pathological(f)


@pytest.mark.parametrize("bad", [1, "1", "0001", None, "a01"])
def test_patient_id_must_be_three_digit_string(tmp_path, bad):
    f = tmp_path / "clinical_data.json"
    f.write_text(json.dumps([{"patient_id": "001"}, {"patient_id": bad}]))
    with pytest.raises(
        HafInputError, match=r"record 2, field 'patient_id': patient id must be a 3-digit string"
    ):
        read_clinical(f)


def test_bad_field_types_name_record_and_field(tmp_path):
    f = tmp_path / "clinical_data.json"
    f.write_text(json.dumps([{"patient_id": "001", "days_to_last_information": "12"}]))
    with pytest.raises(HafInputError, match=r"record 1 \(patient 001\), field 'days_to_last_information'"):
        read_clinical(f)
    f.write_text(json.dumps([{"patient_id": "001", "survival_status": "dead"}]))
    with pytest.raises(HafInputError, match="field 'survival_status'"):
        read_clinical(f)


# --- blood ------------------------------------------------------------------------------------


def test_blood_pivot_duplicate_rules(mini):
    long = read_blood(mini / "StructuredData" / "blood_data.json")
    assert "MCHC" in set(long["analyte"])  # the MHCH spelling is folded onto MCHC
    wide, n = pivot_blood(long, "closest_to_treatment")
    assert n == 2
    assert wide.loc["001", "Leukocytes"] == 9.0  # day 1 beats day 5
    assert wide.loc["003", "Leukocytes"] == 11.0  # only negative days: the one closest to 0
    assert wide.loc["001", "MCHC"] == 33.0
    first, _ = pivot_blood(long, "first")
    assert first.loc["001", "Leukocytes"] == 7.0 and first.loc["003", "Leukocytes"] == 12.0
    mean, _ = pivot_blood(long, "mean")
    assert mean.loc["001", "Leukocytes"] == 8.0 and mean.loc["003", "Leukocytes"] == 11.5


def test_blood_closest_to_treatment_ties_keep_file_order():
    long = pd.DataFrame(
        {
            "patient_id": ["001"] * 3,
            "analyte": ["Leukocytes"] * 3,
            "value": [1.0, 2.0, 3.0],
            "days_before_first_treatment": [4.0, 2.0, 2.0],
            "order": [1, 2, 3],
        }
    )
    wide, n = pivot_blood(long, "closest_to_treatment")
    assert wide.loc["001", "Leukocytes"] == 2.0 and n == 2


def test_blood_sex_specific_reference_flags(mini):
    long = read_blood(mini / "StructuredData" / "blood_data.json")
    wide, _ = pivot_blood(long)
    ref = read_blood_reference(mini / "StructuredData" / "blood_data_reference_ranges.json")
    sex = pd.Series({"001": "male", "002": "female", "003": "female"})
    flags = blood_range_flags(wide, sex, ref)
    # hemoglobin 11.0: below the female range (12-16); 14.0 male: inside 14-17.5
    assert flags.loc["003", "Hemoglobin"] == -1 and flags.loc["001", "Hemoglobin"] == 0
    assert flags.loc["003", "Leukocytes"] == 1  # 11 > 10
    assert math.isnan(flags.loc["002", "Hemoglobin"])  # not measured
    # the same value is normal for one sex and low for the other
    flags_male = blood_range_flags(wide, pd.Series({"003": "male"}), ref)
    assert flags_male.loc["003", "Hemoglobin"] == -1
    wide.loc["003", "Hemoglobin"] = 13.0
    assert blood_range_flags(wide, sex, ref).loc["003", "Hemoglobin"] == 0
    assert blood_range_flags(wide, pd.Series({"003": "male"}), ref).loc["003", "Hemoglobin"] == -1


def test_blood_bad_value_names_record(tmp_path):
    f = tmp_path / "blood_data.json"
    f.write_text(json.dumps([{"patient_id": "001", "analyte_name": "Leukocytes", "value": "high"}]))
    with pytest.raises(HafInputError, match=r"record 1 \(patient 001\), field 'value'"):
        read_blood(f)


# --- ICD --------------------------------------------------------------------------------------


def test_icd_normalisation_and_parsing():
    assert normalise_icd("C32.0 R") == "c320"
    assert normalise_icd(" C13.8 ") == "c138"
    assert normalise_icd("C32 R") == "c32"
    assert normalise_icd("D37.01") == "d370"
    text = "Befund [C32.0 R] und [C77.0], Text [nicht ein code] (C99.9) [C32.0 L]"
    assert parse_icd_text(text) == ["c320", "c770", "c320"]
    assert icd_patient_id("SurgeryReport_ICD_Codes_012.txt") == "012"
    assert icd_patient_id("anything-345.txt") == "345"
    assert icd_patient_id("ICD_1234.txt") is None


def test_icd_dir(mini):
    (mini / "TextData" / "icd_codes" / "README.txt").write_text("[C32.0]")
    codes, files, counts = read_icd_dir(mini / "TextData" / "icd_codes")
    assert codes["001"] == ["c320", "c770"] and codes["005"] == []
    assert counts["icd_files"] == 4 and counts["icd_files_without_codes"] == 1
    assert counts["icd_files_skipped_no_id"] == 1
    (mini / "TextData" / "icd_codes" / "other_001.txt").write_text("[C10.8]")
    with pytest.raises(HafInputError, match="a second ICD file for patient 001"):
        read_icd_dir(mini / "TextData" / "icd_codes")


# --- cell density -----------------------------------------------------------------------------


def test_cell_density_features_and_counts(mini):
    wide, counts = read_cell_density(
        mini / "TMA_CellDensityMeasurements" / "TMA_celldensity_measurements.csv"
    )
    assert wide.loc["001", "cd3_z"] == 150.0 and wide.loc["001", "cd3_inv"] == 50.0
    assert wide.loc["002", "cd8_z"] == 300.0  # the Missing core (999) was dropped
    assert wide.loc["003", "cd8_inv"] == 80.0
    assert counts["cell_rows_missing_dropped"] == 1
    assert counts["cell_rows_no_case_id_dropped"] == 1
    assert counts["cell_rows_other_marker_unused"] == 1
    assert list(wide.columns) == ["cd3_z", "cd3_inv", "cd8_z", "cd8_inv"]


def test_cell_density_image_names():
    assert parse_image_name("TumorCenter_CD3_block1.svs") == ("TumorCenter", "CD3", 1)
    assert parse_image_name("InvasionFront_PD-L1_block12.svs") == ("InvasionFront", "PDL1", 12)
    assert parse_image_name("block1.svs") is None


def test_cell_density_unparseable_image_names_line(mini):
    f = mini / "TMA_CellDensityMeasurements" / "TMA_celldensity_measurements.csv"
    lines = f.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace("InvasionFront_CD3_block1.svs", "scan_0003.svs")
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(HafInputError, match=r"line 4, field 'Image'"):
        read_cell_density(f)


def test_cell_density_bad_missing_and_case_id(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("Image,Missing,Case ID,Num Positive per mm^2\nTumorCenter_CD3_block1.svs,maybe,001,1\n")
    with pytest.raises(HafInputError, match=r"line 2, field 'Missing'"):
        read_cell_density(f)
    f.write_text("Image,Missing,Case ID,Num Positive per mm^2\nTumorCenter_CD3_block1.svs,False,1,1\n")
    with pytest.raises(HafInputError, match=r"line 2, field 'Case ID'"):
        read_cell_density(f)
    f.write_text("Image,Missing,Case ID\nTumorCenter_CD3_block1.svs,False,001\n")
    with pytest.raises(HafInputError, match="field 'Num Positive per mm\\^2'"):
        read_cell_density(f)


# --- TMA maps and core names ------------------------------------------------------------------


def test_core_names_and_maps(mini):
    core = parse_core_name("TumorCenter_PDL1_block22_x1_y10_patient265.png")
    assert (core.marker, core.block, core.x, core.y, core.patient_id) == ("PDL1", 22, 1, 10, "265")
    assert core.position == "10-1"
    assert canonical_marker("MHC-1") == canonical_marker("MHC1") == "MHC1"
    maps = read_tma_maps(mini / "TMA_Maps")
    assert maps[1][1]["1-2"] == "001" and maps[1][1]["2-2"] is None
    cores, counts = list_tma_cores(mini / "TMA_TumorCenter_Cores", ["HE"], maps)
    assert {k: len(v) for k, v in cores.items()} == {"001": 2, "002": 1}
    assert counts["tma_cores"] == 3 and counts["tma_cores_unchecked_no_map"] == 0
    both, _ = list_tma_cores(mini / "TMA_TumorCenter_Cores", ["HE", "MHC1"], maps)
    assert len(both["001"]) == 3 and "MHC-1" in both["001"][-1].name  # alias folder, after HE


def test_core_name_that_does_not_parse(mini):
    bad = mini / "TMA_TumorCenter_Cores" / "tma_tumorcenter_HE" / "TumorCenter_HE_block1_x1_patient001.png"
    bad.write_bytes(b"")
    with pytest.raises(HafInputError, match=r"TumorCenter_HE_block1_x1_patient001\.png.*does not parse"):
        list_tma_cores(mini / "TMA_TumorCenter_Cores", ["HE"], read_tma_maps(mini / "TMA_Maps"))
    with pytest.raises(HafInputError, match="3 digits"):
        parse_core_name("TumorCenter_HE_block1_x1_y1_patient12.png")


def test_tma_map_disagreeing_with_core_name(mini):
    folder = mini / "TMA_TumorCenter_Cores" / "tma_tumorcenter_HE"
    (folder / "TumorCenter_HE_block1_x1_y2_patient002.png").rename(
        folder / "TumorCenter_HE_block1_x1_y2_patient005.png"
    )
    with pytest.raises(HafInputError) as err:
        list_tma_cores(mini / "TMA_TumorCenter_Cores", ["HE"], read_tma_maps(mini / "TMA_Maps"))
    msg = str(err.value)
    assert "patient005.png" in msg and "TMA_Map_block1.csv" in msg and "patient '002'" in msg and "2-1" in msg


def test_tma_map_bad_rows(tmp_path):
    f = tmp_path / "TMA_Map_block3.csv"
    f.write_text("core,Case ID\n1-1,001\nA1,002\n")
    with pytest.raises(HafInputError, match=r"line 3, field 'core'"):
        read_tma_maps(tmp_path)
    f.write_text("core,Case ID\n1-1,001\n1-1,002\n")
    with pytest.raises(HafInputError, match="appears twice"):
        read_tma_maps(tmp_path)


# --- WSI h5 -----------------------------------------------------------------------------------


def test_wsi_listing_pools_a_slides_main_first(mini):
    slides = list_wsi_h5(mini / "WSI_UNI_encodings" / "WSI_PrimaryTumor")
    assert [p.name for p in slides["001"]] == ["PrimaryTumor_HE_001.h5", "PrimaryTumor_HE_001_a.h5"]
    assert check_bag_header(slides["001"][0], 8) == 5
    assert read_pooled_bag(slides["001"], 8).shape == (8, 8)
    assert parse_wsi_name("PrimaryTumor_HE_036_a.h5") == ("036", "a")
    with pytest.raises(HafInputError, match="does not parse"):
        parse_wsi_name("PrimaryTumor_HE_36.h5")


def test_wsi_h5_without_features_or_wrong_width(tmp_path):
    f = tmp_path / "PrimaryTumor_HE_001.h5"
    with h5py.File(f, "w") as h:
        h.create_dataset("coords", data=np.zeros((3, 2), dtype=np.int32))
    with pytest.raises(
        HafInputError, match=r"PrimaryTumor_HE_001\.h5, field 'features': no 'features' dataset"
    ):
        check_bag_header(f, 1024)
    with h5py.File(f, "w") as h:
        h.create_dataset("features", data=np.zeros((3, 512), dtype=np.float32))
    with pytest.raises(HafInputError, match=r"PrimaryTumor_HE_001\.h5.*512-d but the config expects 1024-d"):
        check_bag_header(f, 1024)
    with h5py.File(f, "w") as h:  # HANCOTHON's form of a missing slide
        h.create_dataset("features", data=np.zeros((0,), dtype=np.float32))
    assert check_bag_header(f, 1024) == 0


def test_duplicate_slide_in_two_site_folders(mini):
    root = mini / "WSI_UNI_encodings" / "WSI_PrimaryTumor"
    other = root / "WSI_PrimaryTumor_Larynx" / "h5_files"
    other.mkdir(parents=True)
    (other / "PrimaryTumor_HE_001.h5").write_bytes(b"")
    with pytest.raises(HafInputError, match="also found at"):
        list_wsi_h5(root)


# --- official splits --------------------------------------------------------------------------


def test_official_split(mini):
    split = read_split(mini / "DataSplits_DataDictionaries" / "dataset_split_in.json")
    assert split["003"] == "test" and split["001"] == "training" and len(split) == 6
    f = mini / "DataSplits_DataDictionaries" / "dataset_split_out.json"
    f.write_text(json.dumps([{"patient_id": "001", "dataset": "validation"}]))
    with pytest.raises(HafInputError, match=r"record 1 \(patient 001\), field 'dataset'"):
        read_split(f)
