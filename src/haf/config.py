"""Config checks that JSON Schema cannot express: where the data are.

The schema (``config/schema.yaml``) checks types, ranges and enums and fills defaults; typed
sections are :mod:`haf.settings`; which methods run is :mod:`haf.methods`.  This module checks the
data location, which depends on several keys at once, and fails naming the key and what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from haf.errors import HafConfigError


def data_path(config: dict[str, Any], key: str) -> Path:
    """Absolute-or-relative path of one HANCOCK input (``config.paths.<key>`` under ``data_root``)."""
    return Path(config["data_root"]) / config["paths"][key]


def check_data_root(config: dict[str, Any]) -> None:
    """Fail early, naming ``data_root``, when real data are asked for and the folder is not there."""
    if config["demo"]["enabled"]:
        return
    root = Path(config["data_root"])
    if not root.is_dir():
        raise HafConfigError(
            f"data_root: {str(root)!r} is not a folder. Point data_root at the unzipped Hancock_Dataset "
            "(config/hancock.yaml or --config data_root=/path/to/Hancock_Dataset), or set demo.enabled: true "
            "to run on the embedded synthetic demo cohort."
        )
    for key in ("clinical", "pathological"):
        path = data_path(config, key)
        if not path.is_file():
            raise HafConfigError(f"data_root: required file {str(path)!r} (paths.{key}) is missing")


def pathology_available(config: dict[str, Any]) -> tuple[str, ...]:
    """The pathology modalities the cohort can have: both for the demo; for a real download ``wsi``
    when the WSI encodings folder exists and ``tma`` when the core images folder (or a folder of
    precomputed TMA features) exists. A partial download runs without the missing ones."""
    if config["demo"]["enabled"]:
        return ("wsi", "tma")
    available = []
    if data_path(config, "wsi_h5").is_dir():
        available.append("wsi")
    precomputed = (config.get("extract") or {}).get("precomputed") or {}
    if data_path(config, "tma_cores").is_dir() or precomputed.get("dir"):
        available.append("tma")
    return tuple(available)
