"""The cohort manifest: one row per patient with at least one modality, availability and file paths.

Contract (docs/ARCHITECTURE.md, ``cohort/manifest.tsv``): ``patient_id``, ``has_<m>`` for the seven
modalities, ``wsi_files`` and ``tma_files`` (``;``-joined), ``n_modalities``; we add ``icd_file``.
A patient that some source mentions but who ends up with no modality at all (e.g. only a TMA map
entry, an ICD file without codes, an empty WSI bag) is excluded and counted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from haf.artifacts.manifest import MANIFEST_COLUMNS
from haf.cohort.sources import TabularSources, load_tabular_sources, source_path
from haf.errors import HafInputError
from haf.io.blood import blood_range_flags
from haf.io.records import PATIENT_ID_RE
from haf.io.tma import list_tma_cores, read_tma_maps
from haf.io.wsi import check_bag_header, list_wsi_h5
from haf.modalities import MODALITIES, TABULAR

log = logging.getLogger(__name__)


def build_manifest(
    data_root: str | Path,
    paths: dict[str, Any],
    markers: list[str] | tuple[str, ...],
    wsi_dim: int | None = 1024,
    blood_duplicates: str = "closest_to_treatment",
    sources: TabularSources | None = None,
    progress: bool = True,
    blood_outlier_policy: str = "keep",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Scan a HANCOCK folder; return the manifest and the counts written to ``modality_counts.json``.

    Every WSI h5 is checked from its metadata (``features`` present, width ``wsi_dim``); slides with
    an empty ``features`` are dropped and counted. Core images are checked against the TMA maps.
    """
    data_root = Path(data_root)
    if sources is None:
        sources = load_tabular_sources(data_root, paths, blood_duplicates, blood_outlier_policy)
    counts: dict[str, Any] = dict(sources.counts)

    # WSI: released UNI bags, pooled per patient (main slide first).
    wsi_root = source_path(data_root, paths, "wsi_h5")
    if not wsi_root.is_dir():
        log.warning("%s (paths.wsi_h5) not found: no patient has a WSI", wsi_root)
    slides = list_wsi_h5(wsi_root)
    wsi_files: dict[str, list[Path]] = {}
    n_empty = n_instances = 0
    all_slides = [(pid, p) for pid, ps in slides.items() for p in ps]
    for pid, path in tqdm(all_slides, desc="WSI h5 headers", disable=not progress or not all_slides):
        n = check_bag_header(path, wsi_dim)
        if n == 0:
            n_empty += 1
            continue
        n_instances += n
        wsi_files.setdefault(pid, []).append(path)
    counts["wsi_slides"] = len(all_slides)
    counts["wsi_slides_empty_dropped"] = n_empty
    counts["wsi_extra_slides_pooled"] = sum(max(len(ps) - 1, 0) for ps in wsi_files.values())
    counts["wsi_instances"] = n_instances

    # TMA: core images of the configured markers, checked against the maps.
    maps_dir = source_path(data_root, paths, "tma_maps")
    maps = read_tma_maps(maps_dir)
    if not maps:
        log.warning(
            "%s (paths.tma_maps) holds no TMA_Map_block<k>.csv: core names cannot be checked", maps_dir
        )
    cores_dir = source_path(data_root, paths, "tma_cores")
    if not cores_dir.is_dir():
        log.warning("%s (paths.tma_cores) not found: no patient has TMA core images", cores_dir)
    cores, core_counts = list_tma_cores(cores_dir, markers, maps)
    counts.update(core_counts)
    counts["tma_maps"] = len(maps)
    map_patients = {pid for _, mapping in maps.values() for pid in mapping.values() if pid is not None}

    has = {
        "wsi": set(wsi_files),
        "tma": set(cores),
        **{m: set(sources.tables[m].index) for m in TABULAR},
    }
    seen = set().union(*sources.seen.values(), slides, cores, map_patients)
    for pid in seen:  # ids from every reader were validated; this guards the union
        if not (isinstance(pid, str) and PATIENT_ID_RE.match(pid)):
            raise HafInputError(None, f"invalid patient id {pid!r} in the cohort sources", field="patient_id")

    rows = []
    excluded = []
    for pid in sorted(seen):
        flags = {m: int(pid in has[m]) for m in MODALITIES}
        n_mod = sum(flags.values())
        if n_mod == 0:
            excluded.append(pid)
            continue
        rows.append(
            {
                "patient_id": pid,
                **{f"has_{m}": flags[m] for m in MODALITIES},
                "wsi_files": ";".join(str(p) for p in wsi_files.get(pid, [])),
                "tma_files": ";".join(str(p) for p in cores.get(pid, [])),
                "icd_file": str(sources.icd_files[pid]) if pid in has["icd"] else "",
                "n_modalities": n_mod,
            }
        )
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    if manifest.empty:
        raise HafInputError(data_root, "no patient with any modality found (check data_root and paths)")

    per_modality = {m: int(manifest[f"has_{m}"].sum()) for m in MODALITIES}
    counts.update(
        {
            "n_patients": len(manifest),
            "n_patients_seen": len(seen),
            "n_excluded_no_modality": len(excluded),
            "excluded_no_modality": excluded,
            "per_modality": per_modality,
            "n_modalities_histogram": {
                str(k): int(v) for k, v in manifest["n_modalities"].value_counts().sort_index().items()
            },
            "all_seven": int((manifest["n_modalities"] == len(MODALITIES)).sum()),
            "markers": list(markers),
            "sources": {k: v for k, v in sources.files.items()},
        }
    )
    log.info("manifest: %d patients (%d seen in the sources)", len(manifest), len(seen))
    for m in MODALITIES:
        log.info("  %-5s %4d patients (%.1f %%)", m, per_modality[m], 100.0 * per_modality[m] / len(manifest))
    if excluded:
        log.warning(
            "%d patients excluded: no modality at all (%s%s)",
            len(excluded),
            ", ".join(excluded[:20]),
            " ..." if len(excluded) > 20 else "",
        )
    else:
        log.info("0 patients excluded for having no modality")
    log.info(
        "WSI: %d slides (%d empty dropped, %d extra slides pooled); TMA: %d core images of markers %s",
        counts["wsi_slides"],
        n_empty,
        counts["wsi_extra_slides_pooled"],
        counts["tma_cores"],
        ", ".join(markers),
    )
    _log_blood_ranges(sources, counts)
    _log_unused_folders(data_root, paths, counts)
    return manifest, counts


def unused_folders(data_root: str | Path, paths: dict[str, Any], depth: int = 3) -> list[str]:
    """Folders under ``data_root`` that no configured path reads (relative, sorted), e.g. the
    lymph-node slides ``WSI_UNI_encodings/WSI_LymphNode`` or ``TextData/reports``.

    Walks only down the ancestors of the configured paths (at most ``depth`` levels), so it costs a few
    directory listings however large the download.
    """
    root = Path(data_root)
    used = [(root / str(p)).resolve() for p in paths.values()]
    unused: list[str] = []

    def walk(folder: Path, level: int) -> None:
        try:
            children = sorted(c for c in folder.iterdir() if c.is_dir() and not c.name.startswith("."))
        except OSError:
            return
        for child in children:
            resolved = child.resolve()
            if any(resolved == u or u in resolved.parents for u in used):
                continue  # read by the pipeline (or inside a folder that is)
            if any(resolved in u.parents for u in used):
                if level < depth:
                    walk(child, level + 1)
                continue
            unused.append(child.relative_to(root).as_posix())

    if root.is_dir():
        walk(root, 1)
    return unused


def _log_unused_folders(data_root: Path, paths: dict[str, Any], counts: dict[str, Any]) -> None:
    unused = unused_folders(data_root, paths)
    counts["unused_folders"] = unused
    if not unused:
        return
    notes = {"LymphNode": "lymph-node slides: HAF's WSI modality is the primary tumour (paths.wsi_h5)"}
    described = [
        next((f"{u} ({note})" for key, note in notes.items() if key.lower() in u.lower()), u) for u in unused
    ]
    log.info("folders present in %s but not used: %s", data_root, "; ".join(described))


def _log_blood_ranges(sources: TabularSources, counts: dict[str, Any]) -> None:
    """Share of blood values outside the sex-specific normal range (information; features stay raw)."""
    if sources.blood_reference is None or sources.tables["blood"].empty:
        return
    sex = sources.clinical["sex"].map(lambda s: s.strip().lower() if isinstance(s, str) else None)
    flags = blood_range_flags(sources.tables["blood"], sex, sources.blood_reference)
    outside: dict[str, float] = {}
    for analyte in flags.columns:
        known = flags[analyte].dropna()
        if len(known):
            outside[analyte] = round(float(np.mean(known != 0)), 4)
    counts["blood_fraction_outside_sex_specific_range"] = outside
    if outside:
        log.info(
            "blood: fraction of values outside the sex-specific normal range: %s",
            ", ".join(f"{a} {v:.2f}" for a, v in outside.items()),
        )
