"""The common prediction format: one TSV layout for every method, baseline and comparator.

Columns (one row per patient and part of a fold):

=============  =====================================================================
``method``     method name as in ``config.methods`` (``wsi_clam``, ``haf``, ...)
``seed``       training seed
``fold``       fold index (0-based)
``part``       ``train``, ``val`` or ``test`` (evaluation reads ``val`` for thresholds)
``patient_id`` 3-digit string
``prob``       P(label = 1) for methods trained on the binary target; empty for Cox methods
``risk``       higher = worse prognosis; the logit for binary methods, the log hazard for Cox methods
``label``      binary target (0/1), empty where the patient has no binary label
``time``       follow-up in days
``event``      1 = death observed, 0 = censored
=============  =====================================================================
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from haf.artifacts.files import write_tsv
from haf.errors import HafInputError

COLUMNS: tuple[str, ...] = (
    "method",
    "seed",
    "fold",
    "part",
    "patient_id",
    "prob",
    "risk",
    "label",
    "time",
    "event",
)
PARTS: tuple[str, ...] = ("train", "val", "test")
_ID = re.compile(r"^\d{3}$")


def make_predictions(
    *,
    method: str,
    seed: int,
    fold: int,
    part: np.ndarray,
    patient_id: np.ndarray,
    risk: np.ndarray,
    prob: np.ndarray | None,
    label: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
) -> pd.DataFrame:
    """Assemble and validate a prediction table; ``prob=None`` for risk-only (Cox) methods."""
    n = len(patient_id)
    frame = pd.DataFrame(
        {
            "method": method,
            "seed": int(seed),
            "fold": int(fold),
            "part": np.asarray(part, dtype=object),
            "patient_id": np.asarray(patient_id, dtype=object),
            "prob": np.full(n, np.nan) if prob is None else np.asarray(prob, dtype=float),
            "risk": np.asarray(risk, dtype=float),
            "label": np.asarray(label, dtype=float),
            "time": np.asarray(time, dtype=float),
            "event": np.asarray(event, dtype=int),
        },
        columns=list(COLUMNS),
    )
    validate_predictions(frame, source=f"predictions of {method} fold {fold}")
    return frame


def validate_predictions(frame: pd.DataFrame, source: str | Path = "<predictions>") -> pd.DataFrame:
    """Check columns, ids, parts and values; raise :class:`HafInputError` naming the row and field."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise HafInputError(source, f"missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    for row, pid in enumerate(frame["patient_id"]):
        if not isinstance(pid, str) or not _ID.match(pid):
            raise HafInputError(
                source,
                f"patient id {pid!r} is not a 3-digit string",
                where=f"row {row + 1}",
                field="patient_id",
            )
    bad_part = ~frame["part"].isin(PARTS)
    if bad_part.any():
        row = int(np.flatnonzero(bad_part.to_numpy())[0])
        raise HafInputError(
            source, f"part {frame['part'].iloc[row]!r} not in {PARTS}", where=f"row {row + 1}", field="part"
        )
    risk = frame["risk"].to_numpy(dtype=float)
    if not np.isfinite(risk).all():
        row = int(np.flatnonzero(~np.isfinite(risk))[0])
        raise HafInputError(source, "risk is not finite", where=f"row {row + 1}", field="risk")
    prob = frame["prob"].to_numpy(dtype=float)
    has_prob = ~np.isnan(prob)
    if ((prob[has_prob] < 0) | (prob[has_prob] > 1)).any():
        row = int(np.flatnonzero(has_prob & ((prob < 0) | (prob > 1)))[0])
        raise HafInputError(source, "prob outside [0, 1]", where=f"row {row + 1}", field="prob")
    label = frame["label"].to_numpy(dtype=float)
    if not np.isin(label[~np.isnan(label)], (0.0, 1.0)).all():
        raise HafInputError(source, "label must be 0, 1 or empty", field="label")
    if not frame["event"].isin((0, 1)).all():
        raise HafInputError(source, "event must be 0 or 1", field="event")
    return frame


def write_predictions(path: str | Path, frame: pd.DataFrame) -> None:
    """Validate and write atomically."""
    validate_predictions(frame, source=path)
    write_tsv(path, frame.loc[:, list(COLUMNS)], float_format="%.6g")


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read one prediction TSV (ids kept as strings) and validate it."""
    try:
        frame = pd.read_csv(path, sep="\t", dtype={"patient_id": str, "method": str, "part": str})
    except (OSError, pd.errors.ParserError) as exc:
        raise HafInputError(path, f"cannot read prediction table: {exc}") from exc
    return validate_predictions(frame, source=path)
