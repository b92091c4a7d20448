"""Repository files users and catalogs look for: the licence pyproject declares, and config/README.md
describing every section of the config schema."""

from __future__ import annotations

import tomllib

import yaml


def test_license_is_the_mit_text_pyproject_declares(repo_root):
    text = (repo_root / "LICENSE").read_text()
    assert tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["license"] == {"text": "MIT"}
    assert text.startswith("MIT License") and "HAF-flow contributors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_config_readme_describes_every_schema_section(repo_root):
    readme = (repo_root / "config" / "README.md").read_text()
    schema = yaml.safe_load((repo_root / "config" / "schema.yaml").read_text())
    missing = [key for key in schema["properties"] if f"`{key}`" not in readme]
    assert not missing, f"config/README.md does not describe the config section(s) {missing}"
    assert "schema.yaml" in readme
    for link in ("../docs/extract.md", "../docs/cohort.md", "../docs/evaluation.md"):
        assert link in readme and (repo_root / "config" / link).resolve().is_file(), link
