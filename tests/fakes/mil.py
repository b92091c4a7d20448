"""Synthetic Stage 1 cohorts in the pipeline's file contracts, for tests and ``bench/bench_stage1.py``.

Writes h5 bags (:func:`haf.artifacts.bags.write_bag`), ``manifest.tsv``, ``targets.tsv``, ``folds.tsv`` and a TMA
``index.tsv`` exactly as the cohort and extraction rules do.  Labels are Bernoulli(``positive_rate``);
in a patient with label 1 a minority of instances (``signal_fraction``) is shifted by ``signal`` along
one fixed unit direction, so an attention model can find them while the bag mean dilutes them.
``signal = 0`` gives a pure-noise modality.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from haf.artifacts.bags import write_bag
from haf.artifacts.files import write_tsv
from haf.artifacts.folds import write_folds
from haf.artifacts.targets import write_targets
from haf.artifacts.tma_index import write_tma_index


@dataclass
class BagSpec:
    """Bags of one modality: instance counts drawn uniformly in [min_n, max_n]."""

    min_n: int
    max_n: int
    dim: int
    signal: float = 0.0
    signal_fraction: tuple[float, float] = (0.1, 0.2)
    coverage: float = 1.0  # share of patients that have this modality


@dataclass
class SyntheticCohort:
    root: Path
    manifest: Path
    targets: Path
    folds: Path
    tma_index: Path
    labels: np.ndarray
    patient_ids: list[str]


def _bag(rng: np.random.Generator, spec: BagSpec, direction: np.ndarray, label: int, n: int) -> np.ndarray:
    x = rng.standard_normal((n, spec.dim), dtype=np.float32)
    if label == 1 and spec.signal:
        k = max(1, int(round(rng.uniform(*spec.signal_fraction) * n)))
        x[rng.choice(n, size=k, replace=False)] += np.float32(spec.signal) * direction
    return x


def write_synthetic_cohort(
    root: str | Path,
    *,
    n_patients: int,
    wsi: BagSpec | None,
    tma: BagSpec | None = None,
    k: int = 5,
    val_fraction: float = 0.15,
    positive_rate: float = 0.4,
    seed: int = 0,
    second_slide_rate: float = 0.0,
    store_dtype: str = "float32",
) -> SyntheticCohort:
    """Write a cohort under ``root``; returns the paths.  Folds are stratified by label."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    pids = [f"{i + 1:03d}" for i in range(n_patients)]
    labels = (rng.random(n_patients) < positive_rate).astype(int)
    labels[:2] = (0, 1)  # both classes always exist
    directions = {}
    for name, spec in (("wsi", wsi), ("tma", tma)):
        if spec is not None:
            d = rng.standard_normal(spec.dim).astype(np.float32)
            directions[name] = d / np.linalg.norm(d)
    manifest_rows, index_rows = [], []
    for pid, y in zip(pids, labels, strict=True):
        wsi_files = []
        if wsi is not None and rng.random() < wsi.coverage:
            slides = [f"PrimaryTumor_HE_{pid}"] + (
                [f"PrimaryTumor_HE_{pid}_a"] if rng.random() < second_slide_rate else []
            )
            for slide in slides:
                path = root / "wsi" / f"{slide}.h5"
                x = _bag(rng, wsi, directions["wsi"], int(y), int(rng.integers(wsi.min_n, wsi.max_n + 1)))
                _write(path, x, store_dtype)
                wsi_files.append(str(path))
        has_tma = tma is not None and rng.random() < tma.coverage
        if has_tma:
            path = root / "tma" / "h5" / f"{pid}.h5"
            x = _bag(rng, tma, directions["tma"], int(y), int(rng.integers(tma.min_n, tma.max_n + 1)))
            _write(path, x, store_dtype, {"feature_dim": tma.dim, "encoder": "synthetic"})
            index_rows.append(
                {
                    "patient_id": pid,
                    "h5_path": str(path),
                    "n_cores": 1,
                    "n_tiles": len(x),
                    "n_empty_cores": 0,
                    "status": "ok",
                }
            )
        manifest_rows.append(
            {
                "patient_id": pid,
                "has_wsi": int(bool(wsi_files)),
                "has_tma": int(has_tma),
                "wsi_files": ";".join(wsi_files),
                "tma_files": "",
                "n_modalities": int(bool(wsi_files)) + int(has_tma),
            }
        )
    manifest = root / "manifest.tsv"
    write_tsv(manifest, pd.DataFrame(manifest_rows))
    tma_index = root / "tma" / "index.tsv"
    tma_index.parent.mkdir(parents=True, exist_ok=True)
    write_tma_index(tma_index, [dict(r, n_failed_cores=0) for r in index_rows])
    targets = root / "targets.tsv"
    time = rng.uniform(100, 3000, n_patients).round()
    write_targets(
        targets,
        pd.DataFrame(
            {"patient_id": pids, "time": time, "event": labels, "label": labels, "label_reason": "synthetic"}
        ),
    )
    folds = root / "folds.tsv"
    write_folds(folds, pd.DataFrame(stratified_folds(pids, labels, k, val_fraction, seed)))
    return SyntheticCohort(root, manifest, targets, folds, tma_index, labels, pids)


def _write(path: Path, x: np.ndarray, dtype: str, attrs: dict | None = None) -> None:
    coords = np.zeros((len(x), 2), dtype=np.int32)
    if dtype == "float32":
        write_bag(path, x, coords, attrs)
        return
    import h5py  # a float16 h5 halves the benchmark's disk; read_bag returns float32 either way

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", data=x.astype(dtype))
        handle.create_dataset("coords", data=coords)
        for key, value in (attrs or {}).items():
            handle.attrs[key] = value


def stratified_folds(
    pids: list[str], labels: np.ndarray, k: int, val_fraction: float, seed: int
) -> list[dict]:
    """Long ``patient_id, fold, part`` rows: stratified test folds, a stratified val share of the rest."""
    rng = np.random.default_rng(seed + 1)
    fold_of = np.zeros(len(pids), dtype=int)
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        fold_of[idx] = np.arange(len(idx)) % k
    rows = []
    for fold in range(k):
        rest = np.flatnonzero(fold_of != fold)
        val = set()
        for cls in np.unique(labels[rest]):
            idx = rng.permutation(rest[labels[rest] == cls])
            val.update(idx[: max(1, int(round(val_fraction * len(idx))))].tolist())
        for i, pid in enumerate(pids):
            part = "test" if fold_of[i] == fold else ("val" if i in val else "train")
            rows.append({"patient_id": pid, "repeat": 0, "fold": fold, "part": part})
    return rows
