"""Shared fixtures: the repository root and the default config with schema defaults filled in."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# rule scripts run in-process by some tests import their first module, _haf_rule, from their own
# folder, which Snakemake appends to sys.path for a script job; do the same here
sys.path.append(str(REPO / "workflow" / "scripts"))


@pytest.fixture()
def one_thread():
    """torch on one intra-op thread for the test, restored after (``pytest.mark.usefixtures("one_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def _default_config() -> dict:
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "config" / "schema.yaml"))
    return config


@pytest.fixture(scope="session")
def workflow_rules() -> list[dict]:
    """The Snakefile's rules as ``tests/workflows/list_rules.py`` reports them (loaded once per session)."""
    spec = importlib.util.spec_from_file_location(
        "_haf_list_rules", REPO / "tests" / "workflows" / "list_rules.py"
    )
    list_rules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(list_rules)
    return list_rules.workflow_rules(REPO / "Snakefile", REPO)


@pytest.fixture()
def default_config(_default_config) -> dict:
    """The shipped config.yaml, validated, defaults filled; a fresh copy per test."""
    return copy.deepcopy(_default_config)


def run_snakemake(
    workdir: Path, *args: str, override: dict | None = None, cores: int = 2, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run this repository's Snakefile in ``workdir`` with config.yaml plus ``workdir/override.yaml``.

    ``override`` (if given) is written to ``override.yaml`` first; later calls reuse the file.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    override_file = workdir / "override.yaml"
    if override is not None:
        override_file.write_text(yaml.safe_dump(override))
    configfiles = [str(REPO / "config" / "config.yaml")] + (
        [str(override_file)] if override_file.exists() else []
    )
    # --configfile takes every following word as a file: pass targets after "--"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", str(cores), "--resources", "gpu=1", "--configfile", *configfiles, *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def snakemake_cli():
    """:func:`run_snakemake`, for tests that drive the real workflow through its command line."""
    return run_snakemake
