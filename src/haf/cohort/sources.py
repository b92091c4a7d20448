"""Read every tabular HANCOCK source once and turn it into the raw per-modality tables.

Shared by the manifest (which records who has which modality) and the per-fold tabular rule
(which fits transforms on them), so both agree on presence by construction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from haf.cohort.features import (
    blood_table,
    cell_table,
    clinical_table,
    icd_table,
    pathological_table,
)
from haf.errors import HafInputError
from haf.io.blood import pivot_blood, read_blood, read_blood_reference
from haf.io.cell_density import read_cell_density
from haf.io.clinical import read_clinical, read_pathological
from haf.io.icd import read_icd_dir

log = logging.getLogger(__name__)

OPTIONAL_SOURCES: tuple[str, ...] = ("blood", "blood_reference", "icd_dir", "cell_density")
BLOOD_OUTLIER_POLICIES: tuple[str, ...] = ("keep", "drop")
BLOOD_OUTLIER_ANALYTES: tuple[str, str] = ("Leukocytes", "Basophils")


def source_path(data_root: str | Path, paths: dict[str, str], key: str) -> Path:
    """``data_root / paths[key]``."""
    return Path(data_root) / paths[key]


@dataclass
class TabularSources:
    """What the tabular sources hold.

    tables: modality -> raw feature table (rows = patients who have the modality).
    clinical: the full clinical records (targets and sex-specific blood ranges need more than the features).
    seen: modality -> every patient id the source mentions (also those left without the modality).
    icd_files: patient -> its ICD file. files: source key -> path read (None if absent).
    counts: every drop and exclusion, for the logs.
    """

    tables: dict[str, pd.DataFrame]
    clinical: pd.DataFrame
    seen: dict[str, set[str]]
    icd_files: dict[str, Path] = field(default_factory=dict)
    files: dict[str, str | None] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    blood_wide: pd.DataFrame | None = None
    blood_reference: pd.DataFrame | None = None


def blood_outlier(table: pd.DataFrame, policy: str = "keep") -> tuple[pd.DataFrame, dict[str, Any]]:
    """HANCOCK's blood outlier: the one patient holding the maximum of both ``BLOOD_OUTLIER_ANALYTES``.

    HANCOCK's official code drops that patient's blood values (it asserts one patient holds both
    maxima); their Leukocytes and Basophils are so far above the rest that min-max scaling squeezes
    every other patient into a sliver of [0, 1]. ``policy`` ``keep`` leaves the row, ``drop`` removes it
    (the patient's blood modality is then absent). Logged with the patient id either way; when no
    single patient holds both maxima nothing is dropped and the log says who holds each.
    """
    if policy not in BLOOD_OUTLIER_POLICIES:
        raise ValueError(f"tabular.blood_outlier must be one of {BLOOD_OUTLIER_POLICIES}, got {policy!r}")
    counts: dict[str, Any] = {"blood_outlier_policy": policy, "blood_outlier_patient": None}
    holders: dict[str, list[str]] = {}
    peaks: dict[str, float] = {}
    for analyte in BLOOD_OUTLIER_ANALYTES:
        values = table[analyte].dropna() if analyte in table.columns else pd.Series(dtype=float)
        if values.empty:
            log.info(
                "blood outlier check (tabular.blood_outlier %s): no %s value, nothing to check",
                policy,
                analyte,
            )
            counts["blood_outlier_dropped"] = 0
            return table, counts
        peaks[analyte] = float(values.max())
        holders[analyte] = sorted(values.index[values == peaks[analyte]])
    first, second = BLOOD_OUTLIER_ANALYTES
    if len(holders[first]) == 1 and holders[first] == holders[second]:
        pid = holders[first][0]
        counts["blood_outlier_patient"] = pid
        action = "dropped (the patient's blood modality is absent)" if policy == "drop" else "kept"
        log.warning(
            "blood outlier: patient %s holds the maximum %s (%g) and %s (%g); %s by tabular.blood_outlier: %s",
            pid,
            first,
            peaks[first],
            second,
            peaks[second],
            action,
            policy,
        )
        if policy == "drop":
            table = table.drop(index=pid)
        counts["blood_outlier_dropped"] = int(policy == "drop")
        return table, counts
    log.info(
        "blood outlier check (tabular.blood_outlier %s): no single patient holds both maxima (%s: %s; %s: %s); "
        "nothing dropped",
        policy,
        first,
        ", ".join(holders[first]),
        second,
        ", ".join(holders[second]),
    )
    counts["blood_outlier_dropped"] = 0
    return table, counts


def load_tabular_sources(
    data_root: str | Path,
    paths: dict[str, Any],
    blood_duplicates: str = "closest_to_treatment",
    blood_outlier_policy: str = "keep",
) -> TabularSources:
    """Read clinical, pathological, blood, ICD and cell-density sources under ``data_root``.

    Clinical and pathological files are required; the others are optional (a missing one is logged
    and leaves that modality absent for everybody). ``blood_outlier_policy``: :func:`blood_outlier`.
    """
    counts: dict[str, int] = {}
    files: dict[str, str | None] = {}
    seen: dict[str, set[str]] = {}
    tables: dict[str, pd.DataFrame] = {}

    clin_path = source_path(data_root, paths, "clinical")
    path_path = source_path(data_root, paths, "pathological")
    for required in (clin_path, path_path):
        if not required.is_file():
            raise HafInputError(required, "required file not found (check data_root and paths)")
    clinical = read_clinical(clin_path)
    pathological = read_pathological(path_path)
    files["clinical"], files["pathological"] = str(clin_path), str(path_path)
    tables["clin"] = clinical_table(clinical, clin_path)
    path_tab, path_counts = pathological_table(pathological, path_path)
    tables["path"] = path_tab
    counts.update(path_counts)
    seen["clin"], seen["path"] = set(clinical.index), set(pathological.index)

    optional = {key: source_path(data_root, paths, key) for key in OPTIONAL_SOURCES}
    for key, p in optional.items():
        exists = p.is_dir() if key == "icd_dir" else p.is_file()
        files[key] = str(p) if exists else None
        if not exists:
            log.warning("%s (paths.%s) not found: that source is treated as empty", p, key)

    blood_wide = None
    if files["blood"]:
        long = read_blood(optional["blood"])
        blood_wide, n_resolved = pivot_blood(long, blood_duplicates)
        counts["blood_rows"] = len(long)
        counts["blood_duplicates_resolved"] = n_resolved
        log.info(
            "blood: %d measurements of %d patients; %d repeated (patient, analyte) measurements resolved "
            "by rule %r (pivot key: analyte_name)",
            len(long),
            long["patient_id"].nunique(),
            n_resolved,
            blood_duplicates,
        )
        tables["blood"], counts["blood_patients_without_feature_analytes"] = blood_table(blood_wide)
        tables["blood"], outlier_counts = blood_outlier(tables["blood"], blood_outlier_policy)
        counts.update(outlier_counts)
        seen["blood"] = set(long["patient_id"])
    else:
        tables["blood"], _ = blood_table(pd.DataFrame())
        seen["blood"] = set()
    reference = read_blood_reference(optional["blood_reference"]) if files["blood_reference"] else None

    icd_files: dict[str, Path] = {}
    if files["icd_dir"]:
        codes, icd_files, icd_counts = read_icd_dir(optional["icd_dir"])
        counts.update(icd_counts)
        tables["icd"] = icd_table(codes)
        seen["icd"] = set(codes)
        if icd_counts["icd_files_without_codes"]:
            log.info(
                "icd: %d files hold no bracketed code; those patients have no ICD modality",
                icd_counts["icd_files_without_codes"],
            )
    else:
        tables["icd"] = icd_table({})
        seen["icd"] = set()

    if files["cell_density"]:
        wide, cell_counts = read_cell_density(optional["cell_density"])
        counts.update(cell_counts)
        tables["cell"] = cell_table(wide)
        seen["cell"] = set(wide.index)
    else:
        tables["cell"] = cell_table(pd.DataFrame())
        seen["cell"] = set()

    return TabularSources(
        tables=tables,
        clinical=clinical,
        seen=seen,
        icd_files=icd_files,
        files=files,
        counts=counts,
        blood_wide=blood_wide,
        blood_reference=reference,
    )
