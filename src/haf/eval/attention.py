"""Stage 1 attention heatmaps (rule ``fig_attention``): where each CLAM model looked, for chosen patients.

Reads the fold's ``attention.h5`` files (:mod:`haf.artifacts.attention`) of the pathology models drawn
(``tma`` and ``wsi``; ``wsi_tma``'s file is written too but not drawn) and, for each chosen patient:

* **TMA**: each core image (the ones with the most attention first, at most :data:`MAX_CORES`) with
  every tile drawn as a square at its coords (one tile's side: the bag's ``patch_size_level0``) coloured
  by its attention percentile within the bag (CLAM's heatmap convention: rank, not raw weight, so a bag of
  500 tiles and one of 5 use the whole colour scale), the top-k tiles outlined and numbered; then the
  top-k tiles themselves, cut from the core image at full resolution.  A core whose image is not found
  (precomputed features) is drawn as its tiles' squares on white; tiles of a bag without per-core
  records as a scatter.
* **WSI**: a scatter of the patches at their coords (level-0 pixels, y down as in the slide) coloured by
  attention percentile, the top-k numbered (HANCOCK ships WSI features, not the slides, so no image).

Patients (``evaluation.attention_patients``): null = per drawn model, the test patient with the highest
and the one with the lowest Stage 1 risk (the bag logit; ties: the lower patient id) of fold
``evaluation.tsne_fold``; a list = those patients, in every drawn model that has them (any part: the
panel names it).  The CSV holds every instance of every drawn patient: raw attention, percentile, rank.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from haf.artifacts.attention import BagAttention, attention_index, read_attention
from haf.errors import HafInputError
from haf.eval.figures import _pyplot, save_figure

log = logging.getLogger(__name__)

MAX_CORES = 3
"""Core images drawn per TMA patient (those with the most attention; the CSV has every tile)."""
DISPLAY_PX = 600
"""Core images are drawn downsampled to at most this many pixels per side (crops use full resolution)."""
DRAWN_MODELS = ("tma", "wsi")
CMAP = "jet"
CSV_COLUMNS = [
    "pmod", "fold", "patient_id", "part", "risk", "selection", "instance", "modality", "source_file",
    "core", "core_file", "x", "y", "attention", "percentile", "rank",
]  # fmt: skip


@dataclass
class Chosen:
    """One drawn (model, patient)."""

    pmod: str
    bag: BagAttention
    selection: str  # "highest risk" | "lowest risk" | "listed"


def percentile(attention: np.ndarray) -> np.ndarray:
    """Share of the bag's instances with attention <= each one's (in (0, 1]; the top instance 1)."""
    a = np.asarray(attention, dtype=np.float64)
    order = np.sort(a)
    return np.searchsorted(order, a, side="right") / len(a)


def ranking(attention: np.ndarray) -> np.ndarray:
    """Instance indices from most to least attended (ties: the lower index first)."""
    a = np.asarray(attention, dtype=np.float64)
    return np.lexsort((np.arange(len(a)), -a))


def choose_patients(
    files: dict[str, str | Path], listed: list[str] | tuple[str, ...] | None
) -> list[tuple[str, str, str]]:
    """``(pmod, patient_id, selection)`` to draw, in model then selection order (see the module docstring).

    A listed patient in none of the files is an error naming it and the files; one missing from some
    models only is drawn where it is (logged).
    """
    chosen = []
    found: set[str] = set()
    listed = None if listed is None else list(dict.fromkeys(str(p) for p in listed))
    for pmod, path in files.items():
        index = attention_index(path)
        if listed is None:
            test = index[index["part"] == "test"].sort_values(["risk", "patient_id"], ascending=[False, True])
            if test.empty:
                raise HafInputError(path, "no test patient with a bag in this fold", field="part")
            high = str(test["patient_id"].iloc[0])
            low = str(test.sort_values(["risk", "patient_id"]).iloc[0]["patient_id"])
            chosen.append((pmod, high, "highest risk"))
            if low != high:
                chosen.append((pmod, low, "lowest risk"))
            continue
        have = set(index["patient_id"])
        for pid in listed:
            if pid in have:
                chosen.append((pmod, str(pid), "listed"))
                found.add(pid)
            else:
                log.info("%s: patient %s has no bag in this fold's attention file %s", pmod, pid, path)
    if listed is not None:
        missing = [p for p in listed if p not in found]
        if missing:
            raise HafInputError(
                ", ".join(str(p) for p in files.values()),
                f"evaluation.attention_patients: {', '.join(missing)} in none of these attention files "
                "(no bag of a drawn pathology model in this fold)",
                field="attention_patients",
            )
    return chosen


def attention_table(chosen: list[Chosen], fold: int) -> pd.DataFrame:
    """Every instance of every drawn patient (columns :data:`CSV_COLUMNS`)."""
    frames = []
    for c in chosen:
        b = c.bag
        rank = np.empty(b.n, dtype=np.int64)
        rank[ranking(b.attention)] = np.arange(1, b.n + 1)
        core_files = np.array(list(b.core_files) + [""], dtype=object)
        frames.append(
            pd.DataFrame(
                dict(
                    pmod=c.pmod,
                    fold=int(fold),
                    patient_id=b.patient_id,
                    part=b.part,
                    risk=b.risk,
                    selection=c.selection,
                    instance=np.arange(b.n),
                    modality=np.asarray(b.source_modality, dtype=object)[b.source],
                    source_file=np.asarray(b.source_files, dtype=object)[b.source],
                    core=b.core,
                    core_file=core_files[b.core],  # -1 -> ""
                    x=b.coords[:, 0],
                    y=b.coords[:, 1],
                    attention=b.attention.astype(np.float64),
                    percentile=percentile(b.attention),
                    rank=rank,
                )
            )
        )
    return pd.concat(frames, ignore_index=True)[CSV_COLUMNS] if frames else pd.DataFrame(columns=CSV_COLUMNS)


def _core_image(path: str) -> np.ndarray | None:
    """The core as RGB uint8 (H, W, 3), or None when there is no such file or it cannot be decoded (logged).

    Pillow, converted as extraction converts (:func:`haf.extract.tiling.read_core`'s fallback): alpha
    composited onto white, 16-bit scaled to 8-bit, grey replicated; no torch in the evaluation env.
    """
    from PIL import Image, UnidentifiedImageError

    if not path or not Path(path).is_file():
        return None
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
                white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                return np.asarray(Image.alpha_composite(white, image.convert("RGBA")).convert("RGB"))
            if mode.startswith("I"):
                grey = np.clip(np.asarray(image, dtype=np.float64) / 257.0, 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        log.warning("core image %s cannot be drawn: %s", path, exc)
        return None


def _display(image: np.ndarray) -> np.ndarray:
    """Downsampled (strided, at most DISPLAY_PX per side) copy for drawing."""
    step = max(1, int(np.ceil(max(image.shape[:2]) / DISPLAY_PX)))
    return image[::step, ::step]


def _wrap(name: str, width: int = 26) -> str:
    """A long file name on several lines, broken after underscores (HANCOCK core names are ~40 chars)."""
    lines, line = [], ""
    for part in name.replace("_", "_\0").split("\0"):
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    return "\n".join([*lines, line])


def _cores_by_mass(bag: BagAttention) -> list[int]:
    """Core indices with at least one tile, most attention first (ties: core order)."""
    cores = [int(c) for c in np.unique(bag.core[bag.core >= 0])]
    mass = {c: float(bag.attention[bag.core == c].sum()) for c in cores}
    return sorted(cores, key=lambda c: (-mass[c], c))


def _squares(ax, coords: np.ndarray, side: float, colours: np.ndarray, alpha: float) -> None:
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    boxes = [Rectangle((float(x), float(y)), side, side) for x, y in coords]
    ax.add_collection(PatchCollection(boxes, facecolor=colours, edgecolor="none", alpha=alpha))


def _number(ax, bag: BagAttention, top: np.ndarray, sel: np.ndarray, side: float) -> None:
    """Outline (squares) or circle (points) and number the top-k instances that lie in ``sel``."""
    from matplotlib.patches import Rectangle

    for r, i in enumerate(top, start=1):
        if not sel[i]:
            continue
        x, y = (float(v) for v in bag.coords[i])
        if np.isfinite(side):
            ax.add_patch(Rectangle((x, y), side, side, fill=False, edgecolor="black", lw=1.2))
            ax.text(x + side / 2, y + side / 2, str(r), ha="center", va="center", fontsize=7, weight="bold")
        else:
            ax.scatter([x], [y], s=60, facecolor="none", edgecolor="black", lw=1.0, zorder=3)
            ax.annotate(str(r), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7, weight="bold")


def _scatter(ax, bag: BagAttention, sel: np.ndarray, colours: np.ndarray, top: np.ndarray) -> None:
    xy = bag.coords[sel]
    ax.scatter(xy[:, 0], xy[:, 1], c=colours[sel], s=max(2.0, 400.0 / max(1, len(xy)) ** 0.5),
               marker="s", lw=0, rasterized=len(xy) > 2000)  # fmt: skip
    _number(ax, bag, top, sel, float("nan"))
    ax.set_aspect("equal", adjustable="box")
    ax.invert_yaxis()  # image coordinates: y grows downwards
    ax.set_xlabel("x (level-0 px)")
    ax.set_ylabel("y (level-0 px)")


def _rank_panel(ax, bag: BagAttention, top: np.ndarray, cmap) -> None:
    """Attention against its rank, as a multiple of uniform (1/n), log scale: how concentrated it is."""
    order = ranking(bag.attention)
    rel = bag.attention[order].astype(np.float64) * bag.n
    ranks = np.arange(1, bag.n + 1)
    ax.plot(ranks, rel, color="grey", lw=1)
    ax.scatter(ranks[: len(top)], rel[: len(top)], color=cmap(1.0), s=18, zorder=3)
    for r in range(len(top)):
        ax.annotate(str(r + 1), (ranks[r], rel[r]), xytext=(4, 2), textcoords="offset points", fontsize=7)
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("rank of the patch by attention")
    ax.set_ylabel("attention (x uniform 1/n)")
    share = 100.0 * float(bag.attention[order[: len(top)]].sum())
    ax.set_title(f"top {len(top)} patches hold {share:.0f}% of the attention", fontsize=8)


def plot_attention(
    chosen: list[Chosen],
    pdf: str | Path,
    png: str | Path,
    *,
    top_k: int,
    labels: dict[str, str],
    title: str,
) -> dict[str, int]:
    """Draw the figure (rows: the chosen (model, patient)s); returns counts of what could not be drawn."""
    plt = _pyplot()
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cmap = colormaps[CMAP]
    counts = {"cores_without_image": 0, "tiles_without_core": 0}
    n_core_cols = max([1] + [min(MAX_CORES, len(_cores_by_mass(c.bag))) for c in chosen if c.pmod != "wsi"])
    ncols = n_core_cols + top_k
    fig = plt.figure(figsize=(2.6 * ncols, 3.0 * max(1, len(chosen)) + 0.6))
    grid = fig.add_gridspec(max(1, len(chosen)), ncols)
    for row, c in enumerate(chosen):
        bag = c.bag
        colours = cmap(percentile(bag.attention))
        top = ranking(bag.attention)[:top_k]
        name = (
            f"{labels.get(c.pmod, c.pmod)} · patient {bag.patient_id} ({bag.part}, {c.selection}, "
            f"risk {bag.risk:.2f})"
        )
        wsi = np.asarray(bag.source_modality)[bag.source] == "wsi"
        if c.pmod == "wsi" or wsi.all():
            split = max(1, ncols // 2)
            ax = fig.add_subplot(grid[row, :split])
            _scatter(ax, bag, np.ones(bag.n, bool), colours, top)
            ax.set_title(f"{name}\n{bag.n} patches, top {len(top)} numbered", fontsize=8, loc="left")
            _rank_panel(fig.add_subplot(grid[row, split:]), bag, top, cmap)
            continue
        cores = _cores_by_mass(bag)[:MAX_CORES]
        no_core = bag.core < 0
        if no_core.any():
            counts["tiles_without_core"] += int(no_core.sum())
        panels = [("core", k) for k in cores] + (
            [("none", -1)] if no_core.any() and len(cores) < n_core_cols else []
        )
        images: dict[int, np.ndarray | None] = {}
        first = None
        for col, (kind, k) in enumerate(panels[:n_core_cols]):
            ax = fig.add_subplot(grid[row, col])
            first = first or ax
            if kind == "none":
                _scatter(ax, bag, no_core, colours, top)
                ax.set_title(f"{int(no_core.sum())} tiles without a core record", fontsize=8)
                continue
            sel = bag.core == k
            side = float(bag.source_patch_size[int(bag.source[sel][0])])
            image = images[k] = _core_image(bag.core_images[k])
            share = 100.0 * float(bag.attention[sel].sum())
            label = _wrap(Path(bag.core_files[k]).name)
            if image is None:
                counts["cores_without_image"] += 1
                label += " (image not found)"
            else:
                h, w = image.shape[:2]
                ax.imshow(_display(image), extent=(0, w, h, 0), interpolation="bilinear")
            if np.isfinite(side):
                _squares(ax, bag.coords[sel], side, colours[sel], alpha=0.45 if image is not None else 0.9)
                _number(ax, bag, top, sel, side)
                if image is None:
                    lo, hi = bag.coords[sel].min(axis=0), bag.coords[sel].max(axis=0) + side
                    ax.set_xlim(lo[0], hi[0])
                    ax.set_ylim(hi[1], lo[1])
                    ax.set_aspect("equal")
            else:
                _scatter(ax, bag, sel, colours, top)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label}\n{int(sel.sum())} tiles, {share:.0f}% of attention", fontsize=8)
        first.set_ylabel(
            f"{labels.get(c.pmod, c.pmod)}\npatient {bag.patient_id}\n{bag.part}, {c.selection}\n"
            f"risk {bag.risk:.2f}",
            fontsize=8,
        )
        for r, i in enumerate(top, start=1):
            ax = fig.add_subplot(grid[row, n_core_cols + r - 1])
            ax.set_xticks([])
            ax.set_yticks([])
            k = int(bag.core[i])
            side = float(bag.source_patch_size[int(bag.source[i])])
            image = images.get(k) if k >= 0 else None
            if k >= 0 and k not in images:
                image = images[k] = _core_image(bag.core_images[k])
            x, y = (int(v) for v in bag.coords[i])
            crop = None
            if image is not None and np.isfinite(side):
                s = int(round(side))
                crop = image[max(0, y) : max(0, y + s), max(0, x) : max(0, x + s)]
            if crop is not None and crop.size:
                ax.imshow(crop, interpolation="nearest")
            else:  # no image, or coords outside it (a bag that does not belong to this core image)
                ax.text(0.5, 0.5, "no image", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            for spine in ax.spines.values():
                spine.set_edgecolor(cmap(percentile(bag.attention)[i]))
                spine.set_linewidth(3)
            ax.set_title(
                f"#{r}: a = {bag.attention[i]:.3g}\n({bag.attention[i] * bag.n:.1f}x uniform)", fontsize=8
            )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1 - 0.35 / fig.get_figheight()))
    bar = fig.add_axes((0.3, 0.015, 0.4, 0.012))
    fig.colorbar(
        ScalarMappable(norm=Normalize(0, 1), cmap=cmap),
        cax=bar,
        orientation="horizontal",
        label="attention percentile within the patient's bag (1 = most attended)",
    )
    save_figure(fig, pdf, png)
    return counts


def draw_attention(
    files: dict[str, str | Path],
    *,
    fold: int,
    patients: list[str] | tuple[str, ...] | None,
    top_k: int,
    labels: dict[str, str],
    pdf: str | Path,
    png: str | Path,
    title: str,
) -> pd.DataFrame:
    """The rule's work: choose the patients, read their attention, draw; returns the CSV table."""
    picks = choose_patients(files, None if patients is None else list(patients))
    chosen = []
    for pmod, pid, selection in picks:
        bag = read_attention(files[pmod], [pid]).patients[pid]
        chosen.append(Chosen(pmod, bag, selection))
        log.info(
            "%s patient %s (%s, %s, risk %.3f): %d instances, top attention %.4g (%.1fx uniform)",
            pmod, pid, bag.part, selection, bag.risk, bag.n, bag.attention.max(), bag.attention.max() * bag.n,
        )  # fmt: skip
    counts = plot_attention(chosen, pdf, png, top_k=top_k, labels=labels, title=title)
    if counts["cores_without_image"]:
        log.warning("%d core(s) drawn without their image (file not found)", counts["cores_without_image"])
    if counts["tiles_without_core"]:
        log.info(
            "%d tile(s) of bags without per-core records drawn as a scatter", counts["tiles_without_core"]
        )
    return attention_table(chosen, fold)
