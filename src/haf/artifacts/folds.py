"""``cohort/folds.tsv`` (rule ``folds``): ``patient_id, repeat, fold, part``, one row per patient and fold.

``part`` is ``train``, ``val`` (early stopping, LR schedule, thresholds) or ``test``.  ``fold`` is
unique over the whole run (repeat r of ``cv.repeats`` holds folds ``r * K ... r * K + K - 1``): every
per-fold output is keyed by it, and ``repeat`` says which repeated split it belongs to.  Written
once, read by every stage and method, so every method sees the same folds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from haf.artifacts.files import write_tsv
from haf.artifacts.predictions import PARTS
from haf.artifacts.tables import read_patient_table
from haf.errors import HafInputError

FOLD_COLUMNS: tuple[str, ...] = ("patient_id", "repeat", "fold", "part")


def write_folds(path: str | Path, folds: pd.DataFrame) -> None:
    """Write the folds table (columns checked), atomically."""
    missing = [c for c in FOLD_COLUMNS if c not in folds.columns]
    if missing:
        raise ValueError(f"folds lack column(s) {', '.join(missing)}")
    write_tsv(path, folds.loc[:, list(FOLD_COLUMNS)])


def read_folds(path: str | Path) -> pd.DataFrame:
    """Read ``folds.tsv`` with string ids; checks columns, parts and one row per (patient, fold)."""
    frame = read_patient_table(path, FOLD_COLUMNS, dtype={"part": str}, what="folds table")
    bad = ~frame["part"].isin(PARTS)
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise HafInputError(
            path, f"part {frame['part'].iloc[pos]!r} not in {PARTS}", where=f"line {pos + 2}", field="part"
        )
    if frame.duplicated(["patient_id", "fold"]).any():
        pos = int(np.flatnonzero(frame.duplicated(["patient_id", "fold"]).to_numpy())[0])
        raise HafInputError(
            path, "patient appears twice in one fold", where=f"line {pos + 2}", field="patient_id"
        )
    frame["fold"] = frame["fold"].astype(int)
    frame["repeat"] = frame["repeat"].astype(int)
    two = frame.groupby("fold")["repeat"].nunique()
    if (two > 1).any():
        raise HafInputError(path, f"fold {int(two[two > 1].index[0])} belongs to two repeats", field="repeat")
    return frame


def fold_repeats(folds: pd.DataFrame) -> dict[int, int]:
    """fold -> repeat of a folds table (:func:`read_folds`)."""
    pairs = folds[["fold", "repeat"]].drop_duplicates()
    return {int(f): int(r) for f, r in zip(pairs["fold"], pairs["repeat"], strict=True)}


def fold_table(
    targets: pd.DataFrame,
    folds: pd.DataFrame,
    fold: int,
    *,
    targets_source: str | Path = "targets.tsv",
    folds_source: str | Path = "folds.tsv",
) -> pd.DataFrame:
    """``patient_id, part, label, time, event`` of one fold: its rows of ``folds`` joined with ``targets``.

    Takes the frames of :func:`read_folds` and :func:`haf.artifacts.targets.read_targets`; a fold
    without rows, or a fold patient without a target row, is an error naming the file.
    """
    rows = folds[folds["fold"].astype(int) == int(fold)]
    if rows.empty:
        raise HafInputError(folds_source, f"no rows for fold {fold}", field="fold")
    table = rows[["patient_id", "part"]].merge(
        targets[["patient_id", "label", "time", "event"]], on="patient_id", how="left"
    )
    unknown = table["time"].isna() & table["event"].isna()
    if unknown.any():
        pid = table.loc[unknown, "patient_id"].iloc[0]
        raise HafInputError(
            targets_source, f"patient {pid} of fold {fold} has no row in targets", field="patient_id"
        )
    table["label"] = pd.to_numeric(table["label"], errors="coerce").astype(float)
    return table.reset_index(drop=True)
