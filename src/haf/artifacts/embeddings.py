"""``stage1/{wsi|tma|wsi_tma}/fold_{k}/embeddings.npz`` (rule ``stage1``): detached Stage 1 embeddings.

``patient_id`` (n,), ``part`` (n,), ``z`` float32 (n, d1): every patient of the fold with a non-empty
bag (train, val and test), embedded with full bags in eval mode.  Read by the ``fold_inputs`` rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from haf.artifacts.files import read_npz, write_npz
from haf.artifacts.predictions import PARTS
from haf.errors import HafInputError

EMBEDDING_KEYS: tuple[str, ...] = ("patient_id", "part", "z")


@dataclass
class Stage1Embeddings:
    """One fold's detached Stage 1 embeddings."""

    patient_id: np.ndarray  # (n,) str
    part: np.ndarray  # (n,) str
    z: np.ndarray  # (n, d1) float32


def write_embeddings(path: str | Path, embeddings: Stage1Embeddings) -> None:
    """Write ``embeddings.npz`` atomically (fixed-width strings, float32 z)."""
    write_npz(
        path,
        {
            "patient_id": np.asarray(embeddings.patient_id, dtype="U"),
            "part": np.asarray(embeddings.part, dtype="U"),
            "z": np.asarray(embeddings.z, dtype=np.float32),
        },
    )


def read_embeddings(path: str | Path) -> Stage1Embeddings:
    """Read ``embeddings.npz`` with checked shapes, unique ids, known parts and finite values."""
    data = read_npz(path, EMBEDDING_KEYS, what="Stage 1 embeddings")
    ids = data["patient_id"].astype(str)
    part = data["part"].astype(str)
    z = np.asarray(data["z"], dtype=np.float32)
    if z.ndim != 2 or z.shape[0] != len(ids) or len(part) != len(ids):
        raise HafInputError(path, f"z has shape {z.shape} for {len(ids)} patient ids", field="z")
    if len(set(ids.tolist())) != len(ids):
        raise HafInputError(path, "a patient appears twice", field="patient_id")
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        raise HafInputError(path, "NaN or inf", where=f"patient {ids[np.flatnonzero(bad)[0]]}", field="z")
    unknown = ~np.isin(part, PARTS)
    if unknown.any():
        raise HafInputError(path, f"part {part[unknown][0]!r} not in {PARTS}", field="part")
    return Stage1Embeddings(ids, part, z)
