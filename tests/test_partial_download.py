"""A download without the TMA core archive still runs every method that can do without TMA.

The mini HANCOCK folder (real formats) without its ``TMA_TumorCenter_Cores`` folder: the DAG schedules
no extraction and no TMA Stage 1, the fusion methods run with TMA absent for every patient, and a
method that needs TMA alone fails before any job, naming itself and what is missing.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "hancock_mini_maker", Path(__file__).parent / "fixtures" / "hancock_mini" / "make_mini.py"
)
_maker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_maker)


def _config(tmp_path, data, methods):
    return {
        "data_root": str(data),
        "results": str(tmp_path / "results"),
        "logs": str(tmp_path / "logs"),
        "demo": {"enabled": False},
        "stage1": {"wsi_dim": _maker.WSI_DIM},
        "cv": {"scheme": "kfold", "k": 2, "val_fraction": 0.3},
        "run_methods": methods,
    }


def _without_cores(tmp_path):
    data = _maker.make_mini(tmp_path / "Hancock_Dataset")
    cores = data / "TMA_TumorCenter_Cores"
    if cores.exists():
        shutil.rmtree(cores)
    return data


def test_no_tma_cores_schedules_no_tma_work(tmp_path, snakemake_cli):
    data = _without_cores(tmp_path)
    methods = ["wsi_clam", "fusion_mlp_all", "late_fusion", "haf_nodetach_warm", "coxnet_all"]
    config = _config(tmp_path, data, methods)
    dry = snakemake_cli(tmp_path, "--dry-run", override=config, cores=1, timeout=240)
    assert dry.returncode == 0, dry.stderr[-4000:]
    jobs = set(re.findall(r"^(?:localrule|rule) (\w+):", dry.stdout, flags=re.M))
    assert "extract_tma" not in jobs and {"stage1", "fusion", "comparator", "fusion_joint", "sksurv"} <= jobs
    # the warm-started ablation reads the WSI Stage 1 models only (no TMA model exists to start from)
    assert "stage1/tma/" not in dry.stdout and "stage1/wsi/fold_1/model.pt" in dry.stdout
    assert "no tma data" in dry.stderr


def test_a_method_that_needs_tma_alone_fails_before_any_job(tmp_path, snakemake_cli):
    data = _without_cores(tmp_path)
    config = _config(tmp_path, data, ["wsi_clam", "tma_clam"])
    dry = snakemake_cli(tmp_path, "--dry-run", override=config, cores=1, timeout=240)
    assert dry.returncode != 0
    output = dry.stdout + dry.stderr
    assert "tma_clam needs tma" in output and "remove tma_clam from run_methods" in output
