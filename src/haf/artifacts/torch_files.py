"""``torch.save``/``torch.load`` for the ``.pt`` files between rules (training env only: imports torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from haf.artifacts.files import atomic_path
from haf.errors import HafInputError


def save_torch(path: str | Path, payload: Any) -> None:
    """``torch.save`` atomically and byte-stably.

    ``torch.save`` to a path names the zip's inner folder after the file, and the atomic write's
    temporary name is random, so the same tensors would give different bytes on every run; saving
    through a file object gives the fixed inner name ``archive``.
    """
    with atomic_path(path, ".pt") as tmp:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)


def load_torch(path: str | Path, *, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only`` (no code runs); an unreadable file names the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise HafInputError(path, f"cannot load {what}: {exc}") from exc
