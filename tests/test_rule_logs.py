"""A rule that fails writes its fatal error (type, message, file, field) into its own log file.

Before, the error reached only the Snakemake console and the job's log ended before it.
"""

from __future__ import annotations

from conftest import run_snakemake


def test_a_failing_rule_logs_its_fatal_error(tmp_path):
    config = {
        "data_root": str(tmp_path / "data"),
        "results": str(tmp_path / "results"),
        "logs": str(tmp_path / "logs"),
        "demo": {"n_patients": 20, "core_px": 64, "wsi_bag_size": [2, 4]},
        "cv": {"k": 20},  # more folds than any label stratum has patients: the folds rule fails
    }
    run = run_snakemake(tmp_path, "--", str(tmp_path / "results" / "cohort" / "folds.tsv"), override=config)
    assert run.returncode != 0
    assert "Error in rule folds" in run.stderr, run.stderr[-3000:]
    log = (tmp_path / "logs" / "folds.log").read_text()
    assert "fatal HafInputError" in log, log
    assert "lower cv.k" in log and "field: cv.k" in log
