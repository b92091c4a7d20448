"""Reruns after editing raw inputs (issue 17): each modality's raw file is edited after a real run on a
copied 20-patient demo cohort (demo.enabled false), and the dry run must schedule exactly the rules that
read it (directly or through their inputs); undoing every edit leaves nothing to do.

Before the input inventories (haf.cohort.inventory) only the clinical and pathological JSON were
declared: editing blood, ICD, cell density, a core PNG or a WSI h5 gave "Nothing to be done".
About 45 s (one real run up to Stage 1 on one fold, then 10 dry runs).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from haf.demo import generate_demo_cohort
from haf.demo.common import SIGNAL_KEYS


def _targets(res: Path) -> list[str]:
    return [
        str(res / "tabular" / "fold_0.npz"),
        str(res / "tabular" / "fold_1.npz"),
        str(res / "features" / "tma" / "demo-texture" / "index.tsv"),
        str(res / "stage1" / "wsi" / "fold_0" / "embeddings.npz"),
    ]


def _scheduled(run) -> dict[str, int]:
    """Rule -> job count from a dry run's "Job stats" table (empty when nothing is to be done)."""
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = run.stdout + run.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)}


def _edit_json(path: Path, change: Callable[[list], None]) -> None:
    records = json.loads(path.read_text())
    change(records)
    path.write_text(json.dumps(records, indent=1))


def _bump_first(key: str) -> Callable[[list], None]:
    def change(records: list) -> None:
        record = next(r for r in records if isinstance(r.get(key), int | float))
        record[key] = record[key] + 1

    return change


def _edit_png(path: Path) -> None:
    pixels = np.array(Image.open(path))
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(path)


def _edit_h5(path: Path) -> None:
    with h5py.File(path, "r+") as handle:
        handle["features"][0, 0] += 0.5


def _edit_text(path: Path) -> None:
    path.write_text(path.read_text() + "\n[C77.0]\n")


def _old_mtime(path: Path) -> None:
    """An archive re-extracted with its own, older timestamps (a plain mtime comparison misses this)."""
    os.utime(path, ns=(946_684_800 * 10**9, 946_684_800 * 10**9))  # 2000-01-01


def test_editing_each_raw_input_reruns_exactly_its_dependants(tmp_path, snakemake_cli):
    data = tmp_path / "Hancock_Dataset"
    signal = dict.fromkeys(SIGNAL_KEYS, 1.0)
    generate_demo_cohort(data, n_patients=20, seed=5, signal=signal, wsi_bag_size=(6, 12), core_px=64)
    res = tmp_path / "results"
    config = {
        "data_root": str(data),
        "results": str(res),
        "logs": str(tmp_path / "logs"),
        "demo": {"enabled": False},
        "cv": {"k": 2, "val_fraction": 0.3},
        "tabular": {"icd_min_df": 1},
        "extract": {"encoder": "demo-texture", "tile_px": 32, "tile_mpp": 0.25, "core_mpp": 0.25},
        "stage1": {"max_epochs": 2, "es_patience": 1, "d1": 8, "d2": 4, "k_sample": 2},
        "device": "cpu",
    }
    run = snakemake_cli(tmp_path, "--", *_targets(res), override=config, cores=2, timeout=180)
    assert run.returncode == 0, run.stderr[-4000:]

    def dry_run() -> dict[str, int]:
        return _scheduled(snakemake_cli(tmp_path, "-n", "--", *_targets(res), cores=2, timeout=120))

    assert dry_run() == {}, "a finished run must leave nothing to do"
    inventories = sorted(p.name for p in (res / "cohort" / "inputs").iterdir())
    assert "tma_cores.tsv" in inventories and "wsi_h5.names.tsv" in inventories

    structured = data / "StructuredData"
    core = sorted((data / "TMA_TumorCenter_Cores" / "tma_tumorcenter_HE").glob("*.png"))[0]
    slide = sorted((data / "WSI_UNI_encodings").rglob("*.h5"))[0]
    cases: list[tuple[str, Path, Callable[[Path], None], dict[str, int]]] = [
        ("clinical", structured / "clinical_data.json",
         lambda p: _edit_json(p, _bump_first("age_at_initial_diagnosis")), {}),
        ("pathological", structured / "pathological_data.json",
         lambda p: _edit_json(p, _bump_first("infiltration_depth_in_mm")), {}),
        ("blood (older mtime)", structured / "blood_data.json",
         lambda p: (_edit_json(p, _bump_first("value")), _old_mtime(p)), {}),
        ("blood reference", structured / "blood_data_reference_ranges.json",
         lambda p: _edit_json(p, _bump_first("normal_male_max")), {}),
        ("icd", sorted((data / "TextData" / "icd_codes").glob("*.txt"))[0], _edit_text, {}),
        ("cell density", data / "TMA_CellDensityMeasurements" / "TMA_celldensity_measurements.csv",
         lambda p: p.write_text(p.read_text() + "\n"), {}),
        ("tma map (re-extracted)", data / "TMA_Maps" / "TMA_Map_block1.csv", os.utime, {}),
        # Stage 1 wsi reads no TMA bag, so a core edit reruns the extraction only
        ("tma core", core, _edit_png, {"extract_tma": 1}),
        ("wsi h5", slide, _edit_h5, {"stage1": 1}),
    ]  # fmt: skip
    # a manifest input reruns every job here: all of them read the manifest (directly or via folds.tsv)
    everything = {"manifest": 1, "targets": 1, "folds": 1, "tabular": 1, "extract_tma": 1, "stage1": 1}
    for name, path, edit, expected in cases:
        saved, stat = path.read_bytes(), path.stat()
        edit(path)
        got = dry_run()
        assert got == (expected or everything), f"{name}: {got}"
        path.write_bytes(saved)  # undo: same bytes and mtime as at the run
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    # every inventory is back to what the finished jobs recorded (Snakemake compares its checksum)
    assert dry_run() == {}
