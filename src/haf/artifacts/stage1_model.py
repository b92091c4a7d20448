"""``stage1/{wsi|tma|wsi_tma}/fold_{k}/model.pt`` (rule ``stage1``): one fold's trained CLAM model.

``state_dict``, ``hparams`` (to rebuild :class:`haf.mil.clam.GatedAttentionMIL`) and ``meta``
(pathology model, fold, seed, best epoch, encoder, input width, training patients).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from haf.artifacts.torch_files import load_torch, save_torch
from haf.errors import HafInputError

MODEL_KEYS: tuple[str, ...] = ("state_dict", "hparams", "meta")


def write_stage1_model(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``model.pt`` (keys :data:`MODEL_KEYS`), atomically and byte-stably."""
    missing = [k for k in MODEL_KEYS if k not in payload]
    if missing:
        raise ValueError(f"Stage 1 model payload lacks {', '.join(missing)}")
    save_torch(path, payload)


def read_stage1_model(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read ``model.pt`` (weights only, no code runs); missing keys name the file."""
    payload = load_torch(path, what="Stage 1 model", map_location=map_location)
    missing = [k for k in MODEL_KEYS if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise HafInputError(path, "not a Stage 1 model", field=missing[0])
    return payload
