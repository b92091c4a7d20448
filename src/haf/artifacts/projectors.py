"""``stage2/{ga|clip}/fold_{k}/projectors.pt`` (rule ``align``): one fold's trained Stage 2 projectors.

``align``, ``fold``, ``spec`` (to rebuild :class:`haf.alignment.projectors.ProjectorBank`), ``state_dict``,
``trained`` and ``untrained`` (projectors without any training patient).  Read by the detached aligned
fusion methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from haf.artifacts.torch_files import load_torch, save_torch
from haf.errors import HafInputError

PROJECTOR_KEYS: tuple[str, ...] = ("align", "fold", "spec", "state_dict", "trained", "untrained")


def write_projectors(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``projectors.pt`` (keys :data:`PROJECTOR_KEYS`), atomically and byte-stably."""
    missing = [k for k in PROJECTOR_KEYS if k not in payload]
    if missing:
        raise ValueError(f"projector payload lacks {', '.join(missing)}")
    save_torch(path, payload)


def read_projectors(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read ``projectors.pt`` (weights only); missing keys name the file and the key."""
    payload = load_torch(path, what="Stage 2 projectors", map_location=map_location)
    for key in ("spec", "state_dict"):
        if not isinstance(payload, dict) or key not in payload:
            raise HafInputError(path, "cannot load Stage 2 projectors: key missing", field=key)
    return payload
