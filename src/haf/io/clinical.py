"""Clinical and pathological JSON (``StructuredData/{clinical,pathological}_data.json``).

A non-empty array of records, one per patient (a single object, HANCOTHON's per-patient form, and an
empty array are errors: :func:`haf.io.records.json_records`). Fields the pipeline uses are type-checked
here so that a bad value is reported with its file, record and field instead of surfacing later as a
NaN; an age outside ``AGE_RANGE`` is an error too (a negative age is a data error, not a patient).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from haf.errors import HafInputError
from haf.io.records import read_json_records

CLINICAL_NUMERIC: tuple[str, ...] = (
    "year_of_initial_diagnosis",
    "age_at_initial_diagnosis",
    "days_to_last_information",
    "days_to_first_treatment",
    "days_to_recurrence",
)
CLINICAL_STRING: tuple[str, ...] = (
    "sex",
    "smoking_status",
    "primarily_metastasis",
    "survival_status",
    "survival_status_with_cause",
)
PATHOLOGICAL_NUMERIC: tuple[str, ...] = (
    "number_of_positive_lymph_nodes",
    "number_of_resected_lymph_nodes",
    "infiltration_depth_in_mm",
)
PATHOLOGICAL_STRING: tuple[str, ...] = (
    "primary_tumor_site",
    "pT_stage",
    "pN_stage",
    "grading",
    "hpv_association_p16",
    "perinodal_invasion",
    "lymphovascular_invasion_L",
    "vascular_invasion_V",
    "perineural_invasion_Pn",
    "resection_status",
    "resection_status_carcinoma_in_situ",
    "carcinoma_in_situ",
    "histologic_type",
)
SURVIVAL_STATUS: tuple[str, ...] = ("living", "deceased")
AGE_RANGE: tuple[float, float] = (0.0, 120.0)
"""Plausible ``age_at_initial_diagnosis`` in years (HANCOCK: 22-92); outside is an error naming the record."""


def _check_types(
    records: list[dict[str, Any]], path: Path, numeric: tuple[str, ...], strings: tuple[str, ...]
) -> None:
    for i, record in enumerate(records, start=1):
        where = f"record {i} (patient {record['patient_id']})"
        for key in numeric:
            value = record.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise HafInputError(path, f"expected a number or null, got {value!r}", where=where, field=key)
            if isinstance(value, float) and math.isinf(value):
                raise HafInputError(path, "infinite value", where=where, field=key)
        for key in strings:
            value = record.get(key)
            if value is not None and not isinstance(value, str):
                raise HafInputError(path, f"expected a string or null, got {value!r}", where=where, field=key)


def _frame(records: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records)
    for column in columns:  # a field absent from every record is a column of nulls, not a KeyError later
        if column not in frame.columns:
            frame[column] = None
    frame["patient_id"] = frame["patient_id"].astype(str)
    return frame.set_index("patient_id", drop=False).rename_axis(None)


def read_clinical(path: str | Path) -> pd.DataFrame:
    """``clinical_data.json`` as a frame indexed by patient_id (one row per patient, file order).

    ``survival_status`` must be ``living``/``deceased`` (or null); anything else names the record.
    """
    path = Path(path)
    records = read_json_records(path)
    _check_types(records, path, CLINICAL_NUMERIC, CLINICAL_STRING)
    low, high = AGE_RANGE
    for i, record in enumerate(records, start=1):
        age = record.get("age_at_initial_diagnosis")
        if age is not None and not math.isnan(age) and not low <= age <= high:
            raise HafInputError(
                path,
                f"implausible age {age!r}: must be between {low:g} and {high:g} years",
                where=f"record {i} (patient {record['patient_id']})",
                field="age_at_initial_diagnosis",
            )
        status = record.get("survival_status")
        if status is not None and status not in SURVIVAL_STATUS:
            raise HafInputError(
                path,
                f"survival_status {status!r} is not one of {', '.join(SURVIVAL_STATUS)}",
                where=f"record {i} (patient {record['patient_id']})",
                field="survival_status",
            )
    return _frame(records, CLINICAL_NUMERIC + CLINICAL_STRING)


def read_pathological(path: str | Path) -> pd.DataFrame:
    """``pathological_data.json`` as a frame indexed by patient_id (one row per patient, file order)."""
    path = Path(path)
    records = read_json_records(path)
    _check_types(records, path, PATHOLOGICAL_NUMERIC, PATHOLOGICAL_STRING)
    return _frame(records, PATHOLOGICAL_NUMERIC + PATHOLOGICAL_STRING)
