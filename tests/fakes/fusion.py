"""Synthetic :class:`FoldInputs` with planted signal and HANCOCK-like missingness (tests and benchmarks).

Not the demo cohort (that one is generated as raw HANCOCK files and goes through every rule); this
builds one fold's inputs directly, so Stage 2/3 can be tested and timed without Stage 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from haf.artifacts.fold_inputs import FoldInputs
from haf.demo.common import DEFAULT_SIGNAL  # the demo's per-modality signal strengths
from haf.modalities import MODALITIES

# Availability in the real cohort (HANCOCK.md: WSI 705/763, blood 693, ICD 712, cell densities 736;
# TMA cores for most patients; clinical and pathological data for everyone).
HANCOCK_AVAILABILITY: dict[str, float] = {
    "wsi": 705 / 763,
    "tma": 0.95,
    "cell": 736 / 763,
    "clin": 1.0,
    "path": 1.0,
    "blood": 693 / 763,
    "icd": 712 / 763,
}
# Feature widths: Stage 1 z (d1 = 64) for pathology, HANCOCK-sized tabular encodings.
DEFAULT_DIMS: dict[str, int] = {
    "wsi": 64,
    "tma": 64,
    "cell": 24,
    "clin": 20,
    "path": 30,
    "blood": 40,
    "icd": 40,
}


def synthetic_fold_inputs(
    n: int = 763,
    *,
    fold: int = 0,
    n_folds: int = 10,
    val_fraction: float = 0.15,
    seed: int = 0,
    availability: dict[str, float] | None = None,
    signal: dict[str, float] | None = None,
    dims: dict[str, int] | None = None,
    horizon: float = 1825.0,
) -> FoldInputs:
    """One fold of a synthetic cohort: latent risk r, modality features = signal_m * r * w_m + noise.

    Survival time is exponential with hazard proportional to exp(1.2 r); follow-up is censored
    uniformly, so about half of the patients have a 5-year binary label, as in HANCOCK.  Test part =
    fold ``fold`` of ``n_folds`` (patients assigned round-robin after a seeded shuffle), val part =
    ``val_fraction`` of the rest.  Every patient keeps at least one modality.
    """
    availability = {**HANCOCK_AVAILABILITY, **(availability or {})}
    signal = {**DEFAULT_SIGNAL, **(signal or {})}
    dims = {**DEFAULT_DIMS, **(dims or {})}
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time_event = rng.exponential(2000.0 * np.exp(-1.2 * risk))
    censor = rng.uniform(300, 5000, size=n)
    time = np.minimum(time_event, censor).round() + 1
    event = (time_event <= censor).astype(np.int64)
    label = np.where(event.astype(bool) & (time <= horizon), 1.0, np.where(time > horizon, 0.0, np.nan))
    present = np.column_stack([rng.random(n) < availability[m] for m in MODALITIES])
    empty = ~present.any(axis=1)
    present[empty, MODALITIES.index("clin")] = True
    features = {}
    for j, m in enumerate(MODALITIES):
        direction = rng.normal(size=dims[m])
        direction /= np.linalg.norm(direction)
        x = signal[m] * risk[:, None] * direction[None, :] + rng.normal(scale=1.0, size=(n, dims[m]))
        features[m] = (x * present[:, j : j + 1]).astype(np.float32)
    order = rng.permutation(n)
    part = np.empty(n, dtype=object)
    test = order[fold::n_folds]
    rest = np.setdiff1d(order, test)
    rest = rng.permutation(rest)
    n_val = max(2, int(round(val_fraction * len(rest))))
    part[rest[:n_val]] = "val"
    part[rest[n_val:]] = "train"
    part[test] = "test"
    return FoldInputs(
        fold=fold,
        patient_id=np.array([f"{i:03d}" for i in range(1, n + 1)], dtype=object),
        part=part,
        label=label,
        time=time.astype(float),
        event=event,
        present=present,
        features=features,
        columns={m: [f"{m}_{k}" for k in range(dims[m])] for m in MODALITIES},
    ).validate("<synthetic>")


def synthetic_bags(
    inputs: FoldInputs,
    directory: str | Path,
    *,
    seed: int = 0,
    dim: int = 1024,
    sizes: tuple[int, int] = (24, 160),
    signal_fraction: float = 0.3,
) -> dict:
    """WSI/TMA bags (h5, CLAM layout) carrying the fold inputs' pathology signal; returns BagStores.

    Each present patient gets a bag of ``sizes`` instances of ``dim``-d noise; a ``signal_fraction`` of
    its instances also carries a fixed random linear map of the patient's (synthetic) Stage 1 feature
    row, so an attention-MIL encoder can recover the planted signal.  For the no-detach tests/benchmark.
    """
    from haf.artifacts.bags import write_bag
    from haf.mil.bags import BagStore

    rng = np.random.default_rng(seed)
    directory = Path(directory)
    stores = {}
    for pm in ("wsi", "tma"):
        j = MODALITIES.index(pm)
        feats = inputs.features[pm]
        lift = rng.normal(scale=1.0 / np.sqrt(max(feats.shape[1], 1)), size=(feats.shape[1], dim))
        files = {}
        for i in np.flatnonzero(inputs.present[:, j]):
            n = int(rng.integers(sizes[0], sizes[1] + 1))
            bag = rng.normal(size=(n, dim)).astype(np.float32)
            hot = rng.random(n) < signal_fraction
            hot[rng.integers(n)] = True
            bag[hot] += (feats[i] @ lift).astype(np.float32)
            path = directory / pm / f"{inputs.patient_id[i]}.h5"
            write_bag(path, bag, np.zeros((n, 2), dtype=np.int32), {"feature_dim": dim})
            files[str(inputs.patient_id[i])] = [path]
        stores[pm] = BagStore.from_files(files, name=pm, dim=dim)
    return stores


def fake_stage1_models(
    directory: str | Path,
    stores: dict,
    folds: list[int],
    *,
    d1: int,
    d2: int,
    dropout: float,
    seed: int = 100,
) -> dict[str, list[Path]]:
    """``{pm}/fold_{k}/model.pt`` files in the Stage 1 contract (``haf.artifacts.stage1_model``), one
    seeded CLAM model per pathology modality and fold (a different init each: the warm-start tests can
    tell the folds' models and a fresh init apart).  Returns pathology modality -> paths in fold order."""
    import torch

    from haf.artifacts.stage1_model import write_stage1_model
    from haf.mil.clam import GatedAttentionMIL

    directory = Path(directory)
    paths: dict[str, list[Path]] = {}
    for j, (pm, store) in enumerate(sorted(stores.items())):
        paths[pm] = []
        for fold in folds:
            torch.manual_seed(seed + 100 * j + fold)
            model = GatedAttentionMIL(store.dim, d1, d2, dropout)
            with torch.no_grad():  # Xavier init leaves the biases at zero: give them values too
                for name, p in model.named_parameters():
                    if name.endswith("bias"):
                        p.normal_(0.0, 0.1)
            path = directory / pm / f"fold_{fold}" / "model.pt"
            meta = {"pmod": pm, "fold": fold, "seed": seed + fold, "best_epoch": 7}
            write_stage1_model(path, model.checkpoint(**meta))
            paths[pm].append(path)
    return paths
