"""``cohort/manifest.tsv`` (rule ``manifest``): patient x modality availability and the files behind it.

Columns: ``patient_id``, ``has_<m>`` (0/1) for the seven modalities, ``wsi_files`` and ``tma_files``
(``;``-joined paths; main slide first, then ``_a`` slides), ``icd_file``, ``n_modalities``.
``modality_counts.json`` beside it holds the per-modality counts and the exclusions.
Paths are written as found (relative = to the working directory); :func:`resolve_listed` also
accepts them relative to the manifest's folder (a moved results folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from haf.artifacts.files import write_json, write_tsv
from haf.artifacts.tables import read_patient_table
from haf.errors import HafInputError
from haf.modalities import MODALITIES

MANIFEST_COLUMNS: tuple[str, ...] = (
    "patient_id",
    *(f"has_{m}" for m in MODALITIES),
    "wsi_files",
    "tma_files",
    "icd_file",
    "n_modalities",
)
FILE_COLUMNS: tuple[str, ...] = ("wsi_files", "tma_files")
TEXT_COLUMNS: tuple[str, ...] = (*FILE_COLUMNS, "icd_file")


def write_manifest(path: str | Path, manifest: pd.DataFrame, counts_path: str | Path, counts: Any) -> None:
    """Write the manifest (columns checked) and its counts JSON, atomically."""
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {', '.join(missing)}")
    write_tsv(path, manifest.loc[:, list(MANIFEST_COLUMNS)])
    write_json(counts_path, counts)


def read_manifest(path: str | Path, required: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Read ``manifest.tsv``: string ids (unique), 0/1 ``has_<m>``, file lists as strings ('' = none).

    ``required`` narrows the checked columns for readers that need only some (default: all but
    ``icd_file``, which older manifests lack).
    """
    columns = required or tuple(c for c in MANIFEST_COLUMNS if c != "icd_file")
    frame = read_patient_table(
        path, columns, keep_default_na=False, dtype=dict.fromkeys(TEXT_COLUMNS, str), what="manifest"
    )
    duplicated = frame["patient_id"].duplicated()
    if duplicated.any():
        row = int(duplicated.to_numpy().nonzero()[0][0])
        raise HafInputError(
            path,
            f"patient {frame['patient_id'].iloc[row]} listed twice",
            where=f"line {row + 2}",
            field="patient_id",
        )
    for m in MODALITIES:
        column = f"has_{m}"
        if column in frame.columns:
            try:
                frame[column] = frame[column].astype(int)
            except ValueError as exc:
                raise HafInputError(path, f"not 0/1: {exc}", field=column) from None
    for column in FILE_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].fillna("").astype(str)
    return frame


def listed_files(value: str) -> list[str]:
    """The paths of one ``;``-joined file cell, as written ('' = none)."""
    return [p.strip() for p in str(value).split(";") if p.strip()]


def resolve_listed(raw: str, manifest: str | Path) -> Path:
    """A listed path as written if it exists (or is absolute), else relative to the manifest's folder.

    When neither exists the path is returned as written; the caller decides whether that is an error
    (Stage 1: a missing WSI bag) or a counted failure (extraction: an unreadable core).
    """
    path = Path(raw)
    if path.is_absolute() or path.exists():
        return path
    beside = Path(manifest).parent / path
    return beside if beside.exists() else path
