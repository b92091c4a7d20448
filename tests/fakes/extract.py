"""Small H&E-like core images for the benchmark and the tests (SYNTHETIC, not the demo cohort).

The demo cohort has its own renderer (``haf.demo.tma``); this one exists so that the extraction
benchmark and tests do not depend on it and can choose the core size, the nuclear density and the
nuclear darkness directly. Pink stroma with low-frequency texture, purple nuclei, a roughly circular
tissue region on a near-white background. Only numpy and Pillow (the extract env has no scipy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

STROMA = np.array([226, 152, 188], np.float32)
NUCLEUS = np.array([88, 48, 128], np.float32)
BACKGROUND = np.array([244, 244, 243], np.float32)


def he_tile(
    rng: np.random.Generator,
    px: int,
    density: float = 1.0,
    darkness: float = 0.75,
    tissue: float = 1.0,
    nucleus_px: float = 5.0,
) -> np.ndarray:
    """An H&E-like RGB image (uint8, px x px).

    ``density``: nuclei per 1,000 tissue pixels (x ``(5 / nucleus_px)^2``: the covered share stays
    about the same when nuclei are drawn larger); ``darkness`` 0..1: nuclear opacity; ``tissue``:
    radius of the tissue disc as a share of half the side (>= 1.5 fills the image, 0 = background only).
    """
    yy, xx = np.mgrid[0:px, 0:px].astype(np.float32)
    centre = (px - 1) / 2.0
    radius = tissue * px / 2.0
    edge = np.clip((radius - np.hypot(yy - centre, xx - centre)) / max(px / 64.0, 1.0), 0.0, 1.0)

    # low-frequency stroma texture: a coarse noise grid, bilinearly upsampled
    cells = max(px // 32, 2)
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse).resize((px, px), Image.Resampling.BILINEAR))[..., None]

    # nuclei: discs drawn on an opacity layer, slightly blurred
    layer = Image.new("L", (px, px), 0)
    draw = ImageDraw.Draw(layer)
    area = float((edge > 0.5).sum())
    count = int(rng.poisson(area * density / 1000.0 * (5.0 / nucleus_px) ** 2))
    if count:
        ys, xs = np.nonzero(edge > 0.5)
        pick = rng.integers(0, len(ys), count)
        radii = np.clip(rng.normal(nucleus_px / 2.0, nucleus_px / 8.0, count), 1.0, None)
        alpha = np.clip(darkness + 0.08 * rng.standard_normal(count), 0.05, 1.0)
        for y, x, r, a in zip(ys[pick], xs[pick], radii, alpha, strict=True):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=int(a * 255))
    nuclei = np.asarray(layer.filter(ImageFilter.GaussianBlur(0.6)), np.float32)[..., None] / 255.0

    stroma = STROMA * (1.0 + rng.normal(0, 0.03, 3)).astype(np.float32) + texture * np.float32(8.0)
    colour = stroma + (NUCLEUS - stroma) * nuclei
    image = BACKGROUND + (colour - BACKGROUND) * edge[..., None]
    image += rng.standard_normal(image.shape).astype(np.float32) * np.float32(3.0)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_cores(
    folder: str | Path,
    n_patients: int,
    cores_per_patient: int = 2,
    core_px: int = 512,
    seed: int = 0,
    marker: str = "HE",
) -> dict[str, list[Path]]:
    """Write HANCOCK-named core PNGs (``TumorCenter_<M>_block<B>_x<c>_y<r>_patient<NNN>.png``).

    Returns patient id -> core paths. Patient densities vary (0.4-2.5 nuclei per 1,000 px) so bags
    differ; used by the benchmark and the end-to-end tests.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cores: dict[str, list[Path]] = {}
    position = 0
    for i in range(n_patients):
        pid = f"{i + 1:03d}"
        density = float(rng.uniform(0.4, 2.5))
        for _ in range(cores_per_patient):
            block, row, col = position // 72 + 1, position // 6 % 12 + 1, position % 6 + 1
            position += 1
            pixels = he_tile(
                rng, core_px, density=density, darkness=0.75, tissue=float(rng.uniform(0.8, 0.95))
            )
            path = folder / f"TumorCenter_{marker}_block{block}_x{col}_y{row}_patient{pid}.png"
            Image.fromarray(pixels).save(path, compress_level=1)
            cores.setdefault(pid, []).append(path)
    return cores
