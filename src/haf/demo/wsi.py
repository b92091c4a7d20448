"""UNI-shaped WSI bags: ``PrimaryTumor_HE_<NNN>[_a].h5`` with ``features`` (N x 1024) and ``coords``.

Every instance is a patch embedding: a tissue-type prototype plus isotropic noise plus a slide-level
stain offset. A minority of instances (10-20 % of a bag) are "tumour" patches: a tumour prototype
shifted along one fixed unit direction ``d`` in proportion to the patient's WSI view ``x_wsi``.
The other tissue types' prototypes also lie at different positions along ``d`` and each slide mixes
them in its own proportions, so averaging all patches mostly measures the tissue composition;
a model that attends to the tumour patches reads the risk. Second slides (``_a``, about 1 % of the
patients with a slide) carry the same patient's view.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from haf.artifacts.bags import write_bag
from haf.demo.common import rng_for

DIM = 1024
N_TISSUE_TYPES = 6
SIGNAL_GAIN = (
    10.0  # shift of a tumour patch along d per SD of the WSI view (3.0 gave WSI-CLAM AUC ~0.5 at N=200)
)
PATCH_PX = 2048
CONFOUND_SD = 6.0  # spread of the other tissue types along d: averaging all patches mixes them in
TUMOUR_FRACTION = (0.10, 0.20)

SITE_FOLDERS = {
    "CUP": "CUP",
    "Hypopharynx": "Hypopharynx",
    "Larynx": "Larynx",
    "Oral_Cavity": "OralCavity",  # the zip/folder spelling differs from the JSON's
    "Oropharynx": "Oropharynx",  # split into _Part1 / _Part2 by patient order
}


@dataclass(frozen=True)
class WsiSpace:
    direction: np.ndarray  # (DIM,) unit vector carrying the risk
    tumour: np.ndarray  # (DIM,) tumour prototype, orthogonal to direction
    prototypes: np.ndarray  # (K, DIM) other tissue types


def wsi_space(seed: int) -> WsiSpace:
    """The fixed geometry of the demo's embedding space (the same for every patient of a seed)."""
    rng = rng_for(seed, "wsi_space")
    d = rng.standard_normal(DIM)
    d /= np.linalg.norm(d)
    protos = rng.normal(0.0, 0.5, (N_TISSUE_TYPES, DIM))
    protos -= np.outer(protos @ d, d)
    protos += np.outer(rng.normal(0.0, CONFOUND_SD, N_TISSUE_TYPES), d)  # confounds mean pooling
    tumour = rng.normal(0.0, 0.5, DIM)
    tumour -= (tumour @ d) * d
    return WsiSpace(
        direction=d.astype(np.float32), tumour=tumour.astype(np.float32), prototypes=protos.astype(np.float32)
    )


def wsi_signal_direction(seed: int) -> np.ndarray:
    """The unit direction along which tumour patches carry the risk (for tests and diagnostics)."""
    return wsi_space(seed).direction


def make_bag(
    rng: np.random.Generator, space: WsiSpace, view: float, n: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """One slide's (features, coords, number of tumour patches)."""
    frac = rng.uniform(*TUMOUR_FRACTION)
    n_tum = int(min(n, max(1, round(frac * n))))
    weights = rng.dirichlet(np.full(N_TISSUE_TYPES, 0.5))
    types = rng.choice(N_TISSUE_TYPES, size=n - n_tum, p=weights)
    feats = rng.standard_normal((n, DIM), dtype=np.float32)
    feats += rng.normal(0.0, 0.3, DIM).astype(np.float32)  # slide-level stain/scanner offset
    feats[:n_tum] += space.tumour + np.float32(SIGNAL_GAIN * view) * space.direction
    feats[n_tum:] += space.prototypes[types]
    order = rng.permutation(n)
    width = int(np.ceil(np.sqrt(1.6 * n)))
    cells = rng.choice(width * width, size=n, replace=False)
    origin = rng.integers(0, 30000, 2)
    coords = np.stack([cells % width, cells // width], axis=1) * PATCH_PX + origin
    return feats[order], coords.astype(np.int64), n_tum


def write_wsi_bags(
    root: Path,
    ids: list[str],
    sites: list[str],
    view: np.ndarray,
    available: np.ndarray,
    seed: int,
    bag_size: tuple[int, int],
) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """Write the h5 bags; returns counts and per patient (instances, tumour instances) over its slides."""
    rng = rng_for(seed, "wsi_bags")
    space = wsi_space(seed)
    lo, hi = int(bag_size[0]), int(bag_size[1])
    with_slide = [i for i in range(len(ids)) if available[i]]
    n_second = max(1, round(0.011 * len(with_slide))) if with_slide else 0
    second = (
        set(rng_for(seed, "wsi_second").choice(with_slide, size=n_second, replace=False).tolist())
        if n_second
        else set()
    )
    oro = [i for i in with_slide if sites[i] == "Oropharynx"]
    part2 = set(oro[(len(oro) + 1) // 2 :])

    per_patient: dict[str, tuple[int, int]] = {}
    counts = {"patients": len(with_slide), "files": 0, "second_slides": 0, "instances": 0}
    for i in with_slide:
        folder = SITE_FOLDERS[sites[i]]
        if sites[i] == "Oropharynx":
            folder += "_Part2" if i in part2 else "_Part1"
        target = root / f"WSI_PrimaryTumor_{folder}" / "h5_files"
        slides = [""] + (["_a"] if i in second else [])
        total = tumour = 0
        for suffix in slides:
            n = int(rng.integers(lo, hi + 1)) if suffix == "" else int(rng.integers(lo, max(lo, hi // 2) + 1))
            feats, coords, n_tum = make_bag(rng, space, float(view[i]), n)
            write_bag(
                target / f"PrimaryTumor_HE_{ids[i]}{suffix}.h5",
                feats,
                coords,
                attrs={"synthetic": "HAF-flow SYNTHETIC demo bag (not a real slide)"},
            )
            total += n
            tumour += n_tum
            counts["files"] += 1
            counts["second_slides"] += int(suffix == "_a")
        counts["instances"] += total
        per_patient[ids[i]] = (total, tumour)
    return counts, per_patient
