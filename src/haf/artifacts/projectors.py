"""``stage2/{ga|clip}/fold_{k}/projectors.pt`` (rule ``align``): one fold's trained Stage 2 projectors.

``align``, ``fold``, ``spec`` (to rebuild :class:`haf.alignment.projectors.ProjectorBank`), ``state_dict``,
``trained`` and ``untrained`` (projectors without any training patient).  Read by the detached aligned
fusion methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from haf.artifacts.torch_files import load_torch, save_torch

PROJECTOR_KEYS: tuple[str, ...] = ("align", "fold", "spec", "state_dict", "trained", "untrained")
READ_KEYS: tuple[str, ...] = ("spec", "state_dict")
"""What a reader needs to rebuild the bank (the other keys are bookkeeping)."""


def write_projectors(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``projectors.pt`` (keys :data:`PROJECTOR_KEYS`), atomically and byte-stably."""
    save_torch(path, payload, required=PROJECTOR_KEYS, what="Stage 2 projectors")


def read_projectors(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read ``projectors.pt`` (weights only); missing keys name the file and the key."""
    return load_torch(path, what="Stage 2 projectors", map_location=map_location, required=READ_KEYS)
