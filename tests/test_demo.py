"""The SYNTHETIC demo cohort: exact HANCOCK layout and formats (read with plain json/pandas/h5py/PIL,
as HANCOCK.md describes them), determinism, missingness, planted signal and label balance."""

from __future__ import annotations

import hashlib
import json
import re
import runpy
import types
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.metrics import roc_auc_score

from haf.demo import (
    DEFAULT_PATHS,
    DEFAULT_SIGNAL,
    README_MARKER,
    generate_demo_cohort,
    wsi_signal_direction,
)
from haf.demo.common import AVAILABILITY
from haf.demo.wsi import wsi_space
from haf.errors import HafConfigError

REPO = Path(__file__).resolve().parents[1]
CORE_RE = re.compile(r"^TumorCenter_(\w+)_block(\d+)_x(\d+)_y(\d+)_patient(\d{3})\.png$")
H5_RE = re.compile(r"^PrimaryTumor_HE_(\d{3})(_a)?\.h5$")
ICD_RE = re.compile(r"\[([A-Z0-9\.\s]+)\]")
SITE_FOLDER = {
    "CUP": {"CUP"},
    "Hypopharynx": {"Hypopharynx"},
    "Larynx": {"Larynx"},
    "Oral_Cavity": {"OralCavity"},
    "Oropharynx": {"Oropharynx_Part1", "Oropharynx_Part2"},
}
CELL_COLUMNS = [
    "Image",
    "Name",
    "Missing",
    "Centroid X \u00b5m",
    "Centroid Y \u00b5m",
    "Case ID",
    "Num Detections",
    "Num Negative",
    "Num Positive",
    "Positive %",
    "Num Positive per mm^2",
]
SMALL_N, SMALL_SEED = 36, 11
LARGE_N, LARGE_SEED = 400, 5


def _generate(root: Path, n: int, seed: int, **kw) -> dict:
    kw.setdefault("signal", DEFAULT_SIGNAL)
    kw.setdefault("paths", DEFAULT_PATHS)
    return generate_demo_cohort(root, n_patients=n, seed=seed, **kw)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    """N=36 at full size (256 px cores, default bag sizes)."""
    root = tmp_path_factory.mktemp("demo_small") / "Hancock_Dataset"
    return root, _generate(root, SMALL_N, SMALL_SEED, core_px=256, wsi_bag_size=(24, 160))


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> tuple[Path, dict]:
    """N=400 with tiny images and bags (rates and signal do not depend on their size)."""
    root = tmp_path_factory.mktemp("demo_large") / "Hancock_Dataset"
    return root, _generate(root, LARGE_N, LARGE_SEED, core_px=64, wsi_bag_size=(20, 40))


def _truth(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "demo_truth.tsv", sep="\t", comment="#", dtype={"patient_id": str}).set_index(
        "patient_id"
    )


def _read_records(path: Path) -> pd.DataFrame:
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(raw, list) and all(isinstance(r, dict) for r in raw)
    return pd.read_json(path, orient="records", dtype={"patient_id": str})


def _h5_files(root: Path) -> list[Path]:
    return sorted((root / DEFAULT_PATHS["wsi_h5"]).glob("WSI_PrimaryTumor_*/h5_files/*.h5"))


def _dark_fraction(path: Path) -> float:
    pixels = np.asarray(Image.open(path)).astype(float)
    tissue = pixels.mean(axis=-1) < 230
    return float(((pixels[..., 0] < 160) & tissue).sum() / max(tissue.sum(), 1))


# ------------------------------------------------------------------------------------------ formats


def test_structured_json_records(small, large):
    root, _ = small
    clinical = _read_records(root / DEFAULT_PATHS["clinical"])
    patho = _read_records(root / DEFAULT_PATHS["pathological"])
    ids = [f"{i:03d}" for i in range(1, SMALL_N + 1)]
    for frame in (clinical, patho):
        assert frame["patient_id"].tolist() == ids
    assert set(clinical["sex"]) <= {"male", "female"}
    assert set(clinical["smoking_status"].dropna()) <= {"smoker", "non-smoker", "former"}
    assert set(clinical["survival_status"]) <= {"living", "deceased"}
    assert set(clinical["survival_status_with_cause"]) <= {
        "living",
        "deceased tumor specific",
        "deceased not tumor specific",
        "deceased",
    }
    assert (
        (clinical["survival_status"] == "deceased")
        .eq(clinical["survival_status_with_cause"] != "living")
        .all()
    )
    assert clinical["days_to_last_information"].between(9, 7000).all()
    for k in range(1, 5):
        assert f"metastasis_{k}_locations" in clinical and f"days_to_metastasis_{k}" in clinical
    assert set(patho["primary_tumor_site"]) <= set(SITE_FOLDER)
    assert set(patho["hpv_association_p16"]) <= {"positive", "negative", "not_tested"}
    assert set(patho["resection_status"]) <= {"R0", "R1", "R2", "RX"}
    raw = json.loads((root / DEFAULT_PATHS["pathological"]).read_text(encoding="utf-8"))
    margins = [r["closest_resection_margin_in_cm"] for r in raw]
    assert all(m is None or isinstance(m, str) for m in margins) and any(m is not None for m in margins)

    # over 400 patients HANCOCK's nulls all show up
    big = json.loads((large[0] / DEFAULT_PATHS["pathological"]).read_text(encoding="utf-8"))
    nodes = [r["number_of_positive_lymph_nodes"] for r in big]
    assert any(v is None for v in nodes) and any(isinstance(v, int) and v > 0 for v in nodes)
    assert all((r["pN_stage"] == "NX") == (r["number_of_positive_lymph_nodes"] is None) for r in big)
    assert any(r["closest_resection_margin_in_cm"] == "<0.1" for r in big)
    assert any(r["infiltration_depth_in_mm"] is None for r in big)
    assert any(r["grading"] == "hpv_association_p16" for r in big)
    big_clin = json.loads((large[0] / DEFAULT_PATHS["clinical"]).read_text(encoding="utf-8"))
    assert any(r["smoking_status"] is None for r in big_clin)
    assert any(r["primarily_metastasis"] == "yes" for r in big_clin)


def test_blood_long_format_and_reference_ranges(small, large):
    root, _ = small
    blood = _read_records(root / DEFAULT_PATHS["blood"])
    assert list(blood.columns) == [
        "patient_id",
        "value",
        "unit",
        "analyte_name",
        "LOINC_code",
        "LOINC_name",
        "group",
        "days_before_first_treatment",
    ]
    assert blood["patient_id"].str.fullmatch(r"\d{3}").all()
    assert blood["LOINC_code"].str.fullmatch(r"[0-9]+-[0-9]").all()
    assert (blood["days_before_first_treatment"] >= 0).all()
    assert blood["value"].notna().all()
    assert blood.loc[blood["analyte_name"] == "INR", "unit"].isna().all()
    assert "x10^3/\u00b5l" in set(blood["unit"])
    ref = _read_records(root / DEFAULT_PATHS["blood_reference"])
    assert len(ref) == 38 and ref["LOINC_name"].is_unique
    assert set(blood["LOINC_name"]) <= set(ref["LOINC_name"])
    # HANCOCK's official selection yields its 16 BLOOD_FEATURES
    chosen = [
        p
        for p in ref[(ref.group == "Hematology") & ref.normal_female_max.notnull()].LOINC_name
        if p[-1] != "%"
    ]
    assert len(chosen) == 16
    assert "Erythrocyte distribution width [Ratio]" in chosen
    wide = blood.pivot_table(index="patient_id", columns="LOINC_name", values="value", aggfunc="first")
    assert set(chosen) <= set(wide.columns)
    # some patients have an analyte measured twice, on different days
    for cohort in (root, large[0]):
        frame = _read_records(cohort / DEFAULT_PATHS["blood"])
        dup = frame[frame.duplicated(["patient_id", "LOINC_name"], keep=False)]
        assert len(dup) > 0
        assert (dup.groupby(["patient_id", "LOINC_name"])["days_before_first_treatment"].nunique() == 2).all()


def test_icd_text_files(small):
    root, summary = small
    files = sorted((root / DEFAULT_PATHS["icd_dir"]).glob("*.txt"))
    assert len(files) == summary["modality_counts"]["icd"] > 0
    for path in files:
        pid = re.search(r"([0-9]{3}).txt", path.name).group(1)
        assert path.name == f"SurgeryReport_ICD_Codes_{pid}.txt"
        text = path.read_text(encoding="utf-8")
        assert len(text.strip().splitlines()) == 1
        codes = ICD_RE.findall(text)
        assert codes, path
        assert all(re.fullmatch(r"[A-Z]\d{2}(\.\d{1,2})?( [RLB])?", c) for c in codes), codes
    assert any(" " in c for p in files for c in ICD_RE.findall(p.read_text(encoding="utf-8")))


def test_tma_maps_cell_density_and_core_names_agree(small):
    root, summary = small
    maps = {}
    for path in sorted((root / DEFAULT_PATHS["tma_maps"]).glob("TMA_Map_block*.csv")):
        block = int(re.fullmatch(r"TMA_Map_block(\d+)\.csv", path.name).group(1))
        frame = pd.read_csv(path, dtype={"Case ID": str})
        assert list(frame.columns) == ["core", "Case ID"] and len(frame) == 72
        rc = frame["core"].str.extract(r"^(\d+)-(\d+)$").astype(int)
        assert rc[0].between(1, 12).all() and rc[1].between(1, 6).all() and frame["core"].is_unique
        assert frame["Case ID"].dropna().str.fullmatch(r"\d{3}").all()
        assert frame["Case ID"].isna().any()  # empty positions
        assert (frame["Case ID"].value_counts() == 2).all()  # two cores per patient
        maps[block] = dict(zip(frame["core"], frame["Case ID"], strict=True))
    assert maps

    cores = sorted((root / DEFAULT_PATHS["tma_cores"] / "tma_tumorcenter_HE").iterdir())
    assert len(cores) == summary["files"]["tma_cores"]["HE"] > 0
    per_patient: dict[str, int] = {}
    for path in cores:
        m = CORE_RE.match(path.name)
        assert m, path.name
        marker, block, col, row, pid = (
            m.group(1),
            int(m.group(2)),
            int(m.group(3)),
            int(m.group(4)),
            m.group(5),
        )
        assert marker == "HE" and 1 <= col <= 6 and 1 <= row <= 12
        assert maps[block][f"{row}-{col}"] == pid  # the map agrees with the file name
        per_patient[pid] = per_patient.get(pid, 0) + 1
    assert max(per_patient.values()) <= 2 and len(per_patient) == summary["modality_counts"]["tma"]

    cell = pd.read_csv(root / DEFAULT_PATHS["cell_density"], dtype={"Case ID": str})
    assert list(cell.columns) == CELL_COLUMNS
    assert cell["Missing"].dtype == bool and cell["Missing"].any() and cell["Case ID"].isna().any()
    parsed = cell["Image"].str.extract(r"^(TumorCenter|InvasionFront)_([A-Za-z0-9]+)_block(\d+)\.svs$")
    assert parsed.notna().all().all()
    assert set(parsed[1]) == {"CD3", "CD8"} and set(parsed[0]) == {"TumorCenter", "InvasionFront"}
    for block, name, case in zip(parsed[2].astype(int), cell["Name"], cell["Case ID"], strict=True):
        expected = maps[block][name]
        assert (case == expected) or (pd.isna(case) and pd.isna(expected))
    present = cell[~cell["Missing"]]
    assert present["Num Positive per mm^2"].notna().all() and (present["Num Positive per mm^2"] >= 0).all()
    assert (present["Num Detections"] == present["Num Positive"] + present["Num Negative"]).all()
    assert cell.loc[cell["Missing"], "Num Positive per mm^2"].isna().all()
    measured = cell[~cell["Missing"] & cell["Case ID"].notna()]["Case ID"].nunique()
    assert measured == summary["modality_counts"]["cell"]


def test_core_images_look_like_cores(small):
    root, _ = small
    paths = sorted((root / DEFAULT_PATHS["tma_cores"] / "tma_tumorcenter_HE").iterdir())[:6]
    for path in paths:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (256, 256)
            pixels = np.asarray(img).astype(int)
        corners = np.concatenate([pixels[:8, :8], pixels[:8, -8:], pixels[-8:, :8], pixels[-8:, -8:]])
        assert corners.mean() > 232  # white background around the core
        tissue = pixels.mean(axis=-1) < 230
        assert 0.25 < tissue.mean() < 0.75  # a roughly circular core fills part of the image
        assert pixels[pixels.shape[0] // 2 - 20 : pixels.shape[0] // 2 + 20].std() > 10  # texture


def test_wsi_bags(small, large):
    root, summary = small
    patho = _read_records(root / DEFAULT_PATHS["pathological"]).set_index("patient_id")
    files = _h5_files(root)
    assert len(files) == summary["files"]["wsi"]["files"]
    main = set()
    sizes = []
    for path in files:
        m = H5_RE.match(path.name)
        assert m, path.name
        pid = m.group(1)
        site_folder = path.parent.parent.name.removeprefix("WSI_PrimaryTumor_")
        assert path.parent.name == "h5_files"
        assert site_folder in SITE_FOLDER[patho.loc[pid, "primary_tumor_site"]]
        with h5py.File(path, "r") as handle:
            feats, coords = handle["features"][()], handle["coords"][()]
        assert feats.dtype == np.float32 and feats.ndim == 2 and feats.shape[1] == 1024
        assert np.issubdtype(coords.dtype, np.integer) and coords.shape == (len(feats), 2)
        assert (coords >= 0).all() and np.isfinite(feats).all()
        if m.group(2) is None:
            main.add(pid)
            sizes.append(len(feats))
    assert len(main) == summary["modality_counts"]["wsi"]
    assert min(sizes) >= 24 and max(sizes) <= 160 and len(set(sizes)) > 1
    # second slides (_a) belong to patients with a main slide
    big = _h5_files(large[0])
    seconds = [H5_RE.match(p.name).group(1) for p in big if p.name.endswith("_a.h5")]
    mains = {H5_RE.match(p.name).group(1) for p in big if not p.name.endswith("_a.h5")}
    assert seconds and set(seconds) <= mains
    assert {p.parent.parent.name for p in big} >= {
        "WSI_PrimaryTumor_OralCavity",
        "WSI_PrimaryTumor_Oropharynx_Part1",
        "WSI_PrimaryTumor_Oropharynx_Part2",
    }


def test_split_files(small):
    root, _ = small
    patho = _read_records(root / DEFAULT_PATHS["pathological"]).set_index("patient_id")
    folder = root / DEFAULT_PATHS["splits"]
    for name in ("dataset_split_in.json", "dataset_split_out.json", "dataset_split_Oropharynx.json"):
        frame = _read_records(folder / name)
        assert list(frame.columns) == ["patient_id", "dataset"]
        assert frame["patient_id"].tolist() == patho.index.tolist()
        assert set(frame["dataset"]) == {"training", "test"}
        if name != "dataset_split_Oropharynx.json":
            assert (frame["dataset"] == "test").sum() == int(0.2 * SMALL_N)
    oro = _read_records(folder / "dataset_split_Oropharynx.json").set_index("patient_id")["dataset"]
    assert ((oro == "test") == (patho["primary_tumor_site"] == "Oropharynx")).all()


def test_everything_is_labelled_synthetic(small, tmp_path):
    root, summary = small
    on_disk = json.loads((root / "demo_cohort.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["synthetic"] is True and "SYNTHETIC" in on_disk["note"]
    assert (root / "README.txt").read_text(encoding="utf-8").startswith(README_MARKER)
    assert (root / "demo_truth.tsv").read_text(encoding="utf-8").startswith("# SYNTHETIC ground truth")
    with h5py.File(_h5_files(root)[0], "r") as handle:
        assert "SYNTHETIC" in handle.attrs["synthetic"]
    truth = _truth(root)
    assert truth.index.tolist() == [f"{i:03d}" for i in range(1, SMALL_N + 1)]
    for m, count in summary["modality_counts"].items():
        if m not in ("clin", "path"):
            assert truth[f"has_{m}"].sum() == count


# ------------------------------------------------------------------------------------ determinism


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_files_different_seed_different(small, tmp_path):
    root, _ = small
    again = tmp_path / "again"
    _generate(again, SMALL_N, SMALL_SEED, core_px=256, wsi_bag_size=(24, 160))
    assert _digests(again) == _digests(root)

    a, b = tmp_path / "a", tmp_path / "b"
    _generate(a, 25, 1, core_px=64, wsi_bag_size=(4, 8))
    _generate(b, 25, 2, core_px=64, wsi_bag_size=(4, 8))
    da, db = _digests(a), _digests(b)
    for rel in (
        DEFAULT_PATHS["clinical"],
        DEFAULT_PATHS["blood"],
        DEFAULT_PATHS["cell_density"],
        "demo_truth.tsv",
    ):
        assert da[rel] != db[rel], rel
    common_h5 = [k for k in da if k.endswith(".h5") and k in db]
    assert common_h5 and all(da[k] != db[k] for k in common_h5)


# ---------------------------------------------------------------------------- rates and signal


def test_missingness_close_to_hancock(large):
    root, summary = large
    counts = summary["modality_counts"]
    assert counts["clin"] == counts["path"] == LARGE_N  # so no patient is without a modality
    for m, rate in AVAILABILITY.items():
        assert abs(counts[m] / LARGE_N - rate) < 0.04, (m, counts[m])
    # the counts are what a reader finds in the files
    wsi = {H5_RE.match(p.name).group(1) for p in _h5_files(root)}
    assert len(wsi) == counts["wsi"]
    icd = list((root / DEFAULT_PATHS["icd_dir"]).glob("*.txt"))
    assert len(icd) == counts["icd"]
    blood = pd.read_json(root / DEFAULT_PATHS["blood"], dtype={"patient_id": str})
    assert blood["patient_id"].nunique() == counts["blood"]
    tma = {CORE_RE.match(p.name).group(5) for p in (root / DEFAULT_PATHS["tma_cores"]).rglob("*.png")}
    assert len(tma) == counts["tma"]


def test_survival_and_five_year_label_balance(large):
    root, summary = large
    clinical = pd.read_json(root / DEFAULT_PATHS["clinical"], dtype={"patient_id": str})
    event = clinical["survival_status"] == "deceased"
    time = clinical["days_to_last_information"]
    assert 0.22 <= event.mean() <= 0.38
    assert 2.8 * 365.25 <= time[~event].median() <= 4.8 * 365.25
    positive = event & (time <= 1825)
    labelled = positive | (time > 1825)
    assert labelled.mean() >= 0.5
    assert 0.33 <= positive[labelled].mean() <= 0.52
    assert summary["survival"]["horizon_labelled"] == labelled.sum()
    assert summary["survival"]["horizon_positive"] == positive.sum()
    truth = _truth(root)
    lab = truth["label_1825d"].dropna()
    assert roc_auc_score(lab, truth.loc[lab.index, "latent_risk"]) > 0.7


def test_planted_signal_per_modality(large):
    root, _ = large
    truth = _truth(root)
    r = truth["latent_risk"]
    for m, s in DEFAULT_SIGNAL.items():
        expected = s / np.sqrt(1 + s * s)
        assert abs(np.corrcoef(truth[f"x_{m}"], r)[0, 1] - expected) < 0.12, m
    lab = truth["label_1825d"].dropna()

    patho = pd.read_json(root / DEFAULT_PATHS["pathological"], dtype={"patient_id": str}).set_index(
        "patient_id"
    )
    rank = {"pTis": 0, "pT1": 1, "pT1a": 1, "pT1b": 1, "pT2": 2, "pT3": 3, "pT4a": 4, "pT4b": 5}
    stage = patho["pT_stage"].map(rank).dropna()
    keep = lab.index.intersection(stage.index)
    assert roc_auc_score(lab[keep], stage[keep]) > 0.62  # a strong modality

    blood = pd.read_json(root / DEFAULT_PATHS["blood"], dtype={"patient_id": str})
    wide = blood.pivot_table(index="patient_id", columns="analyte_name", values="value", aggfunc="first")
    rho = wide.apply(lambda col: col.corr(r.reindex(col.index), method="spearman"))
    assert rho.abs().max() < 0.2  # blood is pure noise at strength 0

    # WSI: the risk sits in the tumour instances; attention to them beats averaging all instances
    space = wsi_space(LARGE_SEED)
    d = wsi_signal_direction(LARGE_SEED)
    attended, averaged = {}, {}
    for path in _h5_files(root):
        if path.name.endswith("_a.h5"):
            continue
        with h5py.File(path, "r") as handle:
            feats = handle["features"][()]
        tumour = np.argsort(feats @ space.tumour)[-max(1, int(0.1 * len(feats))) :]
        pid = H5_RE.match(path.name).group(1)
        attended[pid] = float((feats[tumour] @ d).mean())
        averaged[pid] = float((feats @ d).mean())
    attended, averaged = pd.Series(attended), pd.Series(averaged)
    corr_att = attended.corr(r.reindex(attended.index))
    corr_avg = averaged.corr(r.reindex(averaged.index))
    assert corr_att > 0.6 and corr_att > corr_avg + 0.2


def test_core_texture_follows_tma_view(small):
    root, _ = small
    truth = _truth(root)
    dark: dict[str, list[float]] = {}
    for path in (root / DEFAULT_PATHS["tma_cores"] / "tma_tumorcenter_HE").iterdir():
        dark.setdefault(CORE_RE.match(path.name).group(5), []).append(_dark_fraction(path))
    frac = pd.Series({pid: np.mean(v) for pid, v in dark.items()})
    assert frac.corr(truth.loc[frac.index, "x_tma"], method="spearman") > 0.8


def test_ihc_marker_cores(tmp_path):
    root = tmp_path / "ihc"
    summary = _generate(root, 20, 3, core_px=64, wsi_bag_size=(2, 4), markers=("HE", "CD3"))
    he = {
        p.name.replace("_HE_", "_X_") for p in (root / "TMA_TumorCenter_Cores/tma_tumorcenter_HE").iterdir()
    }
    cd3 = {
        p.name.replace("_CD3_", "_X_") for p in (root / "TMA_TumorCenter_Cores/tma_tumorcenter_CD3").iterdir()
    }
    assert he == cd3 and summary["files"]["tma_cores"]["CD3"] == len(cd3) > 0


# ------------------------------------------------------------------------------- safety and errors


def test_refuses_foreign_folder_and_replaces_an_old_demo(tmp_path):
    foreign = tmp_path / "real"
    (foreign / "StructuredData").mkdir(parents=True)
    (foreign / "StructuredData" / "clinical_data.json").write_text("[]")
    with pytest.raises(HafConfigError, match="refusing"):
        _generate(foreign, 20, 1, core_px=64, wsi_bag_size=(2, 4))
    assert (foreign / "StructuredData" / "clinical_data.json").read_text() == "[]"

    demo = tmp_path / "demo"
    _generate(demo, 30, 1, core_px=64, wsi_bag_size=(2, 4))
    _generate(demo, 20, 1, core_px=64, wsi_bag_size=(2, 4))
    ids = {m.group(1) for p in demo.rglob("*") if (m := re.search(r"(\d{3})(_a)?\.(png|h5|txt)$", p.name))}
    assert ids and max(ids) <= "020"  # no stale patients from the larger cohort


@pytest.mark.parametrize(
    "change, match",
    [
        ({"n_patients": 0}, "n_patients"),
        ({"n_patients": 1000}, "n_patients"),
        ({"signal": {k: v for k, v in DEFAULT_SIGNAL.items() if k != "icd"}}, "signal.icd"),
        ({"signal": {**DEFAULT_SIGNAL, "wsi": -1.0}}, "signal.wsi"),
        ({"signal": {**DEFAULT_SIGNAL, "genes": 1.0}}, "genes"),
        ({"wsi_bag_size": (10, 5)}, "wsi_bag_size"),
        ({"paths": {**DEFAULT_PATHS, "icd_dir": "/abs/icd"}}, "paths.icd_dir"),
        ({"paths": {**DEFAULT_PATHS, "splits": "../out"}}, "paths.splits"),
        ({"markers": ("H&E",)}, "markers"),
    ],
)
def test_bad_arguments_name_the_key(tmp_path, change, match):
    kwargs = {"n_patients": 20, "seed": 1, "signal": DEFAULT_SIGNAL, "paths": DEFAULT_PATHS, **change}
    with pytest.raises(HafConfigError, match=match):
        generate_demo_cohort(tmp_path / "x", **kwargs)


def test_defaults_match_the_config_schema(default_config):
    assert default_config["demo"]["signal"] == DEFAULT_SIGNAL
    assert default_config["paths"] == DEFAULT_PATHS
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    assert schema["properties"]["demo"]["properties"]["n_patients"]["maximum"] <= 999


def test_rule_script_is_a_thin_adapter(tmp_path, default_config):
    demo = {**default_config["demo"], "n_patients": 20, "core_px": 64, "wsi_bag_size": [2, 4]}
    out = tmp_path / "data" / "demo_cohort.json"
    fake = types.SimpleNamespace(
        params=types.SimpleNamespace(demo=demo, paths=default_config["paths"], markers=["HE"]),
        output=[str(out)],
        log=[str(tmp_path / "logs" / "demo_cohort.log")],
    )
    script = REPO / "workflow" / "scripts" / "make_demo_cohort.py"
    runpy.run_path(str(script), init_globals={"snakemake": fake}, run_name="__main__")
    assert json.loads(out.read_text())["n_patients"] == 20
    log = (tmp_path / "logs" / "demo_cohort.log").read_text()
    assert "SYNTHETIC" in log and "modality wsi" in log

    fake.params.demo = {**demo, "enabled": False}
    with pytest.raises(HafConfigError, match="demo.enabled"):
        runpy.run_path(str(script), init_globals={"snakemake": fake}, run_name="__main__")


def _control_latent(control: str, n: int = 3000):
    from haf.demo.latent import apply_control, control_signal, draw_latent
    from haf.modalities import MODALITIES

    signal = control_signal({m: 1.0 for m in MODALITIES}, control)
    return signal, apply_control(draw_latent(n, 7, signal), control, 7)


def _risk_time_corr(latent) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(latent.risk, latent.time).statistic)


def test_controls_remove_the_signal_they_name():
    # none: higher latent risk, shorter follow-up (the planted signal the claims are tested against)
    signal, plain = _control_latent("none")
    assert all(v == 1.0 for v in signal.values()) and _risk_time_corr(plain) < -0.3
    signal, silent = _control_latent("no_signal")
    assert set(signal.values()) == {0.0}
    # permuted_labels: the features still follow each patient's risk, the outcomes do not
    _, permuted = _control_latent("permuted_labels")
    assert abs(_risk_time_corr(permuted)) < 0.05
    assert sorted(permuted.time) == sorted(plain.time) and not np.array_equal(permuted.time, plain.time)
    for m in plain.views:
        np.testing.assert_array_equal(permuted.views[m], plain.views[m])
    # missing_noise: blood carries no signal, but its presence falls with the latent risk
    signal, noisy = _control_latent("missing_noise")
    assert signal["blood"] == 0.0 and signal["clin"] == 1.0
    blood = noisy.available["blood"]
    assert noisy.risk[blood].mean() < noisy.risk[~blood].mean() - 0.5
    assert 0.5 < blood.mean() < 0.8  # about 2/3 present (sigmoid(1.0 - 1.5 r))


def test_unknown_control_is_a_config_error(tmp_path):
    from haf.modalities import MODALITIES

    with pytest.raises(HafConfigError, match="demo.control"):
        generate_demo_cohort(
            tmp_path / "d", n_patients=10, seed=1, signal={m: 1.0 for m in MODALITIES}, control="shuffle"
        )
