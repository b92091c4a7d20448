"""Blood tests (``StructuredData/blood_data.json``) and their reference ranges.

The blood file is in long format: one record per (patient, analyte) measurement. We pivot on
``analyte_name`` (HANCOCK's ``BLOOD_FEATURES`` are analyte names; the official code pivots on
``LOINC_name``, which is one-to-one with it). Repeated (patient, analyte) measurements are resolved
by a stated rule (``first``, ``closest_to_treatment`` or ``mean``) and counted. Reference ranges are
sex-specific (``normal_{male,female}_{min,max}``); :func:`blood_range_flags` turns a patient's values
into below/within/above flags with the range of that patient's sex.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from haf.errors import HafInputError
from haf.io.records import json_records, load_json, read_json_records

log = logging.getLogger(__name__)

BLOOD_FEATURES: tuple[str, ...] = (
    "Leukocytes",
    "Hemoglobin",
    "Platelets",
    "Erythrocytes",
    "Hematocrit",
    "MCH",
    "MCV",
    "MCHC",
    "RDW",
    "MPV",
    "Granulocytes",
    "Eosinophils",
    "Basophils",
    "Lymphocytes",
    "Monocytes",
    "PDW",
)
"""HANCOCK's 16 blood features (official ``BLOOD_FEATURES``), in the official order."""

ANALYTE_ALIASES: dict[str, str] = {"MHCH": "MCHC"}
"""Spellings seen for the same analyte (HANCOCK.md lists the analyte as ``MHCH``, the features as ``MCHC``)."""

DUPLICATE_RULES: tuple[str, ...] = ("first", "closest_to_treatment", "mean")
RANGE_FIELDS: tuple[str, ...] = (
    "normal_male_min",
    "normal_male_max",
    "normal_female_min",
    "normal_female_max",
)


def canonical_analyte(name: str) -> str:
    """One spelling per analyte (aliases folded, surrounding blanks removed)."""
    name = name.strip()
    return ANALYTE_ALIASES.get(name, name)


def _number(value: Any, path: Path, where: str, field: str, allow_null: bool = True) -> float:
    if value is None:
        if allow_null:
            return math.nan
        raise HafInputError(path, "missing value", where=where, field=field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HafInputError(path, f"expected a number, got {value!r}", where=where, field=field)
    if isinstance(value, float) and math.isinf(value):
        raise HafInputError(path, "infinite value", where=where, field=field)
    return float(value)


def read_blood(path: str | Path) -> pd.DataFrame:
    """The long blood table: ``patient_id, analyte, value, days_before_first_treatment, order``.

    ``order`` is the record's position in the file (the tie-breaker of every duplicate rule).
    Records with a null ``value`` are dropped and counted in the log.
    """
    path = Path(path)
    records = read_json_records(path, unique_patients=False)
    rows = []
    n_null = 0
    for i, record in enumerate(records, start=1):
        where = f"record {i} (patient {record['patient_id']})"
        analyte = record.get("analyte_name")
        if not isinstance(analyte, str) or not analyte.strip():
            raise HafInputError(
                path, f"expected a non-empty string, got {analyte!r}", where=where, field="analyte_name"
            )
        value = _number(record.get("value"), path, where, "value")
        if math.isnan(value):
            n_null += 1
            continue
        days = _number(record.get("days_before_first_treatment"), path, where, "days_before_first_treatment")
        rows.append((record["patient_id"], canonical_analyte(analyte), value, days, i))
    if n_null:
        log.info("%s: %d blood records with a null value dropped", path, n_null)
    return pd.DataFrame(
        rows, columns=["patient_id", "analyte", "value", "days_before_first_treatment", "order"]
    )


def pivot_blood(long: pd.DataFrame, duplicates: str = "closest_to_treatment") -> tuple[pd.DataFrame, int]:
    """Wide blood table (patients x analytes) and the number of repeated measurements resolved.

    Rules for repeated (patient, analyte) rows: ``first`` = first in the file (the official code's
    ``aggfunc="first"``); ``closest_to_treatment`` = the smallest ``days_before_first_treatment >= 0``
    (then negative days by distance to 0, then unknown days; ties by file order); ``mean`` = average.
    The count returned is the number of rows beyond one per (patient, analyte).
    """
    if duplicates not in DUPLICATE_RULES:
        raise ValueError(f"tabular.blood_duplicates must be one of {DUPLICATE_RULES}, got {duplicates!r}")
    if long.empty:
        return pd.DataFrame(dtype=float), 0
    n_resolved = int(len(long) - long.groupby(["patient_id", "analyte"]).ngroups)
    if duplicates == "mean":
        values = long.groupby(["patient_id", "analyte"], sort=True)["value"].mean()
    else:
        frame = long
        if duplicates == "closest_to_treatment":
            days = long["days_before_first_treatment"]
            frame = long.assign(
                _class=np.where(days >= 0, 0, np.where(days < 0, 1, 2)),
                _dist=days.abs().fillna(0.0),
            ).sort_values(["_class", "_dist", "order"], kind="mergesort")
        else:
            frame = long.sort_values("order", kind="mergesort")
        values = frame.groupby(["patient_id", "analyte"], sort=True)["value"].first()
    wide = values.unstack("analyte")
    wide.columns.name = None
    wide.index.name = None
    return wide.astype(float), n_resolved


def read_blood_reference(path: str | Path) -> pd.DataFrame:
    """``blood_data_reference_ranges.json``: one row per analyte with the sex-specific normal range."""
    path = Path(path)
    data = json_records(load_json(path), path)
    rows = []
    seen: dict[str, int] = {}
    for i, record in enumerate(data, start=1):
        where = f"record {i}"
        if not isinstance(record, dict):
            raise HafInputError(path, f"record is a {type(record).__name__}, expected an object", where=where)
        analyte = record.get("analyte_name")
        if not isinstance(analyte, str) or not analyte.strip():
            raise HafInputError(
                path, f"expected a non-empty string, got {analyte!r}", where=where, field="analyte_name"
            )
        analyte = canonical_analyte(analyte)
        if analyte in seen:
            raise HafInputError(
                path,
                f"analyte {analyte!r} appears twice (records {seen[analyte]} and {i})",
                where=where,
                field="analyte_name",
            )
        seen[analyte] = i
        row = {
            "analyte": analyte,
            "LOINC_name": record.get("LOINC_name"),
            "group": record.get("group"),
            "unit": record.get("unit"),
        }
        for key in RANGE_FIELDS:
            row[key] = _number(record.get(key), path, where, key)
        rows.append(row)
    return (
        pd.DataFrame(rows, columns=["analyte", "LOINC_name", "group", "unit", *RANGE_FIELDS])
        .set_index("analyte", drop=False)
        .rename_axis(None)
    )


def blood_range_flags(wide: pd.DataFrame, sex: pd.Series, reference: pd.DataFrame) -> pd.DataFrame:
    """Per patient and analyte: -1 below, 0 within, +1 above the normal range of the patient's sex.

    NaN where the value is missing, the patient's sex is not ``male``/``female``, or the reference
    has no bound for that analyte and sex. ``sex`` is indexed by patient_id.
    """
    flags = pd.DataFrame(np.nan, index=wide.index, columns=wide.columns)
    patient_sex = sex.reindex(wide.index)
    for analyte in wide.columns:
        if analyte not in reference.index:
            continue
        values = wide[analyte]
        for s in ("male", "female"):
            rows = patient_sex == s
            low = reference.at[analyte, f"normal_{s}_min"]
            high = reference.at[analyte, f"normal_{s}_max"]
            v = values[rows]
            known = v.notna() & (not math.isnan(low) or not math.isnan(high))
            flag = pd.Series(0.0, index=v.index)
            if not math.isnan(low):
                flag[v < low] = -1.0
            if not math.isnan(high):
                flag[v > high] = 1.0
            flags.loc[v.index[known], analyte] = flag[known]
    return flags
