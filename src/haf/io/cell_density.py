"""QuPath TMA cell-density export (``TMA_CellDensityMeasurements/TMA_celldensity_measurements.csv``).

One row per TMA core. Rows with ``Missing`` true and rows without a ``Case ID`` (empty grid positions)
are dropped and counted. Marker and location come from ``Image`` (``TumorCenter_CD3_block1.svs``);
an ``Image`` that does not parse is an error naming its line. The official features are the mean
``Num Positive per mm^2`` per patient, marker (CD3, CD8) and location: ``cd3_z, cd3_inv, cd8_z, cd8_inv``
(``z`` = TumorCenter, ``inv`` = InvasionFront). Rows of other markers are counted and not used.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from haf.errors import HafInputError
from haf.io.records import PATIENT_ID_RE, csv_line, numeric_column, read_csv_flexible

log = logging.getLogger(__name__)

IMAGE_RE = re.compile(r"(TumorCenter|InvasionFront)_([A-Za-z0-9-]+?)_block(\d+)", re.IGNORECASE)
DENSITY_COLUMN = "Num Positive per mm^2"
CELL_FEATURES: tuple[str, ...] = ("cd3_z", "cd3_inv", "cd8_z", "cd8_inv")
_LOCATION_SUFFIX = {"tumorcenter": "z", "invasionfront": "inv"}
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


def parse_image_name(image: str) -> tuple[str, str, int] | None:
    """``'TumorCenter_CD3_block1.svs'`` -> ``('TumorCenter', 'CD3', 1)``; None if it does not parse."""
    match = IMAGE_RE.search(image)
    if not match:
        return None
    location = "TumorCenter" if match.group(1).lower() == "tumorcenter" else "InvasionFront"
    return location, match.group(2).upper().replace("-", ""), int(match.group(3))


def read_cell_density(path: str | Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per-patient ``cd3_z, cd3_inv, cd8_z, cd8_inv`` (NaN where a patient has no such core) and counts."""
    path = Path(path)
    frame = read_csv_flexible(path, ["Image", "Case ID", DENSITY_COLUMN])
    n_rows = len(frame)
    counts = {"cell_rows": n_rows}

    if "Missing" in frame.columns:
        missing_raw = frame["Missing"].astype(str).str.strip().str.lower()
        unknown = ~missing_raw.isin(_TRUE | _FALSE)
        if unknown.any():
            pos = int(np.flatnonzero(unknown.to_numpy())[0])
            raise HafInputError(
                path,
                f"expected True/False, got {frame['Missing'].iloc[pos]!r}",
                where=csv_line(pos),
                field="Missing",
            )
        missing = missing_raw.isin(_TRUE).to_numpy()
    else:
        log.warning("%s: no 'Missing' column; every core is taken as present", path)
        missing = np.zeros(n_rows, dtype=bool)
    case = frame["Case ID"].astype(str).str.strip()
    no_case = (~missing) & case.str.lower().isin({"", "nan", "none", "null"}).to_numpy()
    counts["cell_rows_missing_dropped"] = int(missing.sum())
    counts["cell_rows_no_case_id_dropped"] = int(no_case.sum())

    keep = ~(missing | no_case)
    records = []
    density = numeric_column(frame, DENSITY_COLUMN, path, rows=keep)
    n_other_marker = 0
    n_no_density = 0
    for pos in np.flatnonzero(keep):
        image = str(frame["Image"].iloc[pos])
        parsed = parse_image_name(image)
        if parsed is None:
            raise HafInputError(
                path,
                f"cannot parse location/marker/block from {image!r} "
                "(expected e.g. TumorCenter_CD3_block1.svs or InvasionFront_CD8_block7.svs)",
                where=csv_line(pos),
                field="Image",
            )
        pid = case.iloc[pos]
        if not PATIENT_ID_RE.match(pid):
            raise HafInputError(
                path,
                f"patient id must be a 3-digit string such as '001', got {pid!r}",
                where=csv_line(pos),
                field="Case ID",
            )
        location, marker, _block = parsed
        if marker not in ("CD3", "CD8"):
            n_other_marker += 1
            continue
        value = density.iloc[pos]
        if np.isnan(value):
            n_no_density += 1
            continue
        records.append((pid, f"{marker.lower()}_{_LOCATION_SUFFIX[location.lower()]}", value))
    counts["cell_rows_other_marker_unused"] = n_other_marker
    counts["cell_rows_no_density_unused"] = n_no_density
    long = pd.DataFrame(records, columns=["patient_id", "feature", "value"])
    counts["cell_rows_used"] = len(long)
    if long.empty:
        wide = pd.DataFrame(columns=list(CELL_FEATURES), dtype=float)
    else:
        wide = long.groupby(["patient_id", "feature"])["value"].mean().unstack("feature")
    wide = wide.reindex(columns=list(CELL_FEATURES)).astype(float)
    wide.columns.name = None
    wide.index.name = None
    counts["cell_patients"] = int(wide.notna().any(axis=1).sum())
    log.info(
        "%s: %d rows; dropped %d Missing and %d without Case ID; %d of other markers and %d without a "
        "density not used; %d patients with a CD3/CD8 density",
        path,
        n_rows,
        counts["cell_rows_missing_dropped"],
        counts["cell_rows_no_case_id_dropped"],
        n_other_marker,
        n_no_density,
        counts["cell_patients"],
    )
    return wide, counts
