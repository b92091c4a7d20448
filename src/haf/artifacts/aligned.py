"""``stage2/{ga|clip}/fold_{k}/aligned.npz`` (rule ``align``): every patient's modality embeddings.

``patient_id``, ``part``, ``present`` (n, 7), ``trained`` (projectors that saw training patients), and
per modality ``u_{m}`` (aligned) and ``pre_{m}`` (the untrained initial projections), L2-normalised
d_out-d, zero where absent.  Read by Fig. 3-4 (and the alignment geometry checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from haf.artifacts.files import read_npz, write_npz
from haf.errors import HafInputError
from haf.modalities import MODALITIES


def write_aligned(
    path: str | Path,
    *,
    patient_id: np.ndarray,
    part: np.ndarray,
    present: np.ndarray,
    trained: list[str],
    aligned: np.ndarray,
    before: np.ndarray,
) -> None:
    """Write ``aligned.npz`` from (n, 7, d) aligned and pre-alignment projections, atomically."""
    arrays: dict[str, np.ndarray] = {
        "patient_id": np.asarray(patient_id).astype("U"),
        "part": np.asarray(part).astype("U"),
        "present": np.asarray(present, dtype=bool),
        "trained": np.asarray(trained, dtype="U"),
    }
    for j, m in enumerate(MODALITIES):
        arrays[f"u_{m}"] = aligned[:, j]
        arrays[f"pre_{m}"] = before[:, j]
    write_npz(path, arrays)


@dataclass
class Aligned:
    patient_id: np.ndarray
    part: np.ndarray
    present: np.ndarray  # (n, 7) bool
    pre: dict[str, np.ndarray]  # modality -> (n, d)
    post: dict[str, np.ndarray]


def read_aligned(path: str | Path) -> Aligned:
    """Read and check ``aligned.npz`` (keys named in docs/ARCHITECTURE.md)."""
    needed = ["patient_id", "part", "present"] + [f"{k}_{m}" for m in MODALITIES for k in ("u", "pre")]
    arrays = read_npz(path, needed, what="aligned embeddings")
    n = len(arrays["patient_id"])
    if arrays["present"].shape != (n, len(MODALITIES)):
        raise HafInputError(
            path, f"present has shape {arrays['present'].shape}, expected ({n}, 7)", field="present"
        )
    for key in needed[3:]:
        if arrays[key].ndim != 2 or arrays[key].shape[0] != n:
            raise HafInputError(path, f"shape {arrays[key].shape} does not have {n} rows", field=key)
        if not np.isfinite(arrays[key]).all():
            raise HafInputError(path, "embedding is not finite", field=key)
    return Aligned(
        patient_id=arrays["patient_id"].astype(str),
        part=arrays["part"].astype(str),
        present=arrays["present"].astype(bool),
        pre={m: arrays[f"pre_{m}"].astype(float) for m in MODALITIES},
        post={m: arrays[f"u_{m}"].astype(float) for m in MODALITIES},
    )
