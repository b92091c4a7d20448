"""Shared pieces of the HANCOCK readers: patient ids, JSON record files, flexible CSV reading.

HANCOCK patient ids are zero-padded 3-digit *strings* everywhere ("001".."763"); an int or "1" is a
reading mistake upstream (a lost leading zero), so it is an error that names the record, never coerced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from haf.errors import HafInputError

PATIENT_ID_RE = re.compile(r"^[0-9]{3}$")


def check_patient_id(value: Any, path: str | Path, where: str, field: str = "patient_id") -> str:
    """Return ``value`` if it is a 3-digit string; otherwise an error naming file, record and field."""
    if isinstance(value, str) and PATIENT_ID_RE.match(value):
        return value
    kind = type(value).__name__
    raise HafInputError(
        path,
        f"patient id must be a 3-digit string such as '001', got {kind} {value!r}",
        where=where,
        field=field,
    )


def load_json(path: str | Path) -> Any:
    """Parse a JSON file; a syntax error names the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HafInputError(path, "file not found") from None
    except UnicodeDecodeError as exc:
        raise HafInputError(path, f"not UTF-8 text: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HafInputError(
            path, f"malformed JSON: {exc.msg}", where=f"line {exc.lineno}, column {exc.colno}"
        ) from exc


def read_json_records(path: str | Path, *, unique_patients: bool = True) -> list[dict[str, Any]]:
    """Read a HANCOCK JSON file: an array of records, or a single dict (the HANCOTHON form).

    Every record must be an object with a 3-digit string ``patient_id``. With ``unique_patients``
    a patient that appears twice is an error naming both records (1-based record numbers).
    """
    data = load_json(path)
    if isinstance(data, dict):
        records = [data]
    elif isinstance(data, list):
        records = data
    else:
        raise HafInputError(
            path, f"expected a JSON array of records or one record object, got {type(data).__name__}"
        )
    seen: dict[str, int] = {}
    for i, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise HafInputError(
                path, f"record is a {type(record).__name__}, expected an object", where=f"record {i}"
            )
        if "patient_id" not in record:
            raise HafInputError(path, "missing", where=f"record {i}", field="patient_id")
        pid = check_patient_id(record["patient_id"], path, f"record {i}")
        if unique_patients:
            if pid in seen:
                raise HafInputError(
                    path,
                    f"patient {pid} appears twice (records {seen[pid]} and {i})",
                    where=f"record {i}",
                    field="patient_id",
                )
            seen[pid] = i
    return records


def read_csv_flexible(path: str | Path, required: Iterable[str]) -> pd.DataFrame:
    """Read a CSV whose separator may be ``,``, ``;`` or tab; the first that yields ``required`` wins.

    Every cell is read as a string (ids keep their leading zeros, empty cells are ``""``); the
    readers convert and validate columns themselves so that errors can name the line. A missing
    required column is an error naming the file and the column.
    """
    path = Path(path)
    required = list(required)
    if not path.is_file():
        raise HafInputError(path, "file not found")
    frame = None
    for sep in (",", ";", "\t"):
        for encoding in ("utf-8", "latin-1"):
            try:
                candidate = pd.read_csv(path, sep=sep, dtype=str, encoding=encoding, keep_default_na=False)
            except UnicodeDecodeError:
                continue
            except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
                raise HafInputError(path, f"cannot parse as CSV: {exc}") from exc
            break
        else:  # pragma: no cover - latin-1 decodes any byte string
            continue
        candidate.columns = [str(c).strip().lstrip("\ufeff") for c in candidate.columns]
        if all(c in candidate.columns for c in required):
            frame = candidate
            break
        if frame is None:
            frame = candidate
    assert frame is not None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise HafInputError(
            path,
            f"required column missing (found columns: {', '.join(map(str, frame.columns))})",
            field=missing[0],
        )
    return frame


def csv_line(row_position: int) -> str:
    """The 1-based file line of a 0-based data row (the header is line 1)."""
    return f"line {row_position + 2}"


def numeric_column(frame: pd.DataFrame, column: str, path: str | Path, rows: Any = None) -> pd.Series:
    """Strings of a CSV column as floats (empty -> NaN); a non-number names its line and column.

    ``rows`` (boolean mask) limits the check to the rows that are used (dropped rows may hold anything).
    """
    raw = frame[column].astype(str).str.strip()
    values = pd.to_numeric(raw.where(raw != "", None), errors="coerce")
    bad = values.isna() & (raw != "") & ~raw.str.lower().isin({"nan", "na", "null", "none"})
    if rows is not None:
        bad &= pd.Series(rows, index=bad.index)
    if bad.any():
        pos = int(bad.to_numpy().nonzero()[0][0])
        raise HafInputError(path, f"not a number: {raw.iloc[pos]!r}", where=csv_line(pos), field=column)
    return values.astype(float)
