"""Shared pieces of the HANCOCK readers: patient ids, JSON record files, flexible CSV reading.

HANCOCK patient ids are zero-padded 3-digit *strings* everywhere ("001".."763"); an int or "1" is a
reading mistake upstream (a lost leading zero), so it is an error that names the record, never coerced.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from haf.errors import HafInputError

log = logging.getLogger(__name__)

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


def json_records(data: Any, path: str | Path) -> list[Any]:
    """The records of a parsed HANCOCK JSON file, which must be a non-empty JSON array.

    HANCOCK's files are arrays of records (one object per patient or measurement). An empty array (a
    truncated export) and a single object (HANCOTHON's per-patient form, or one record cut out of the
    array) are errors naming the file: accepting a lone object silently gave a one-patient cohort.
    """
    if isinstance(data, list):
        if not data:
            raise HafInputError(
                path,
                "the file holds an empty JSON array (no records): the download is incomplete; "
                "restore the file, or remove it if the source is optional",
            )
        return data
    if isinstance(data, dict):
        pid = data.get("patient_id")
        who = f" (patient {pid!r})" if pid is not None else ""
        raise HafInputError(
            path,
            f"the file holds a single JSON object{who}, not an array of records: HANCOCK's files are "
            "arrays with one object per record ([{...}, {...}]); a single object is HANCOTHON's "
            "per-patient form. Write the records as a JSON array (for one record: [{...}])",
        )
    raise HafInputError(path, f"expected a JSON array of records, got {type(data).__name__}")


def read_json_records(path: str | Path, *, unique_patients: bool = True) -> list[dict[str, Any]]:
    """Read a HANCOCK JSON file: a non-empty array of records (see :func:`json_records`).

    Every record must be an object with a 3-digit string ``patient_id``. With ``unique_patients``
    a patient that appears twice is an error naming both records (1-based record numbers).
    """
    records = json_records(load_json(path), path)
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


CSV_SEPARATORS: tuple[str, ...] = (",", ";", "\t")
DECIMAL_COMMA_RE = re.compile(r"^[+-]?[0-9]*,[0-9]+(?:[eE][+-]?[0-9]+)?$")
"""A number written with a decimal comma (``123,5``): German Excel and QuPath exports use ``;`` + this."""


def _read_csv_text(path: Path, sep: str) -> pd.DataFrame:
    """One separator, UTF-8 first, then Latin-1 (which decodes any byte string)."""
    try:
        return pd.read_csv(path, sep=sep, dtype=str, encoding="utf-8", keep_default_na=False)
    except UnicodeDecodeError:
        return pd.read_csv(path, sep=sep, dtype=str, encoding="latin-1", keep_default_na=False)


def read_csv_flexible(path: str | Path, required: Iterable[str]) -> pd.DataFrame:
    """Read a CSV whose separator may be ``,``, ``;`` or tab; the first that yields ``required`` wins.

    Every cell is read as a string (ids keep their leading zeros, empty cells are ``""``); the
    readers convert and validate columns themselves so that errors can name the line. A separator
    under which the file does not tokenize is skipped (a ``;`` file with decimal commas does not
    parse with ``,``). The separator found is ``frame.attrs["sep"]``: with ``;`` or tab,
    :func:`numeric_column` reads decimal commas. A missing required column is an error naming the
    file, the column and the separators tried.
    """
    path = Path(path)
    required = list(required)
    if not path.is_file():
        raise HafInputError(path, "file not found")
    frame = first = None
    failures: list[str] = []
    for sep in CSV_SEPARATORS:
        try:
            candidate = _read_csv_text(path, sep)
        except pd.errors.EmptyDataError:
            raise HafInputError(path, "the file is empty (no header line)") from None
        except pd.errors.ParserError as exc:
            failures.append(f"{sep!r}: {str(exc).strip()}")
            continue
        candidate.columns = [str(c).strip().lstrip("\ufeff") for c in candidate.columns]
        candidate.attrs["sep"] = sep
        if all(c in candidate.columns for c in required):
            frame = candidate
            break
        if first is None or len(candidate.columns) > len(first.columns):
            first = candidate
    if frame is None:
        tried = "separators ',', ';' and tab"
        if first is None:
            raise HafInputError(path, f"cannot parse as CSV with any of the {tried}: {'; '.join(failures)}")
        missing = [c for c in required if c not in first.columns]
        raise HafInputError(
            path,
            f"required column missing with any of the {tried} (columns found with {first.attrs['sep']!r}: "
            f"{', '.join(map(str, first.columns))})",
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
    if frame.attrs.get("sep") in (";", "\t"):  # 123,5 = 123.5 in a ;-separated (German Excel) export
        comma = raw.str.match(DECIMAL_COMMA_RE.pattern)
        if comma.any():
            log.info("%s: %d values of column %r read with a decimal comma", path, int(comma.sum()), column)
            raw = raw.where(~comma, raw.str.replace(",", ".", regex=False))
    values = pd.to_numeric(raw.where(raw != "", None), errors="coerce")
    bad = values.isna() & (raw != "") & ~raw.str.lower().isin({"nan", "na", "null", "none"})
    if rows is not None:
        bad &= pd.Series(rows, index=bad.index)
    if bad.any():
        pos = int(bad.to_numpy().nonzero()[0][0])
        raise HafInputError(path, f"not a number: {raw.iloc[pos]!r}", where=csv_line(pos), field=column)
    return values.astype(float)
