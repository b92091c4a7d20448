"""``stage1/{wsi|tma|wsi_tma}/fold_{k}/model.pt`` (rule ``stage1``): one fold's trained CLAM model.

``state_dict``, ``hparams`` (to rebuild :class:`haf.mil.clam.GatedAttentionMIL`) and ``meta``
(pathology model, fold, seed, best epoch, encoder, input width, training patients).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from haf.artifacts.torch_files import load_torch, save_torch

MODEL_KEYS: tuple[str, ...] = ("state_dict", "hparams", "meta")


def write_stage1_model(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``model.pt`` (keys :data:`MODEL_KEYS`), atomically and byte-stably."""
    save_torch(path, payload, required=MODEL_KEYS, what="Stage 1 model")


def read_stage1_model(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read ``model.pt`` (weights only, no code runs); missing keys name the file."""
    return load_torch(path, what="Stage 1 model", map_location=map_location, required=MODEL_KEYS)
