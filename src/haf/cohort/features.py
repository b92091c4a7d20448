"""Raw per-modality feature tables (before any fitted transform) and their column groups.

Columns follow HANCOCK's official feature set (HANCOCK.md section 9): 4 clinical, 15 pathological,
16 blood, 4 TMA cell densities, and ICD code counts. This module only *encodes* values whose coding
needs no data (yes/no -> 1/0, stage strings -> ordinal numbers); everything learned from data
(imputation values, scalers, one-hot categories, the ICD vocabulary) is fitted per fold on the
training part in :mod:`haf.cohort.tabular`.

A table holds only the patients who have that modality; its index is the patient id. Values
missing inside a present modality are NaN (imputed later); an absent modality is an absent row.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from haf.errors import HafInputError
from haf.io.blood import BLOOD_FEATURES
from haf.io.cell_density import CELL_FEATURES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColumnSpec:
    """Column groups of one modality's raw table.

    numeric: imputed and scaled (paper: most-frequent + min-max; hancock: mean + standard).
    binary: 0/1 codes, most-frequent imputation only. nominal: strings, most-frequent + one-hot.
    counts: non-negative counts (ICD), most-frequent imputation; min-max under ``paper``.
    """

    numeric: tuple[str, ...] = ()
    binary: tuple[str, ...] = ()
    nominal: tuple[str, ...] = ()
    counts: tuple[str, ...] = field(default=())

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.binary + self.nominal + self.counts


CLIN_SPEC = ColumnSpec(
    numeric=("age_at_initial_diagnosis",),
    binary=("sex", "primarily_metastasis"),
    nominal=("smoking_status",),
)
PATH_SPEC = ColumnSpec(
    numeric=("number_of_positive_lymph_nodes", "infiltration_depth_in_mm", "pT_stage", "pN_stage"),
    binary=(
        "lymphovascular_invasion_L",
        "vascular_invasion_V",
        "perineural_invasion_Pn",
        "perinodal_invasion",
        "carcinoma_in_situ",
    ),
    nominal=(
        "primary_tumor_site",
        "histologic_type",
        "hpv_association_p16",
        "grading",
        "resection_status_carcinoma_in_situ",
        "resection_status",
    ),
)
BLOOD_SPEC = ColumnSpec(numeric=BLOOD_FEATURES)
CELL_SPEC = ColumnSpec(numeric=CELL_FEATURES)
SPECS: dict[str, ColumnSpec] = {"clin": CLIN_SPEC, "path": PATH_SPEC, "blood": BLOOD_SPEC, "cell": CELL_SPEC}
"""Fixed column groups; ``icd`` gets its columns from the per-fold vocabulary."""

ICD_COLUMN = "codes"
"""The ICD raw table has one column: the patient's normalised codes joined by spaces."""

BINARY_CODES: dict[str, float] = {
    "no": 0.0,
    "yes": 1.0,
    "male": 0.0,
    "female": 1.0,
    "absent": 0.0,
    "cis": 1.0,
    "false": 0.0,
    "true": 1.0,
}
"""The official binary map (no/yes, male/female, Absent/CIS), lowercased."""
BINARY_UNKNOWN: frozenset[str] = frozenset({"unknown", "other", "not_tested", "not tested", "na", "n/a", "x"})
"""Values that mean 'not known': NaN, imputed inside a present modality."""

STAGE_RE = re.compile(r"^(?:y?p|c|r)?([TN])(is|X|[0-4])(is|[a-d])?$", re.IGNORECASE)


def binary_code(value: object, path: str | Path, patient: str, field_name: str) -> float:
    """``'yes'`` -> 1, ``'no'`` -> 0, ``'female'`` -> 1, unknown/null -> NaN; other strings are an error."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    text = str(value).strip().lower()
    if text == "" or text in BINARY_UNKNOWN:
        return math.nan
    if text not in BINARY_CODES:
        raise HafInputError(
            path,
            f"unexpected value {value!r} for a yes/no field (known: {', '.join(sorted(BINARY_CODES))}, "
            f"or one of {', '.join(sorted(BINARY_UNKNOWN))} for unknown)",
            where=f"patient {patient}",
            field=field_name,
        )
    return BINARY_CODES[text]


def stage_code(value: object) -> float | None:
    """Ordinal code of a TNM stage: ``pT1`` 1, ``pT1a`` 1.25, ``pT2b`` 2.5, ``pTis``/``T0is`` 0, ``pN3b`` 3.5.

    ``TX``/``NX`` (not assessed) and null give NaN; a string that is no stage gives None (counted by
    the caller). The official code label-encodes the strings alphabetically (fitted on all patients);
    a fixed clinical order needs no fitting and cannot leak.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    text = str(value).strip()
    if text == "":
        return math.nan
    match = STAGE_RE.match(text)
    if not match:
        return None
    number, suffix = match.group(2).lower(), (match.group(3) or "").lower()
    if number == "x":
        return math.nan
    if number == "is" or suffix == "is":
        return 0.0
    return float(number) + 0.25 * ("abcd".index(suffix) + 1 if suffix else 0)


def _nominal(series: pd.Series) -> pd.Series:
    out = series.map(
        lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()
    )
    return out.map(lambda v: np.nan if v in (None, "") else v).astype(object)


def _numeric(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").astype(float)


def clinical_table(clinical: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """The 4 official clinical features of every patient with a clinical record."""
    out = pd.DataFrame(index=clinical.index)
    out["age_at_initial_diagnosis"] = _numeric(clinical["age_at_initial_diagnosis"])
    for column in CLIN_SPEC.binary:
        out[column] = [binary_code(v, path, pid, column) for pid, v in clinical[column].items()]
    out["smoking_status"] = _nominal(clinical["smoking_status"])
    return out[list(CLIN_SPEC.columns)]


def pathological_table(pathological: pd.DataFrame, path: str | Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """The 15 official pathological features, and counts of unparseable stage strings (set to NaN)."""
    out = pd.DataFrame(index=pathological.index)
    counts: dict[str, int] = {}
    for column in ("number_of_positive_lymph_nodes", "infiltration_depth_in_mm"):
        out[column] = _numeric(pathological[column])
    for column in ("pT_stage", "pN_stage"):
        raw_codes = [stage_code(v) for v in pathological[column]]
        bad = pd.Series([c is None for c in raw_codes], index=pathological.index)
        if bad.any():
            values = sorted({str(v) for v in pathological.loc[bad, column]})
            log.warning(
                "%s: %d %s values are not a TNM stage and are treated as missing: %s",
                path,
                int(bad.sum()),
                column,
                ", ".join(values[:10]),
            )
        counts[f"path_{column}_unparsed"] = int(bad.sum())
        out[column] = [math.nan if c is None else c for c in raw_codes]
    for column in PATH_SPEC.binary:
        out[column] = [binary_code(v, path, pid, column) for pid, v in pathological[column].items()]
    for column in PATH_SPEC.nominal:
        out[column] = _nominal(pathological[column])
    return out[list(PATH_SPEC.columns)], counts


def blood_table(wide: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The 16 BLOOD_FEATURES of the patients with at least one of them, and how many patients had
    blood values but none of the 16 (their blood modality is absent)."""
    table = wide.reindex(columns=list(BLOOD_FEATURES)).astype(float)
    has_any = table.notna().any(axis=1)
    return table[has_any], int((~has_any).sum())


def cell_table(wide: pd.DataFrame) -> pd.DataFrame:
    """The 4 cell densities of the patients with at least one of them."""
    table = wide.reindex(columns=list(CELL_FEATURES)).astype(float)
    return table[table.notna().any(axis=1)]


def icd_table(codes: dict[str, list[str]]) -> pd.DataFrame:
    """One document per patient with at least one code (space-joined codes; repeats kept as counts)."""
    rows = {pid: " ".join(c) for pid, c in sorted(codes.items()) if c}
    return pd.DataFrame({ICD_COLUMN: pd.Series(rows, dtype=object)})
