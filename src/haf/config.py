"""Config checks that JSON Schema cannot express, shared by the Snakefile and the rule scripts.

The schema (``config/schema.yaml``) checks types, ranges and enums and fills defaults; this module
checks what depends on several keys at once (which methods run, where the data are) and fails with
a message that names the key and says what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from haf.errors import HafConfigError
from haf.modalities import MODALITIES, PATHOLOGY_MODELS

METHOD_FAMILIES: tuple[str, ...] = (
    "clam",
    "fusion",
    "late_fusion",
    "attention_fusion",
    "mfmf",
    "feature_interaction",
    "parachute",
)
COMPARATOR_FAMILIES: tuple[str, ...] = (
    "late_fusion",
    "attention_fusion",
    "mfmf",
    "feature_interaction",
    "parachute",
)


def folds(config: dict[str, Any]) -> list[int]:
    """Fold indices: K for ``kfold``, a single train/test fold for the official split files."""
    cv = config["cv"]
    return list(range(int(cv["k"]))) if cv["scheme"] == "kfold" else [0]


def method_declaration(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """One method's declaration with family-specific defaults filled in and checked."""
    decl = dict(raw)
    family = decl.get("family")
    if family not in METHOD_FAMILIES:
        raise HafConfigError(f"methods.{name}.family: {family!r} is not one of {', '.join(METHOD_FAMILIES)}")
    decl.setdefault("label", name)
    decl.setdefault("task_loss", "bce")
    if family == "clam":
        if decl.get("pathology_model") not in PATHOLOGY_MODELS:
            raise HafConfigError(
                f"methods.{name}.pathology_model must be one of {', '.join(PATHOLOGY_MODELS)} for a clam method"
            )
        decl["modalities"] = (
            ["wsi", "tma"] if decl["pathology_model"] == "wsi_tma" else [decl["pathology_model"]]
        )
        return decl
    decl.setdefault("modalities", list(MODALITIES))
    unknown = [m for m in decl["modalities"] if m not in MODALITIES]
    if unknown:
        raise HafConfigError(
            f"methods.{name}.modalities: unknown modality {unknown[0]!r}; expected {', '.join(MODALITIES)}"
        )
    # keep the canonical slot order whatever order the config lists them in
    decl["modalities"] = [m for m in MODALITIES if m in decl["modalities"]]
    if family == "fusion":
        decl.setdefault("align", "none")
        decl.setdefault("drop", False)
        decl.setdefault("detach", True)
    if family == "mfmf":
        decl.setdefault("value_modality", "wsi")
        if decl["value_modality"] not in decl["modalities"]:
            raise HafConfigError(
                f"methods.{name}.value_modality {decl['value_modality']!r} is not among its modalities"
            )
    if family == "parachute":
        decl["task_loss"] = "cox"
    return decl


def active_methods(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The methods named in ``run_methods``, declarations completed; unknown names are an error."""
    declared = config.get("methods") or {}
    unknown = [m for m in config["run_methods"] if m not in declared]
    if unknown:
        raise HafConfigError(
            f"run_methods names {', '.join(map(repr, unknown))}, which config.methods does not declare; "
            f"declared methods: {', '.join(sorted(declared))}"
        )
    return {name: method_declaration(name, declared[name]) for name in config["run_methods"]}


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
