"""TMA blocks: maps, the QuPath cell-density CSV and small H&E-like tumour-centre core images.

Layout. Patients on the TMAs get two neighbouring positions of a 12 x 6 block (row-major, a pair may
wrap to the next row); each block holds 33 patients and 6 empty positions in a seeded order. The same
map serves every marker and both regions (tumour centre, invasion front), as HANCOCK's one set of
``TMA_Map_block<k>.csv`` does.

Cell densities. One CSV row per grid position, marker (CD3, CD8) and region, QuPath's column set.
Empty positions have an empty ``Case ID``; lost cores have ``Missing`` True and no measurements.
Densities are log-normal around HANCOCK's medians and fall with the cell view ``x_cell`` (immune
infiltration is protective).

Core images. A roughly circular tissue region with an irregular edge and a few holes on a white
background (tissue masking matters), pink stroma with low-frequency texture, purple nuclei. The nuclei
get denser, larger and darker with the TMA view ``x_tma``; staining, size, holes, lymphocyte-like dots
and pixel noise vary independently, so the signal is present but not trivial. IHC markers (anything
but HE) are rendered as a pale counterstain with blue nuclei, a share of them brown (DAB), that share
falling with ``x_tma``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from haf.demo.common import rng_for, sigmoid
from haf.demo.latent import Latent

ROWS, COLS = 12, 6
PATIENTS_PER_BLOCK = 33
REGIONS = ("TumorCenter", "InvasionFront")
DENSITY_MARKERS = ("CD3", "CD8")
# HANCOCK medians of the per-patient mean density (cells/mm^2): cd3_z, cd3_inv, cd8_z, cd8_inv
MEDIAN_DENSITY = {
    ("TumorCenter", "CD3"): 552.0,
    ("InvasionFront", "CD3"): 484.0,
    ("TumorCenter", "CD8"): 389.0,
    ("InvasionFront", "CD8"): 342.0,
}
CORE_DIAMETER_MM = 1.9
SPACING_UM = 2400.0
CSV_COLUMNS = (
    "Image",
    "Name",
    "Missing",
    "Centroid X \u00b5m",
    "Centroid Y \u00b5m",
    "Case ID",
    "Num Detections",
    "Num Negative",
    "Num Positive",
    "Positive %",
    "Num Positive per mm^2",
)


@dataclass(frozen=True)
class Layout:
    """Where each patient sits: ``blocks[b]`` lists 72 (row, col, patient id or None)."""

    blocks: dict[int, list[tuple[int, int, str | None]]]
    cores: dict[str, list[tuple[int, int, int]]]  # patient id -> [(block, row, col), ...]


def tma_layout(ids: list[str], latent: Latent, seed: int) -> Layout:
    """Place the patients on the TMAs: two neighbouring cores each, 33 patients per block."""
    rng = rng_for(seed, "tma_layout")
    placed = [ids[i] for i in rng.permutation(len(ids)) if latent.on_tma[i]]
    blocks: dict[int, list[tuple[int, int, str | None]]] = {}
    cores: dict[str, list[tuple[int, int, int]]] = {}
    for b, start in enumerate(range(0, len(placed), PATIENTS_PER_BLOCK), start=1):
        group = placed[start : start + PATIENTS_PER_BLOCK]
        n_empty = ROWS * COLS - 2 * len(group)
        items: list[str | None] = list(group) + [None] * n_empty
        order = rng.permutation(len(items))
        slots: list[str | None] = []
        for k in order:
            slots.extend([items[k], items[k]] if items[k] is not None else [None])
        grid = []
        for pos, pid in enumerate(slots):
            row, col = pos // COLS + 1, pos % COLS + 1
            grid.append((row, col, pid))
            if pid is not None:
                cores.setdefault(pid, []).append((b, row, col))
        blocks[b] = grid
    return Layout(blocks=blocks, cores=cores)


def write_maps(folder: Path, layout: Layout) -> int:
    """``TMA_Map_block<k>.csv``: columns ``core`` (row-col) and ``Case ID`` (empty for no patient)."""
    folder.mkdir(parents=True, exist_ok=True)
    for b, grid in layout.blocks.items():
        with open(folder / f"TMA_Map_block{b}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["core", "Case ID"])
            for row, col, pid in grid:
                writer.writerow([f"{row}-{col}", pid or ""])
    return len(layout.blocks)


def write_cell_density(
    path: Path, ids: list[str], layout: Layout, latent: Latent, seed: int
) -> dict[str, int]:
    """The QuPath export: one row per position x marker x region; returns row counts."""
    rng = rng_for(seed, "cell_density")
    index = {pid: i for i, pid in enumerate(ids)}
    x = latent.views["cell"]
    # per patient, marker and region: a shared level; per core: its own deviation
    level = {
        (pid, key): np.log(MEDIAN_DENSITY[key]) - 0.6 * x[index[pid]] + 0.4 * rng.standard_normal()
        for pid in layout.cores
        for key in MEDIAN_DENSITY
    }
    # which cores are lost (Missing): a patient without cell data loses all; otherwise each core
    # is lost with probability 0.2, keeping at least one measured core
    lost: dict[tuple[str, str, str, int], bool] = {}
    for pid, places in layout.cores.items():
        keys = [(pid, reg, mk, k) for reg in REGIONS for mk in DENSITY_MARKERS for k in range(len(places))]
        if not latent.available["cell"][index[pid]]:
            lost.update(dict.fromkeys(keys, True))
            continue
        draw = rng.random(len(keys)) < 0.2
        if draw.all():
            draw[int(rng.integers(len(keys)))] = False
        lost.update(zip(keys, draw.tolist(), strict=True))

    path.parent.mkdir(parents=True, exist_ok=True)
    counts = {"rows": 0, "missing_rows": 0, "empty_case_id_rows": 0}
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for reg in REGIONS:
            for mk in DENSITY_MARKERS:
                for b, grid in layout.blocks.items():
                    image = f"{reg}_{mk}_block{b}.svs"
                    core_no: dict[str, int] = {}
                    for row, col, pid in grid:
                        cx = col * SPACING_UM + rng.normal(0, 60)
                        cy = row * SPACING_UM + rng.normal(0, 60)
                        if pid is None:
                            missing = bool(rng.random() < 0.5)
                            density = float(np.exp(rng.normal(np.log(150.0), 0.8)))
                            counts["empty_case_id_rows"] += 1
                        else:
                            k = core_no.get(pid, 0)
                            core_no[pid] = k + 1
                            missing = lost[(pid, reg, mk, k)]
                            density = float(np.exp(level[(pid, (reg, mk))] + 0.3 * rng.standard_normal()))
                        counts["rows"] += 1
                        counts["missing_rows"] += int(missing)
                        centroid = [f"{cx:.1f}", f"{cy:.1f}"]
                        if missing:
                            writer.writerow(
                                [image, f"{row}-{col}", "True", *centroid, pid or "", "", "", "", "", ""]
                            )
                            continue
                        area = np.pi * (CORE_DIAMETER_MM / 2) ** 2 * rng.uniform(0.35, 0.9)
                        positive = int(round(density * area))
                        total = max(positive, int(round(area * rng.uniform(3000, 7000))))
                        negative = total - positive
                        pct = 100.0 * positive / total if total else 0.0
                        writer.writerow(
                            [
                                image,
                                f"{row}-{col}",
                                "False",
                                *centroid,
                                pid or "",
                                total,
                                negative,
                                positive,
                                f"{pct:.4f}",
                                f"{positive / area:.4f}",
                            ]
                        )
    return counts


# --------------------------------------------------------------------------------------------
# core images


MASK_PX = 64  # the tissue outline is drawn at this size and upsampled (a soft, anti-aliased edge)


@cache
def _mask_grid() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:MASK_PX, 0:MASK_PX].astype(np.float32) + 0.5
    return yy, xx


@cache
def _disc(radius: int) -> np.ndarray:
    r = max(int(radius), 1)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (xx * xx + yy * yy) <= r * r + 0.5


def _upsample(small: np.ndarray, px: int) -> np.ndarray:
    """Bilinear upsampling of a small float map to px x px."""
    return np.asarray(Image.fromarray(small.astype(np.float32)).resize((px, px), Image.Resampling.BILINEAR))


def _smooth_noise(rng: np.random.Generator, px: int, cells: int) -> np.ndarray:
    """Low-frequency noise (about unit SD): a coarse random grid, bilinearly upsampled."""
    return _upsample(rng.standard_normal((cells, cells), dtype=np.float32), px)


def _tissue_outline(rng: np.random.Generator, px: int) -> tuple[np.ndarray, np.ndarray]:
    """A roughly circular core with an irregular edge and a few holes: (soft 0..1 map, hard mask)."""
    yy, xx = _mask_grid()
    c = MASK_PX / 2 + rng.normal(0, 0.03 * MASK_PX, 2)
    radius = MASK_PX * rng.uniform(0.34, 0.44)
    theta = np.arctan2(yy - c[0], xx - c[1])
    boundary = np.full_like(theta, radius)
    for k in range(2, 6):
        boundary += radius * rng.normal(0, 0.025) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    # signed distance to the edge in mask pixels -> a soft edge about one mask pixel wide
    inside = np.clip(boundary - np.hypot(yy - c[0], xx - c[1]) + 0.5, 0.0, 1.0)
    holes = rng.standard_normal((9, 9), dtype=np.float32)
    inside *= np.clip((rng.uniform(1.0, 1.6) - _upsample(holes, MASK_PX)) * 2.0, 0.0, 1.0)
    soft = _upsample(inside, px)
    return soft, soft > 0.5


def _nuclei(
    rng: np.random.Generator, tissue: np.ndarray, count: int, radius: float, alpha: float
) -> np.ndarray:
    """An opacity map of ``count`` disc nuclei of mean ``radius`` placed in ``tissue``."""
    px = tissue.shape[0]
    ys, xs = np.nonzero(tissue)
    out = np.zeros((px, px), np.float32)
    if len(ys) == 0 or count <= 0:
        return out
    pick = rng.integers(0, len(ys), count)
    lo = int(np.floor(radius))
    big = rng.random(count) < (radius - lo)  # mix two integer radii to get the mean radius
    opacity = np.clip(alpha + 0.08 * rng.standard_normal(count), 0.3, 1.0).astype(np.float32)
    for sel, r in ((~big, lo), (big, lo + 1)):
        if not sel.any():
            continue
        seeds = np.zeros((px, px), np.float32)
        seeds[ys[pick[sel]], xs[pick[sel]]] = opacity[sel]
        out = np.maximum(out, ndimage.grey_dilation(seeds, footprint=_disc(r)))
    return out


def render_core(rng: np.random.Generator, px: int, view: float, marker: str = "HE") -> np.ndarray:
    """One RGB core image (uint8, px x px) whose nuclear texture follows ``view``."""
    scale = px / 256.0
    soft, tissue = _tissue_outline(rng, px)
    area = float(tissue.sum())
    density = 0.0042 * np.exp(0.35 * view + 0.12 * rng.standard_normal()) / scale**2
    nuc_radius = float(np.clip(2.4 * np.exp(0.13 * view + 0.06 * rng.standard_normal()), 1.2, 5.0) * scale)
    alpha = float(np.clip(0.72 + 0.07 * view, 0.35, 0.98))
    count = int(rng.poisson(area * density))
    ihc = marker.upper() != "HE"
    # IHC: a share of the cells is DAB-positive (brown), falling with the view (immune cells protect)
    n_pos = int(rng.binomial(count, float(sigmoid(-0.6 - 0.8 * view)))) if ihc else 0
    nuclei = _nuclei(rng, tissue, count - n_pos, nuc_radius, alpha)
    dots = _nuclei(rng, tissue, int(rng.poisson(45 * scale**2)), 1.4 * scale, 0.85)  # lymphocytes
    nuclei = ndimage.uniform_filter(np.maximum(nuclei, dots), 2)[..., None]

    texture = _smooth_noise(rng, px, 40)[..., None]
    stain = (1.0 + rng.normal(0, 0.04, 3)).astype(np.float32)
    if not ihc:
        stroma = np.array([226, 152, 188], np.float32) * stain + texture * np.array([7, 11, 8], np.float32)
        nucleus = np.array([88, 48, 128], np.float32) * (1.0 + rng.normal(0, 0.05, 3)).astype(np.float32)
    else:
        stroma = np.array([214, 196, 188], np.float32) * stain + texture * np.float32(6.0)
        nucleus = np.array([70, 80, 150], np.float32)
        brown = _nuclei(rng, tissue, n_pos, nuc_radius * 1.1, 0.9)
        brown = ndimage.uniform_filter(brown, 2)[..., None]
        stroma = stroma + (np.array([125, 75, 35], np.float32) - stroma) * brown
    colour = stroma + (nucleus - stroma) * nuclei
    background = np.array([244, 244, 243], np.float32) + rng.normal(0, 1.0, 3).astype(np.float32)
    image = background + (colour - background) * soft[..., None]
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(3.0)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def core_file_name(marker: str, block: int, row: int, col: int, pid: str) -> str:
    """HANCOCK's pre-extracted core name: ``TumorCenter_<M>_block<B>_x<col>_y<row>_patient<NNN>.png``."""
    return f"TumorCenter_{marker}_block{block}_x{col}_y{row}_patient{pid}.png"


def write_cores(
    root: Path,
    ids: list[str],
    layout: Layout,
    latent: Latent,
    seed: int,
    markers: tuple[str, ...],
    core_px: int,
) -> dict[str, int]:
    """Write the core PNGs of the patients with TMA images; returns per-marker file counts."""
    index = {pid: i for i, pid in enumerate(ids)}
    x = latent.views["tma"]
    pick = rng_for(seed, "tma_cores")
    # which of a patient's cores were extracted (shared by all markers): both in 90 % of patients
    kept: dict[str, list[tuple[int, int, int]]] = {}
    for pid, places in layout.cores.items():
        if not latent.available["tma"][index[pid]]:
            continue
        if len(places) > 1 and pick.random() >= 0.9:
            places = [places[int(pick.integers(len(places)))]]
        kept[pid] = places
    counts: dict[str, int] = {}
    for marker in markers:
        folder = root / f"tma_tumorcenter_{marker}"
        folder.mkdir(parents=True, exist_ok=True)
        rng = rng_for(seed, f"tma_images:{marker}")
        counts[marker] = 0
        for pid in sorted(kept):
            for block, row, col in kept[pid]:
                view = x[index[pid]] + 0.25 * rng.standard_normal()  # core-to-core heterogeneity
                pixels = render_core(rng, core_px, float(view), marker)
                Image.fromarray(pixels).save(
                    folder / core_file_name(marker, block, row, col, pid), compress_level=1
                )
                counts[marker] += 1
    return counts
