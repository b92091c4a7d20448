"""``methods/{method}/fold_{k}/masked.tsv.gz`` (rules ``fusion``, ``fusion_joint``, ``comparator``).

The fold's test part under every masking protocol (:mod:`haf.eval.masking`): one row per patient and
mask, ``method, fold, scenario, p, repeat, patient_id, n_present, kept, risk, prob`` (``prob`` empty for
Cox methods; p = 0 appears once, repeat 0).  ``kept`` lists the modalities the mask kept, comma-separated
keys in :data:`haf.modalities.MODALITIES` order (``wsi,clin,path``), so the masking can be audited;
``n_present`` is their count.

Files written before ``kept`` existed (and before the PARACHUTE group scenarios dropped whole groups)
are refused with a message to re-run the method's job: their group-scenario masks mean something else.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from haf.artifacts.files import write_tsv
from haf.artifacts.tables import read_patient_table
from haf.errors import HafInputError
from haf.modalities import MODALITIES

MASKED_COLUMNS: tuple[str, ...] = (
    "method",
    "fold",
    "scenario",
    "p",
    "repeat",
    "patient_id",
    "n_present",
    "kept",
    "risk",
    "prob",
)


def write_masked(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a masked prediction table (columns checked), gzip, atomically, 6 significant digits."""
    missing = [c for c in MASKED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"masked predictions lack column(s) {', '.join(missing)}")
    write_tsv(path, frame.loc[:, list(MASKED_COLUMNS)], float_format="%.6g")


def read_masked(path: str | Path) -> pd.DataFrame:
    """Read one ``masked.tsv.gz`` (made by :func:`haf.eval.masking.masked_prediction_table`)."""
    frame = read_patient_table(
        path,
        [c for c in MASKED_COLUMNS if c != "kept"],
        dtype={"method": str, "scenario": str, "kept": str},
        what="masked prediction table",
    )
    if "kept" not in frame.columns:
        raise HafInputError(
            path,
            "column missing: this masked prediction table predates the audited masking (column kept, "
            "whole-group PARACHUTE scenarios); re-run the method's job (snakemake --forcerun fusion "
            "fusion_joint comparator)",
            field="kept",
        )
    _check_kept(path, frame)
    risk = frame["risk"].to_numpy(dtype=float)
    if not np.isfinite(risk).all():
        pos = int(np.flatnonzero(~np.isfinite(risk))[0])
        raise HafInputError(path, "risk is not finite", where=f"line {pos + 2}", field="risk")
    if (frame["n_present"] < 1).any():
        pos = int(np.flatnonzero((frame["n_present"] < 1).to_numpy())[0])
        raise HafInputError(
            path, "a masked patient has no modality left", where=f"line {pos + 2}", field="n_present"
        )
    frame["fold"] = frame["fold"].astype(int)
    frame["repeat"] = frame["repeat"].astype(int)
    frame["p"] = frame["p"].astype(float).round(6)
    return frame


def _check_kept(path: str | Path, frame: pd.DataFrame) -> None:
    """``kept`` names known modalities, in slot order, as many as ``n_present``."""
    order = {m: i for i, m in enumerate(MODALITIES)}
    for pos, (kept, n_present) in enumerate(zip(frame["kept"], frame["n_present"], strict=True)):
        names = kept.split(",") if isinstance(kept, str) else []
        if any(m not in order for m in names) or [order[m] for m in names] != sorted(order[m] for m in names):
            raise HafInputError(
                path,
                f"kept {kept!r} is not a comma-separated list of {', '.join(MODALITIES)} in that order",
                where=f"line {pos + 2}",
                field="kept",
            )
        if len(set(names)) != len(names) or len(names) != int(n_present):
            raise HafInputError(
                path,
                f"kept {kept!r} lists {len(names)} modalities, n_present says {n_present}",
                where=f"line {pos + 2}",
                field="kept",
            )


def load_masked(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate masked tables; one (method, fold, scenario, p, repeat, patient) appears once."""
    frames = [read_masked(path) for path in paths]
    if not frames:
        raise HafInputError(None, "no masked prediction table given")
    frame = pd.concat(frames, ignore_index=True)
    key = ["method", "fold", "scenario", "p", "repeat", "patient_id"]
    if frame.duplicated(key).any():
        row = frame[frame.duplicated(key)].iloc[0]
        raise HafInputError(
            None,
            f"masked predictions of {row['method']} fold {row['fold']} list patient {row['patient_id']} "
            f"twice under {row['scenario']} p={row['p']} repeat {row['repeat']}",
            field="patient_id",
        )
    return frame
