"""Core image -> tissue tiles: decode, resample to the tile resolution, tissue mask, grid, keep.

* Decoding: ``torchvision.io.decode_image`` (libpng; ~25 % faster than Pillow on large PNGs), Pillow as
  the fallback for anything it cannot read. Grayscale is replicated to RGB, an alpha channel is
  composited onto white (transparent background stays background), 16-bit is scaled to 8-bit. A file
  that neither can decode (truncated, not an image) is a :class:`HafInputError` naming the file.
* Resolution: the core (``core_mpp`` um/px) is resized by ``core_mpp / tile_mpp`` (antialiased
  bilinear) so a tile of ``tile_px`` pixels covers ``tile_px * tile_mpp`` um.
* Tissue mask: a pixel is tissue when its HSV saturation is >= ``tissue_saturation_min`` and its value
  (brightness) <= ``tissue_value_max``: white and grey glass, black debris are not saturated. A
  grayscale core has no saturation: there tissue is what is at least ``tissue_saturation_min`` (7 %)
  darker than the glass (the 99th percentile grey level), and <= ``tissue_value_max``
  (:func:`gray_tissue_mask`); a grayscale copy of an RGB H&E core gives the same tiles within one.
* Grid: non-overlapping tiles, the grid centred on the image; a tile is kept when its tissue fraction
  is >= ``min_tissue_fraction`` (and > 0). The fraction is measured on a regular subsample of the mask
  (at least 32 x 32 points per tile), which makes the mask ~50x cheaper on real-size cores.
* Coordinates: ``(x, y)`` of each tile's top-left corner in pixels of the ORIGINAL core image (the
  CLAM/TRIDENT convention of level-0 coordinates), int32.

A core with no tissue, or smaller than one tile after resizing, yields zero tiles and a status that
says which (``empty_no_tissue``, ``empty_too_small``); the caller counts it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2.functional import resize

try:  # deprecated since torchvision 0.29 (TorchCodec); Pillow takes over where it is gone
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # pragma: no cover
    ImageReadMode = decode_image = None

from haf.errors import HafConfigError, HafInputError
from haf.settings import ExtractSettings

STATUS_OK = "ok"
STATUS_NO_TISSUE = "empty_no_tissue"
STATUS_TOO_SMALL = "empty_too_small"
STATUS_FAILED = "failed"


@dataclass(frozen=True)
class TilingSettings:
    """The tiling part of config ``extract`` (:class:`haf.settings.ExtractSettings`; defaults: the schema)."""

    tile_px: int
    tile_mpp: float
    core_mpp: float
    tissue_saturation_min: float
    tissue_value_max: float
    min_tissue_fraction: float

    @classmethod
    def from_section(cls, section: ExtractSettings | dict[str, Any]) -> TilingSettings:
        extract = ExtractSettings.from_config(section)
        settings = cls(**{k: getattr(extract, k) for k in cls.__dataclass_fields__})
        settings.check()
        return settings

    def check(self) -> None:
        if int(self.tile_px) < 8:
            raise HafConfigError(f"extract.tile_px must be >= 8, got {self.tile_px}")
        for key in ("tile_mpp", "core_mpp"):
            if not float(getattr(self, key)) > 0:
                raise HafConfigError(f"extract.{key} must be > 0, got {getattr(self, key)}")
        for key in ("tissue_saturation_min", "tissue_value_max", "min_tissue_fraction"):
            if not 0.0 <= float(getattr(self, key)) <= 1.0:
                raise HafConfigError(f"extract.{key} must be in [0, 1], got {getattr(self, key)}")

    @property
    def scale(self) -> float:
        """Resize factor from core pixels to tile-resolution pixels."""
        return float(self.core_mpp) / float(self.tile_mpp)

    @property
    def tile_px_core(self) -> float:
        """Side of one tile in original core pixels."""
        return self.tile_px / self.scale

    def digest(self) -> str:
        """A short fingerprint of every setting that changes the tiles (stored in the h5, for resume)."""
        text = json.dumps({k: float(v) for k, v in asdict(self).items()}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# decoding


def read_core(path: str | Path) -> tuple[torch.Tensor, str]:
    """Decode a core image to RGB uint8 (3, H, W); returns the tensor and the source mode.

    The mode (``rgb``, ``gray``, ``gray+alpha``, ``rgba``, ``palette``, a ``16`` suffix for 16-bit...)
    tells the caller what was converted. Errors name the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HafInputError(path, f"cannot read the core image: {exc.strerror or exc}") from None
    if not data:
        raise HafInputError(path, "the core image file is empty (0 bytes)")
    try:
        return _decode_torchvision(data)
    except Exception:  # noqa: BLE001 - any decoder failure: try Pillow, which names the problem well
        pass
    return _decode_pillow(path)


def _decode_torchvision(data: bytes) -> tuple[torch.Tensor, str]:
    if decode_image is None:
        raise RuntimeError("torchvision image decoding is not available")
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        image = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED
        )
    bits = ""
    if image.dtype != torch.uint8:  # 16-bit PNG
        if image.dtype != torch.uint16:
            raise ValueError(f"unsupported pixel type {image.dtype}")
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
        bits = "16"
    channels = image.shape[0]
    if channels == 3:
        return image, "rgb" + bits
    if channels == 1:
        return image.expand(3, -1, -1).contiguous(), "gray" + bits
    if channels in (2, 4):
        colour = image[:1].expand(3, -1, -1) if channels == 2 else image[:3]
        return _over_white(colour, image[-1]), ("gray+alpha" if channels == 2 else "rgba") + bits
    raise ValueError(f"unsupported channel count {channels}")


def _over_white(colour: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    a = alpha.to(torch.float32) / 255.0
    out = colour.to(torch.float32) * a + 255.0 * (1.0 - a)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _decode_pillow(path: Path) -> tuple[torch.Tensor, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                array = np.asarray(rgba)
                tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
                return _over_white(tensor[:3], tensor[3]), mode.lower()
            if mode == "I;16" or mode.startswith("I"):
                array = np.asarray(image, dtype=np.float64)
                array = np.clip(array / 257.0, 0, 255).astype(np.uint8)
                tensor = torch.from_numpy(array)[None].expand(3, -1, -1).contiguous()
                return tensor, "gray16"
            rgb = image.convert("RGB")
            tensor = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()
            return tensor, {"RGB": "rgb", "L": "gray", "P": "palette"}.get(mode, mode.lower())
    except UnidentifiedImageError:
        raise HafInputError(path, "not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise HafInputError(path, f"cannot decode the core image (truncated or corrupt?): {exc}") from None


# ---------------------------------------------------------------------------------------------
# mask and tiles


def tissue_mask(rgb: torch.Tensor, saturation_min: float, value_max: float) -> torch.Tensor:
    """Boolean (H, W): saturation = (max - min) / max >= ``saturation_min`` and max / 255 <= ``value_max``."""
    mx = rgb.amax(0).to(torch.int32)
    mn = rgb.amin(0).to(torch.int32)
    # integer-exact form of (mx - mn) / mx >= s and mx / 255 <= v (no division, no float image)
    saturated = (mx - mn) * 10000 >= mx * int(round(saturation_min * 10000))
    if saturation_min > 0:
        saturated &= mx > 0
    not_bright = mx * 10000 <= int(round(value_max * 255 * 10000))
    return saturated & not_bright


GRAY_BACKGROUND_QUANTILE = 0.99
"""The glass level of a grayscale core: this quantile of its grey levels (robust to a few hot pixels)."""


def gray_tissue_mask(rgb: torch.Tensor, value_max: float, darker_by: float = 0.07) -> torch.Tensor:
    """Tissue of a grayscale core (no saturation to go by): darker than the glass by ``darker_by``.

    The glass level ``B`` is the ``GRAY_BACKGROUND_QUANTILE`` of the grey levels; a pixel is tissue when
    ``grey <= (1 - darker_by) * B`` and ``grey <= value_max * 255``. The caller passes
    ``tissue_saturation_min`` as ``darker_by``: the same 7 % that separates pale stroma from glass in
    saturation separates it in brightness (stroma ~190-215, glass ~245 in 8-bit grey). Otsu's threshold,
    used before, splits dark nuclei from everything else and kept one tile where the RGB core gives six.
    A flat image (no level 7 % below its glass) has no tissue.
    """
    grey = rgb[0]
    counts = torch.bincount(grey.reshape(-1).to(torch.int64), minlength=256)
    cdf = counts.cumsum(0)
    total = int(cdf[-1])
    if total == 0:
        return torch.zeros_like(grey, dtype=torch.bool)
    level = torch.tensor([GRAY_BACKGROUND_QUANTILE * total], dtype=torch.float64)
    background = min(int(torch.searchsorted(cdf.to(torch.float64), level)[0]), 255)
    # integer-exact: grey <= (1 - d) * B and grey <= v * 255, with d and v to 1e-4
    scaled = grey.to(torch.int32) * 10000
    below_glass = scaled <= background * int(round((1.0 - darker_by) * 10000))
    not_bright = scaled <= int(round(value_max * 255 * 10000))
    return below_glass & not_bright


def resize_core(rgb: torch.Tensor, scale: float) -> torch.Tensor:
    """Resize (3, H, W) uint8 by ``scale`` (antialiased bilinear); identity when scale is ~1."""
    if abs(scale - 1.0) < 1e-6:
        return rgb
    h, w = rgb.shape[-2:]
    size = [max(1, int(round(h * scale))), max(1, int(round(w * scale)))]
    return resize(rgb, size, antialias=True)


def _mask_step(tile_px: int) -> int:
    """Largest divisor of ``tile_px`` leaving at least 32 mask samples per tile side."""
    limit = max(1, tile_px // 32)
    return max(d for d in range(1, limit + 1) if tile_px % d == 0)


@dataclass
class CoreTiles:
    """The kept tiles of one core: uint8 (n, 3, t, t), coords int32 (n, 2) = (x, y) in core pixels."""

    tiles: torch.Tensor
    coords: np.ndarray
    status: str
    n_grid: int = 0  # grid positions examined (kept or not)
    core_shape: tuple[int, int] = (0, 0)  # (H, W) of the original core

    @property
    def n(self) -> int:
        return int(self.tiles.shape[0])


def tile_core(rgb: torch.Tensor, settings: TilingSettings, grayscale: bool = False) -> CoreTiles:
    """Tiles with enough tissue from a decoded core (3, H, W) uint8 (see the module docstring).

    ``grayscale``: the core was a grayscale image (no colour): tissue by :func:`gray_tissue_mask`.
    """
    t = int(settings.tile_px)
    core_shape = (int(rgb.shape[-2]), int(rgb.shape[-1]))
    image = resize_core(rgb, settings.scale)
    h, w = image.shape[-2:]
    gh, gw = h // t, w // t
    if gh == 0 or gw == 0:
        return _empty(t, STATUS_TOO_SMALL, 0, core_shape)
    oy, ox = (h - gh * t) // 2, (w - gw * t) // 2
    region = image[:, oy : oy + gh * t, ox : ox + gw * t]
    step = _mask_step(t)
    sample = region[:, ::step, ::step]
    if grayscale:
        mask = gray_tissue_mask(sample, settings.tissue_value_max, settings.tissue_saturation_min)
    else:
        mask = tissue_mask(sample, settings.tissue_saturation_min, settings.tissue_value_max)
    per = t // step
    fraction = mask.reshape(gh, per, gw, per).to(torch.float32).mean(dim=(1, 3))
    keep = (fraction >= settings.min_tissue_fraction) & (fraction > 0)
    n_grid = gh * gw
    if not bool(keep.any()):
        return _empty(t, STATUS_NO_TISSUE, n_grid, core_shape)
    rows, cols = torch.nonzero(keep, as_tuple=True)
    grid = region.reshape(3, gh, t, gw, t).permute(1, 3, 0, 2, 4)
    tiles = grid[rows, cols].contiguous()  # (n, 3, t, t), row-major order
    scale = settings.scale
    xs = np.floor((ox + cols.numpy().astype(np.float64) * t) / scale + 1e-6)
    ys = np.floor((oy + rows.numpy().astype(np.float64) * t) / scale + 1e-6)
    coords = np.stack([xs, ys], axis=1).astype(np.int32)
    return CoreTiles(tiles=tiles, coords=coords, status=STATUS_OK, n_grid=n_grid, core_shape=core_shape)


def _empty(t: int, status: str, n_grid: int, core_shape: tuple[int, int]) -> CoreTiles:
    return CoreTiles(
        tiles=torch.zeros((0, 3, t, t), dtype=torch.uint8),
        coords=np.zeros((0, 2), dtype=np.int32),
        status=status,
        n_grid=n_grid,
        core_shape=core_shape,
    )


def expected_grid(core_px: int, settings: TilingSettings) -> int:
    """Grid positions per side for a square core of ``core_px`` pixels (for docs and tests)."""
    return int(max(1, round(core_px * settings.scale)) // settings.tile_px) if core_px else 0
