"""Reading the pipeline's own TSV tables: string patient ids, required columns, errors naming the line."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from haf.errors import HafInputError


def read_patient_table(
    path: str | Path,
    columns: Iterable[str],
    *,
    dtype: dict[str, type] | None = None,
    keep_default_na: bool = True,
    what: str = "table",
) -> pd.DataFrame:
    """Read a TSV keyed by ``patient_id`` (kept as 3-digit strings) and check its columns and ids.

    Errors name the file, the line (header = line 1) and the field.
    """
    try:
        frame = pd.read_csv(
            path, sep="\t", dtype={"patient_id": str, **(dtype or {})}, keep_default_na=keep_default_na
        )
    except (OSError, pd.errors.ParserError, EOFError, UnicodeDecodeError) as exc:
        raise HafInputError(path, f"cannot read {what}: {exc}") from exc
    columns = list(columns)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise HafInputError(path, f"column missing; expected {', '.join(columns)}", field=missing[0])
    bad = ~frame["patient_id"].str.fullmatch(r"[0-9]{3}").fillna(False).astype(bool)
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise HafInputError(
            path,
            f"invalid patient id {frame['patient_id'].iloc[pos]!r}",
            where=f"line {pos + 2}",
            field="patient_id",
        )
    return frame
