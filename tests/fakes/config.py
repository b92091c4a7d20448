"""The shipped config with overrides, schema-validated with every default filled, and typed sections."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from haf.settings import SECTIONS, Section, fill_defaults

REPO = Path(__file__).resolve().parents[2]


def merged(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` deep-merged with ``extra`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config/config.yaml`` merged with ``overrides``, validated by the schema, defaults filled."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return fill_defaults(merged(config, overrides or {}))


def settings(name: str, **overrides: Any) -> Section:
    """The typed settings of config section ``name`` with some keys changed (schema defaults otherwise)."""
    return SECTIONS[name].from_config(load_config({name: overrides})[name])


def declare(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Completed declarations of these methods (schema defaults filled, then :func:`active_methods`)."""
    from haf.methods import active_methods

    config = load_config()
    config["methods"] = {name: dict(decl) for name, decl in raw.items()}
    config["run_methods"] = list(raw)
    return active_methods(fill_defaults(config))


def small_val_warnings(records) -> dict[str, int]:
    """``{member name: count}`` of every ``fit_stacked`` warning about a validation part below
    ``training.min_val_patients`` among captured log records (``caplog.records``)."""
    import logging
    import re

    pattern = re.compile(r"^(.+?): only (\d+) usable validation patients \(< training\.min_val_patients")
    found = {}
    for record in records:
        match = pattern.match(record.getMessage()) if record.levelno == logging.WARNING else None
        if match:
            found[match.group(1)] = int(match.group(2))
    return found
