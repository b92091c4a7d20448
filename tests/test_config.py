"""Config failures stop the workflow before any job runs, with a message naming the key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import run_snakemake
from snakemake.utils import update_config, validate

from haf.config import check_data_root
from haf.errors import HafConfigError

REPO = Path(__file__).resolve().parents[1]


def _dry_run(tmp_path: Path, override: dict) -> subprocess.CompletedProcess:
    return run_snakemake(tmp_path, "--dry-run", override=override, timeout=120)


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"cv": {"k": 1}}, ["cv", "'k'", "minimum of 2"]),
        ({"target": {"rule": "five_years"}}, ["target", "rule", "five_years"]),
        ({"evaluation": {"repeats": 0}}, ["evaluation", "repeats"]),
        ({"run_methods": ["haf", "not_a_method"]}, ["run_methods", "not_a_method"]),
        (
            {"demo": {"enabled": False}, "data_root": "/nonexistent/Hancock_Dataset"},
            ["data_root", "/nonexistent/Hancock_Dataset"],
        ),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, override, expected):
    run = _dry_run(tmp_path, override)
    assert run.returncode != 0
    message = run.stderr + run.stdout
    for word in expected:
        assert word in message, f"{word!r} not in:\n{message[-2000:]}"
    assert "Job stats" not in message and not (tmp_path / "results").exists()


def test_default_config_dry_run_shows_the_dag(tmp_path):
    run = _dry_run(tmp_path, {"results": str(tmp_path / "r"), "logs": str(tmp_path / "l")})
    assert run.returncode == 0, run.stderr[-3000:]
    for rule in (
        "demo_cohort",
        "manifest",
        "extract_tma",
        "stage1",
        "align",
        "fusion",
        "fusion_joint",
        "comparator",
        "table1",
    ):
        assert f"rule {rule}:" in run.stdout or f"localrule {rule}:" in run.stdout, rule


def test_hancock_preset_is_valid_and_needs_its_data_root(default_config):
    update_config(default_config, yaml.safe_load((REPO / "config" / "hancock.yaml").read_text()))
    validate(default_config, str(REPO / "config" / "schema.yaml"))
    assert default_config["demo"]["enabled"] is False and default_config["extract"]["encoder"] == "uni"
    default_config["data_root"] = "/nonexistent/Hancock_Dataset"
    with pytest.raises(HafConfigError, match="data_root"):
        check_data_root(default_config)
