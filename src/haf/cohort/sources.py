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


def load_tabular_sources(
    data_root: str | Path, paths: dict[str, Any], blood_duplicates: str = "closest_to_treatment"
) -> TabularSources:
    """Read clinical, pathological, blood, ICD and cell-density sources under ``data_root``.

    Clinical and pathological files are required; the others are optional (a missing one is logged
    and leaves that modality absent for everybody).
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
