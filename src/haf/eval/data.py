"""Reading what the evaluation rules consume: prediction files, masked tables, the cohort's survival.

Every reader validates and names the file, the row and the field on bad input, and returns plain
DataFrames with patient ids kept as 3-digit strings.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from haf.artifacts.folds import read_folds
from haf.artifacts.masked import MASKED_COLUMNS, load_masked, read_masked  # noqa: F401
from haf.artifacts.predictions import read_predictions
from haf.artifacts.targets import read_targets
from haf.errors import HafInputError

log = logging.getLogger(__name__)


def load_predictions(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate validated prediction files; one (method, fold, part, patient) appears once."""
    frames = [read_predictions(path).assign(_source=str(path)) for path in paths]
    if not frames:
        raise HafInputError(None, "no prediction file given")
    frame = pd.concat(frames, ignore_index=True)
    frame["fold"] = frame["fold"].astype(int)
    dup = frame.duplicated(["method", "fold", "part", "patient_id"], keep=False)
    if dup.any():
        row = frame[dup].iloc[0]
        raise HafInputError(
            row["_source"],
            f"patient {row['patient_id']} appears more than once in {row['part']} of fold {row['fold']} "
            f"for method {row['method']} (several seeds in one file are not supported)",
            field="patient_id",
        )
    return frame


def method_predictions(predictions: pd.DataFrame, method: str) -> pd.DataFrame:
    """The rows of one method; an error naming the method when it has none."""
    rows = predictions[predictions["method"] == method]
    if rows.empty:
        raise HafInputError(
            None,
            f"no predictions for method {method!r}; methods present: "
            f"{', '.join(sorted(predictions['method'].unique()))}",
        )
    return rows


def is_risk_only(rows: pd.DataFrame) -> bool:
    """True for Cox methods: their ``prob`` column is empty everywhere."""
    return bool(rows["prob"].isna().all())


def read_cohort_survival(folds_path: str | Path, targets_path: str | Path) -> pd.DataFrame:
    """Long table ``patient_id, fold, part, time, event, label`` from ``folds.tsv`` + ``targets.tsv``.

    The training part's survival data are what Uno's C-index and the IPCW time-dependent AUC need
    (censoring distribution estimated on the training part), and prediction files hold only the
    validation and test parts.
    """
    folds = read_folds(folds_path)
    targets = read_targets(targets_path)
    unknown = ~folds["patient_id"].isin(targets["patient_id"])
    if unknown.any():
        pos = int(np.flatnonzero(unknown.to_numpy())[0])
        raise HafInputError(
            folds_path,
            f"patient {folds['patient_id'].iloc[pos]} is not in {targets_path}",
            where=f"line {pos + 2}",
            field="patient_id",
        )
    merged = folds.merge(targets[["patient_id", "time", "event", "label"]], on="patient_id", how="left")
    merged["fold"] = merged["fold"].astype(int)
    merged["time"] = merged["time"].astype(float)
    merged["event"] = merged["event"].astype(int)
    merged["label"] = merged["label"].astype(float)
    return merged


def check_coverage(predictions: pd.DataFrame, folds_path: str | Path) -> dict[str, int]:
    """Count, per method, the cohort's test patients that have no test prediction (logged, not dropped)."""
    folds = read_folds(folds_path)
    test = folds[folds["part"] == "test"][["patient_id", "fold"]].astype({"fold": int})
    missing: dict[str, int] = {}
    for method, rows in predictions[predictions["part"] == "test"].groupby("method", sort=False):
        have = set(zip(rows["patient_id"], rows["fold"], strict=True))
        want = set(zip(test["patient_id"], test["fold"], strict=True))
        want = {pf for pf in want if pf[1] in set(rows["fold"])}
        missing[str(method)] = len(want - have)
        if missing[str(method)]:
            log.warning(
                "%s: %d test patients of folds.tsv have no test prediction", method, missing[str(method)]
            )
    return missing
