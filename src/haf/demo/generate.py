"""generate_demo_cohort: write a SYNTHETIC cohort in the exact HANCOCK layout and formats.

The cohort plants known signal (see ``latent.py``): the pipeline's numbers on it show whether each
stage can find signal that is known to be there, never anything about real patients. Everything it
writes says SYNTHETIC: ``README.txt`` at the data root, the summary ``demo_cohort.json``, the log, and
an attribute of every h5 bag. ``demo_truth.tsv`` holds the hidden ground truth for tests; the
pipeline never reads it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from haf.artifacts.files import atomic_path, write_json
from haf.demo.blood import blood_records, reference_records
from haf.demo.common import (
    DEFAULT_PATHS,
    README_MARKER,
    SIGNAL_KEYS,
    SYNTHETIC_NOTE,
    patient_ids,
)
from haf.demo.icd import ICD_PREFIX, write_icd_files
from haf.demo.latent import CONTROLS, HORIZON_DAYS, Latent, apply_control, control_signal, draw_latent
from haf.demo.splits import split_records
from haf.demo.structured import clinical_records, pathological_records
from haf.demo.tma import Layout, tma_layout, write_cell_density, write_cores, write_maps
from haf.demo.wsi import write_wsi_bags
from haf.errors import HafConfigError

log = logging.getLogger("haf.demo")

SUMMARY_NAME = "demo_cohort.json"
TRUTH_NAME = "demo_truth.tsv"
README_NAME = "README.txt"
GENERATOR_VERSION = 1
MAX_PATIENTS = 999  # ids are 3-digit strings


def generate_demo_cohort(
    data_root: str | Path,
    *,
    n_patients: int,
    seed: int,
    signal: Mapping[str, float],
    wsi_bag_size: Sequence[int] = (24, 160),
    core_px: int = 256,
    markers: Sequence[str] = ("HE",),
    paths: Mapping[str, str] | None = None,
    control: str = "none",
) -> dict[str, Any]:
    """Write the demo cohort under ``data_root``; return the summary (also in ``demo_cohort.json``).

    ``signal`` gives each modality's strength (all seven keys of ``haf.modalities.MODALITIES``),
    ``paths`` the config ``paths`` section (locations inside ``data_root``; None = HANCOCK layout),
    ``control`` a control of the evidence machinery (``haf.demo.latent.CONTROLS``, docs/demo.md).
    The folder is created; an earlier demo cohort in it is replaced, but a folder that holds other
    files (e.g. a real download) is refused.
    """
    started = time.perf_counter()
    n, seed, signal_d, bag_size, core_px, markers_t, paths_d = _check_arguments(
        n_patients, seed, signal, wsi_bag_size, core_px, markers, paths
    )
    if control not in CONTROLS:
        raise HafConfigError(f"demo.control must be one of {', '.join(CONTROLS)}, got {control!r}")
    signal_d = control_signal(signal_d, control)
    root = Path(data_root)
    _prepare_root(root, paths_d)
    log.info("SYNTHETIC demo cohort: %d patients, seed %d, into %s", n, seed, root)
    if control != "none":
        log.info("SYNTHETIC demo cohort: CONTROL %s (docs/demo.md, Controls)", control)
    log.info("SYNTHETIC demo cohort: signal strengths %s", json.dumps(signal_d, sort_keys=True))
    _write_readme(root, n, seed, paths_d, control)

    ids = patient_ids(n)
    latent = apply_control(draw_latent(n, seed, signal_d), control, seed)
    pathological = pathological_records(ids, latent, seed)
    clinical = clinical_records(ids, latent, seed)
    sites = [r["primary_tumor_site"] for r in pathological]
    sexes = [r["sex"] for r in clinical]
    _write_records(root / paths_d["clinical"], clinical)
    _write_records(root / paths_d["pathological"], pathological)

    blood_rows, blood_counts = blood_records(ids, sexes, latent, seed)
    _write_records(root / paths_d["blood"], blood_rows)
    _write_records(root / paths_d["blood_reference"], reference_records())
    log.info(
        "SYNTHETIC blood: %d rows for %d patients (%d repeated measurements)",
        blood_counts["rows"],
        blood_counts["patients"],
        blood_counts["repeated_rows"],
    )

    icd_counts = write_icd_files(root / paths_d["icd_dir"], ids, sites, latent, seed)
    log.info("SYNTHETIC ICD: %d files, %d codes", icd_counts["files"], icd_counts["codes"])

    layout = tma_layout(ids, latent, seed)
    n_blocks = write_maps(root / paths_d["tma_maps"], layout)
    cell_counts = write_cell_density(root / paths_d["cell_density"], ids, layout, latent, seed)
    log.info(
        "SYNTHETIC TMA: %d blocks; density CSV %d rows (%d Missing, %d without Case ID)",
        n_blocks,
        cell_counts["rows"],
        cell_counts["missing_rows"],
        cell_counts["empty_case_id_rows"],
    )
    t0 = time.perf_counter()
    core_counts = write_cores(root / paths_d["tma_cores"], ids, layout, latent, seed, markers_t, core_px)
    log.info("SYNTHETIC TMA cores: %s PNGs in %.1f s", core_counts, time.perf_counter() - t0)

    t0 = time.perf_counter()
    wsi_counts, wsi_truth = write_wsi_bags(
        root / paths_d["wsi_h5"], ids, sites, latent.views["wsi"], latent.available["wsi"], seed, bag_size
    )
    log.info(
        "SYNTHETIC WSI: %d h5 files (%d second slides, %d instances) in %.1f s",
        wsi_counts["files"],
        wsi_counts["second_slides"],
        wsi_counts["instances"],
        time.perf_counter() - t0,
    )

    for name, records in split_records(ids, sites, latent.year, latent.event, seed).items():
        _write_records(root / paths_d["splits"] / name, records)

    _write_truth(root / TRUTH_NAME, ids, latent, layout, wsi_truth)

    summary = _summary(n, seed, signal_d, bag_size, core_px, markers_t, paths_d, latent)
    summary["control"] = control
    summary["files"] = {
        "blood": blood_counts,
        "icd": icd_counts,
        "tma_blocks": n_blocks,
        "cell_density": cell_counts,
        "tma_cores": core_counts,
        "wsi": wsi_counts,
    }
    for modality, count in summary["modality_counts"].items():
        log.info("SYNTHETIC modality %s: %d of %d patients", modality, count, n)
    s = summary["survival"]
    log.info(
        "SYNTHETIC survival: %d deaths; %d-day reference label for %d patients, %d positive",
        s["deaths"],
        HORIZON_DAYS,
        s["horizon_labelled"],
        s["horizon_positive"],
    )
    write_json(root / SUMMARY_NAME, summary)  # last: its presence means the cohort is complete
    log.info("SYNTHETIC demo cohort written in %.1f s", time.perf_counter() - started)
    return summary


# --------------------------------------------------------------------------------------------


def _check_arguments(
    n_patients: int,
    seed: int,
    signal: Mapping[str, float],
    wsi_bag_size: Sequence[int],
    core_px: int,
    markers: Sequence[str],
    paths: Mapping[str, str] | None,
) -> tuple[int, int, dict[str, float], tuple[int, int], int, tuple[str, ...], dict[str, str]]:
    if isinstance(n_patients, bool) or not isinstance(n_patients, int | np.integer):
        raise HafConfigError(f"demo.n_patients must be an integer, got {n_patients!r}")
    if not 1 <= int(n_patients) <= MAX_PATIENTS:
        raise HafConfigError(f"demo.n_patients must be 1..{MAX_PATIENTS} (3-digit ids), got {n_patients}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise HafConfigError(f"demo.seed must be a non-negative integer, got {seed!r}")
    unknown = sorted(set(signal) - set(SIGNAL_KEYS))
    if unknown:
        raise HafConfigError(
            f"demo.signal: unknown modality {unknown[0]!r}; expected {', '.join(SIGNAL_KEYS)}"
        )
    missing = [k for k in SIGNAL_KEYS if k not in signal]
    if missing:
        raise HafConfigError(f"demo.signal.{missing[0]} is missing (give all of {', '.join(SIGNAL_KEYS)})")
    signal_d = {}
    for key in SIGNAL_KEYS:
        value = float(signal[key])
        if not np.isfinite(value) or value < 0:
            raise HafConfigError(f"demo.signal.{key} must be a finite number >= 0, got {signal[key]!r}")
        signal_d[key] = value
    if len(wsi_bag_size) != 2 or not 1 <= int(wsi_bag_size[0]) <= int(wsi_bag_size[1]):
        raise HafConfigError(
            f"demo.wsi_bag_size must be [lo, hi] with 1 <= lo <= hi, got {list(wsi_bag_size)}"
        )
    if not 32 <= int(core_px) <= 4096:
        raise HafConfigError(f"demo.core_px must be 32..4096, got {core_px}")
    markers_t = tuple(str(m) for m in markers)
    if not markers_t or any(not m.isalnum() for m in markers_t):
        raise HafConfigError(
            f"extract.markers must be non-empty alphanumeric names (e.g. HE, CD3), got {list(markers)}"
        )
    paths_d = dict(DEFAULT_PATHS)
    if paths is not None:
        unknown = sorted(set(paths) - set(DEFAULT_PATHS))
        if unknown:
            raise HafConfigError(f"paths.{unknown[0]} is not a known location")
        paths_d.update({k: str(v) for k, v in paths.items()})
    for key, value in paths_d.items():
        p = PurePosixPath(value)
        if not value or p.is_absolute() or ".." in p.parts or str(p) in ("", "."):
            raise HafConfigError(f"paths.{key} must be a relative location inside data_root, got {value!r}")
    return (
        int(n_patients),
        int(seed),
        signal_d,
        (int(wsi_bag_size[0]), int(wsi_bag_size[1])),
        int(core_px),
        markers_t,
        paths_d,
    )


def _prepare_root(root: Path, paths: dict[str, str]) -> None:
    """Create ``root``; clear an earlier demo cohort in it; refuse a folder holding other data."""
    readme = root / README_NAME
    if root.exists() and not root.is_dir():
        raise HafConfigError(f"data_root {str(root)!r} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        is_demo = readme.is_file() and readme.read_text(encoding="utf-8").startswith(README_MARKER)
        if not is_demo:
            raise HafConfigError(
                f"data_root {str(root)!r} already holds files but no demo {README_NAME}: refusing to write "
                "the synthetic demo cohort over what may be a real download. Point data_root at an empty "
                "or demo folder, or set demo.enabled: false to use the data there."
            )
        removed = 0
        for rel in [*paths.values(), TRUTH_NAME, SUMMARY_NAME, README_NAME]:
            target = root / rel
            if target.is_dir():
                shutil.rmtree(target)
                removed += 1
            elif target.exists():
                target.unlink()
                removed += 1
        log.info(
            "SYNTHETIC demo cohort: replaced an earlier demo cohort in %s (%d locations cleared)",
            root,
            removed,
        )
    root.mkdir(parents=True, exist_ok=True)


def _write_readme(root: Path, n: int, seed: int, paths: dict[str, str], control: str = "none") -> None:
    lines = [
        README_MARKER,
        "=" * len(README_MARKER),
        "",
        SYNTHETIC_NOTE,
        "",
        f"Generated by haf.demo (version {GENERATOR_VERSION}) with seed {seed} for {n} patients.",
        "A latent risk drives simulated survival; each modality sees it with its own strength (see",
        f"{SUMMARY_NAME}). Results on these files say whether the pipeline finds known planted signal,",
        "nothing about head-and-neck cancer.",
        *(
            [
                f"CONTROL cohort ({control}): built so that claims can or cannot hold by construction (docs/demo.md).",
                "",
            ]
            if control != "none"
            else [""]
        ),
        f"{TRUTH_NAME}: the SYNTHETIC ground truth (latent risk, per-modality views, survival) for tests",
        "only; the pipeline never reads it.",
        "",
        "Layout (the HANCOCK download's):",
        *[f"  {key}: {value}" for key, value in sorted(paths.items())],
        f"  ICD files are named {ICD_PREFIX}_<NNN>.txt (the real prefix is unknown).",
        "",
    ]
    (root / README_NAME).write_text("\n".join(lines), encoding="utf-8")


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """A JSON array of records, UTF-8, nulls as null (what ``pd.read_json(orient="records")`` reads)."""
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(
            json.dumps(records, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8"
        )


def _write_truth(
    path: Path, ids: list[str], latent: Latent, layout: Layout, wsi_truth: dict[str, tuple[int, int]]
) -> None:
    label = latent.horizon_label()
    frame = pd.DataFrame(
        {
            "patient_id": ids,
            "latent_risk": np.round(latent.risk, 6),
            "outcome_risk": np.round(latent.outcome, 6),
            **{f"x_{m}": np.round(v, 6) for m, v in latent.views.items()},
            "time": latent.time,
            "event": latent.event,
            f"label_{HORIZON_DAYS}d": pd.array(
                [None if np.isnan(v) else int(v) for v in label], dtype="Int64"
            ),
            **{f"has_{m}": latent.available[m].astype(int) for m in ("wsi", "tma", "cell", "blood", "icd")},
            "tma_positions": [len(layout.cores.get(pid, [])) for pid in ids],
            "wsi_instances": [wsi_truth.get(pid, (0, 0))[0] for pid in ids],
            "wsi_tumour_instances": [wsi_truth.get(pid, (0, 0))[1] for pid in ids],
        }
    )
    with atomic_path(path, ".tsv") as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(
                "# SYNTHETIC ground truth of the HAF-flow demo cohort, for tests only: the pipeline never "
                "reads this file. Read with pandas.read_csv(path, sep='\\t', comment='#', dtype={'patient_id': str}).\n"
            )
            frame.to_csv(handle, sep="\t", index=False)


def _summary(
    n: int,
    seed: int,
    signal: dict[str, float],
    bag_size: tuple[int, int],
    core_px: int,
    markers: tuple[str, ...],
    paths: dict[str, str],
    latent: Latent,
) -> dict[str, Any]:
    label = latent.horizon_label()
    living = latent.event == 0
    counts = {
        "wsi": int(latent.available["wsi"].sum()),
        "tma": int(latent.available["tma"].sum()),
        "cell": int(latent.available["cell"].sum()),
        "clin": n,
        "path": n,
        "blood": int(latent.available["blood"].sum()),
        "icd": int(latent.available["icd"].sum()),
    }
    return {
        "synthetic": True,
        "note": SYNTHETIC_NOTE,
        "generator": "haf.demo",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_patients": n,
        "signal": signal,
        "wsi_bag_size": list(bag_size),
        "wsi_feature_dim": 1024,
        "core_px": core_px,
        "markers": list(markers),
        "paths": paths,
        "icd_prefix": ICD_PREFIX,
        "truth_file": TRUTH_NAME,
        "modality_counts": counts,
        "survival": {
            "deaths": int(latent.event.sum()),
            "median_followup_living_days": float(np.median(latent.time[living])) if living.any() else None,
            "horizon_days": HORIZON_DAYS,
            "horizon_labelled": int(np.isfinite(label).sum()),
            "horizon_positive": int(np.nansum(label)),
        },
    }
