"""``train_log.tsv`` (every training rule): one row per epoch of one model.

Required columns: ``epoch, train_loss, val_loss, val_score, lr, best`` (``best`` marks the epoch
whose weights were kept). Trainers may add columns before or after them (``method``, ``align``,
loss components ``train_*``, ``untrained``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from haf.artifacts.files import write_tsv
from haf.errors import HafInputError

TRAIN_LOG_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "val_loss", "val_score", "lr", "best")


def write_train_log(path: str | Path, history: pd.DataFrame) -> None:
    """Write a training history (required columns checked), atomically, 6 significant digits."""
    missing = [c for c in TRAIN_LOG_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"training history lacks column(s) {', '.join(missing)}")
    write_tsv(path, history, float_format="%.6g")


def read_train_log(path: str | Path) -> pd.DataFrame:
    """Read a ``train_log.tsv``; missing columns or a log without exactly one best epoch name the file."""
    try:
        frame = pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HafInputError(path, f"cannot read training log: {exc}") from exc
    missing = [c for c in TRAIN_LOG_COLUMNS if c not in frame.columns]
    if missing:
        raise HafInputError(path, "column missing", field=missing[0])
    frame["best"] = frame["best"].astype(bool)
    if int(frame["best"].sum()) != 1:
        raise HafInputError(path, f"{int(frame['best'].sum())} rows marked best, expected 1", field="best")
    return frame
