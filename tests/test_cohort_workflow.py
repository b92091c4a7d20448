"""The cohort rules (manifest, targets, folds, tabular) run by Snakemake on the mini HANCOCK folder.

Exercises the thin rule scripts and the rule wiring with real data (demo disabled). About 8 s.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

_spec = importlib.util.spec_from_file_location(
    "hancock_mini_maker", Path(__file__).parent / "fixtures" / "hancock_mini" / "make_mini.py"
)
_maker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_maker)


def _snakemake(snakemake_cli, workdir: Path, config: dict, *targets: Path) -> subprocess.CompletedProcess:
    return snakemake_cli(workdir, "--", *map(str, targets), override=config, cores=1, timeout=240)


def test_cohort_rules_on_real_format_files(tmp_path, snakemake_cli):
    data = _maker.make_mini(tmp_path / "Hancock_Dataset")
    res, logs = tmp_path / "results", tmp_path / "logs"
    config = {
        "data_root": str(data),
        "results": str(res),
        "logs": str(logs),
        "demo": {"enabled": False},
        "stage1": {"wsi_dim": _maker.WSI_DIM},
        "cv": {"scheme": "kfold", "k": 2, "val_fraction": 0.3},
        "tabular": {"icd_min_df": 1},
    }
    run = _snakemake(
        snakemake_cli, tmp_path, config, res / "tabular" / "fold_0.npz", res / "tabular" / "fold_1.npz"
    )
    assert run.returncode == 0, run.stderr[-4000:]

    manifest = pd.read_csv(res / "cohort" / "manifest.tsv", sep="\t", dtype={"patient_id": str})
    assert manifest["patient_id"].tolist() == ["001", "002", "003", "004", "005", "006"]
    counts = json.loads((res / "cohort" / "modality_counts.json").read_text())
    assert counts["excluded_no_modality"] == ["007"]
    assert "1 patients excluded: no modality at all (007)" in (logs / "manifest.log").read_text()
    assert "label_reason censored_before_horizon    1" in (logs / "targets.log").read_text()
    folds = pd.read_csv(res / "cohort" / "folds.tsv", sep="\t", dtype={"patient_id": str})
    assert (
        len(folds) == 12
        and (folds.groupby("patient_id")["part"].apply(lambda p: (p == "test").sum()) == 1).all()
    )
    with np.load(res / "tabular" / "fold_0.npz") as npz:
        assert npz["patient_id"].tolist() == manifest["patient_id"].tolist()
        for m in ("cell", "clin", "path", "blood", "icd"):
            assert npz[f"x_{m}"].shape[0] == 6 and np.isfinite(npz[f"x_{m}"]).all()
            assert (npz[f"x_{m}"][~npz[f"present_{m}"]] == 0).all()

    # the official split: patients outside the file are counted in the log, not silently dropped
    config["cv"] = {"scheme": "official_in", "val_fraction": 0.3}
    config["results"], config["logs"] = str(tmp_path / "res2"), str(tmp_path / "logs2")
    run = _snakemake(snakemake_cli, tmp_path, config, tmp_path / "res2" / "cohort" / "folds.tsv")
    assert run.returncode == 0, run.stderr[-4000:]
    folds = pd.read_csv(tmp_path / "res2" / "cohort" / "folds.tsv", sep="\t", dtype={"patient_id": str})
    assert sorted(folds["patient_id"]) == ["001", "002", "003", "004", "005"]
    assert set(folds.loc[folds["part"] == "test", "patient_id"]) == {"003", "005"}
    log = (tmp_path / "logs2" / "folds.log").read_text()
    assert "1 cohort patients are not in" in log and "006" in log
    assert "1 patients of" in log  # 008 is in the split file but not in the cohort
