"""``cohort/targets.tsv`` (rule ``targets``): ``patient_id, time, event, label, label_reason``.

``time`` in days from diagnosis, ``event`` 1 = deceased, ``label`` 0/1 or empty (no binary label;
``label_reason`` says why, e.g. ``censored_before_horizon``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from haf.artifacts.files import write_tsv
from haf.artifacts.tables import read_patient_table

TARGET_COLUMNS: tuple[str, ...] = ("patient_id", "time", "event", "label", "label_reason")


def write_targets(path: str | Path, targets: pd.DataFrame) -> None:
    """Write the targets table (columns checked), atomically."""
    missing = [c for c in TARGET_COLUMNS if c not in targets.columns]
    if missing:
        raise ValueError(f"targets lack column(s) {', '.join(missing)}")
    write_tsv(path, targets.loc[:, list(TARGET_COLUMNS)])


def read_targets(path: str | Path) -> pd.DataFrame:
    """Read ``targets.tsv``: string ids, float label (NaN = no binary label), float time, int event."""
    frame = read_patient_table(path, TARGET_COLUMNS, dtype={"label_reason": str}, what="targets table")
    frame["label"] = frame["label"].astype(float)
    frame["time"] = frame["time"].astype(float)
    frame["event"] = frame["event"].astype(int)
    return frame
