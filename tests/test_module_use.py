"""The workflow reused as a Snakemake module from another folder, without PYTHONPATH and without
installing the library: ``module haf: snakefile: ...`` + ``use rule * from haf as haf_*``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_an_outer_workflow_imports_and_runs_the_cohort_rules(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["demo"].update(n_patients=20, core_px=64, wsi_bag_size=[2, 4])
    config["cv"] = {"k": 3}
    config.update(
        data_root=str(tmp_path / "data"), results=str(tmp_path / "results"), logs=str(tmp_path / "logs")
    )
    (tmp_path / "outer.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "Snakefile").write_text(
        'configfile: "outer.yaml"\n\n'
        f'module haf:\n    snakefile: "{REPO / "Snakefile"}"\n    config: config\n\n'
        "use rule * from haf as haf_*\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(tmp_path)]
    dry = subprocess.run([*cmd, "-n"], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "haf_stage1" in dry.stdout and "haf_table1" in dry.stdout
    folds = tmp_path / "results" / "cohort" / "folds.tsv"
    run = subprocess.run(
        [*cmd, str(folds)], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert folds.is_file() and "haf.folds" in (tmp_path / "logs" / "folds.log").read_text()
