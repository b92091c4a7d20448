"""``torch.save``/``torch.load`` for the ``.pt`` files between rules (training env only: imports torch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from haf.artifacts.files import atomic_path
from haf.errors import HafInputError


def save_torch(
    path: str | Path, payload: Any, *, required: Sequence[str] = (), what: str = "checkpoint"
) -> None:
    """``torch.save`` atomically and byte-stably; a dict ``payload`` must hold the ``required`` keys.

    ``torch.save`` to a path names the zip's inner folder after the file, and the atomic write's
    temporary name is random, so the same tensors would give different bytes on every run; saving
    through a file object gives the fixed inner name ``archive``.
    """
    missing = [k for k in required if k not in payload]
    if missing:
        raise ValueError(f"{what} payload lacks {', '.join(missing)}")
    with atomic_path(path, ".pt") as tmp:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)


def load_torch(
    path: str | Path, *, what: str = "checkpoint", map_location: Any = "cpu", required: Sequence[str] = ()
) -> Any:
    """``torch.load`` with ``weights_only`` (no code runs); an unreadable file, or one that is not a dict
    with the ``required`` keys, is an error naming the file (and the first missing key)."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise HafInputError(path, f"cannot load {what}: {exc}") from exc
    missing = [k for k in required if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise HafInputError(path, f"not a {what}: key missing", field=missing[0])
    return payload
