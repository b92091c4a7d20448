"""Shared fixtures: the repository root and the default config with schema defaults filled in."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def _default_config() -> dict:
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "config" / "schema.yaml"))
    return config


@pytest.fixture()
def default_config(_default_config) -> dict:
    """The shipped config.yaml, validated, defaults filled; a fresh copy per test."""
    return copy.deepcopy(_default_config)
