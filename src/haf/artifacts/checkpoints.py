"""``methods/{method}/fold_{k}/model.pt`` (rules ``fusion``, ``fusion_joint``, ``comparator``).

What is needed to rebuild the trained model for prediction: ``method``, ``declaration``, ``fold``,
``state_dict`` and the family's sizes (fusion: ``model_spec``; comparators: ``dims`` and
``settings``; no-detach fusion also ``encoders``).  Rebuilding is the family's job
(:func:`haf.fusion.train.load_fusion_model`, :func:`haf.comparators.train.load_model`); reading and
writing the file is here, byte-stable and without pickled code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from haf.artifacts.torch_files import load_torch, save_torch

REQUIRED_KEYS: tuple[str, ...] = ("declaration", "state_dict")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a method's ``model.pt`` (keys :data:`REQUIRED_KEYS` at least), atomically and byte-stably."""
    save_torch(path, payload, required=REQUIRED_KEYS, what="method checkpoint")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a method's ``model.pt`` (weights only); a file without the required keys names the key."""
    return load_torch(path, what="method checkpoint", map_location=map_location, required=REQUIRED_KEYS)
