"""``features/tma/{encoder}/index.tsv`` (rule ``extract_tma``): one row per TMA patient.

Columns: ``patient_id, h5_path, n_cores, n_tiles, n_empty_cores, status, n_failed_cores``; status
``ok`` (a non-empty bag), ``empty`` (no tile in any core), ``failed`` (unreadable cores under
``extract.on_unreadable: skip``) or ``missing`` (precomputed features: no file for the patient).  Stage 1 treats anything but ``ok`` as missing the modality.  The
bags themselves sit in ``features/tma/{encoder}/h5/{patient_id}.h5`` (:mod:`haf.artifacts.bags`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from haf.artifacts.files import write_tsv
from haf.artifacts.tables import read_patient_table
from haf.errors import HafInputError

INDEX_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "h5_path",
    "n_cores",
    "n_tiles",
    "n_empty_cores",
    "status",
    "n_failed_cores",
)
STATUSES: tuple[str, ...] = ("ok", "empty", "failed", "missing")


def write_tma_index(path: str | Path, rows: list[dict]) -> pd.DataFrame:
    """Write the index from one dict per patient (keys :data:`INDEX_COLUMNS`), atomically; return it."""
    frame = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    write_tsv(path, frame)
    return frame


def read_tma_index(path: str | Path) -> pd.DataFrame:
    """Read the index: string ids and paths, checked columns and statuses (errors name the line)."""
    frame = read_patient_table(
        path, ("patient_id", "h5_path", "status"), dtype={"h5_path": str, "status": str},
        keep_default_na=False, what="TMA feature index",
    )  # fmt: skip
    frame["status"] = frame["status"].astype(str).str.strip()
    for row, rec in enumerate(frame.itertuples(index=False), start=2):
        if rec.status == "ok" and not str(rec.h5_path).strip():
            raise HafInputError(
                path, "status is ok but h5_path is empty", where=f"row {row}", field="h5_path"
            )
    return frame
