"""Patch-embedding bags in the CLAM/TRIDENT h5 layout: ``features`` (N x D float32), ``coords`` (N x 2 int).

HANCOCK's released WSI UNI encodings, TRIDENT/CLAM outputs and this pipeline's TMA extraction all
use this layout, so any of them can stand in for another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from haf.artifacts.files import atomic_path
from haf.errors import HafInputError


def _open_bag(path: str | Path) -> h5py.File:
    """Open an h5 bag and check it has a ``features`` dataset; errors name the file."""
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise HafInputError(path, f"cannot open as HDF5: {exc}") from exc
    if "features" not in handle or not isinstance(handle["features"], h5py.Dataset):
        found = ", ".join(handle.keys()) or "nothing"
        handle.close()
        raise HafInputError(path, f"no 'features' dataset (found: {found})", field="features")
    return handle


def _check_float(path: str | Path, dtype: np.dtype) -> None:
    """Patch embeddings are floating point; integer or boolean ``features`` are another dataset (coords,
    labels, a quantised export) written under the wrong name, never silently cast."""
    if not np.issubdtype(dtype, np.floating):
        raise HafInputError(
            path,
            f"'features' are {dtype} but patch embeddings must be floating point (float16/32/64); "
            "is this another dataset (coords, labels) saved as 'features'?",
            field="features",
        )


def _check_width(path: str | Path, width: int, expected_dim: int | None) -> None:
    if expected_dim is not None and width != expected_dim:
        raise HafInputError(
            path,
            f"'features' are {width}-d but the config expects {expected_dim}-d "
            "(was this bag made with another encoder?)",
            field="features",
        )


def probe_bag(path: str | Path, expected_dim: int | None = None) -> tuple[int, int, dict[str, Any]]:
    """``(n_instances, width, attrs)`` from the h5 header alone, without reading the features.

    An empty ``features`` (HANCOTHON's form of a missing slide) gives ``(0, 0, attrs)``.
    """
    with _open_bag(path) as handle:
        shape = handle["features"].shape
        dtype = handle["features"].dtype
        attrs = {k: handle.attrs[k] for k in handle.attrs}
    if shape is None or (len(shape) == 1 and shape[0] == 0) or (len(shape) == 2 and shape[0] == 0):
        return 0, 0, attrs
    _check_float(path, dtype)
    if len(shape) != 2:
        raise HafInputError(path, f"'features' has shape {shape}, expected (N, D)", field="features")
    _check_width(path, int(shape[1]), expected_dim)
    return int(shape[0]), int(shape[1]), attrs


def read_bag(
    path: str | Path, expected_dim: int | None = None, max_abs: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read one h5 bag; errors name the file and the problem (missing key, wrong width, integer
    features, a NaN/inf row, a value beyond ``max_abs``: config ``stage1.max_abs_feature``)."""
    with _open_bag(path) as handle:
        raw = handle["features"]
        if raw.size:
            _check_float(path, raw.dtype)
        features = np.asarray(raw[()], dtype=np.float32)
        coords = (
            np.asarray(handle["coords"][()])
            if "coords" in handle
            else np.zeros((len(features), 2), dtype=np.int32)
        )
    if features.ndim == 1 and features.size == 0:  # HANCOTHON writes a missing slide as an empty list
        features = features.reshape(0, expected_dim or 0)
    if features.ndim != 2:
        raise HafInputError(path, f"'features' has shape {features.shape}, expected (N, D)", field="features")
    if features.shape[0] > 0:
        _check_width(path, int(features.shape[1]), expected_dim)
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        raise HafInputError(
            path, "NaN or inf in features", where=f"row {int(np.flatnonzero(bad)[0])}", field="features"
        )
    if max_abs is not None and features.size:
        peak = np.abs(features).max(axis=1)
        over = peak > max_abs
        if over.any():
            row = int(np.flatnonzero(over)[0])
            raise HafInputError(
                path,
                f"feature magnitude {float(peak[row]):.3g} exceeds stage1.max_abs_feature = {max_abs:g} "
                f"({int(over.sum())} of {len(features)} rows); patch embeddings are O(1): is this bag "
                "corrupt or unnormalised? (raise stage1.max_abs_feature if such values are real)",
                where=f"row {row}",
                field="features",
            )
    if coords.size and (coords.ndim != 2 or coords.shape != (features.shape[0], 2)):
        raise HafInputError(
            path, f"'coords' has shape {coords.shape}, expected ({features.shape[0]}, 2)", field="coords"
        )
    return features, coords.astype(np.int64, copy=False).reshape(-1, 2)


@dataclass(frozen=True)
class BagLayout:
    """Where one bag file's instances came from, read without its features (:func:`read_bag_layout`)."""

    n: int  # instances (rows of ``features``)
    coords: np.ndarray  # (n, 2) int64; zeros when the file has no ``coords``
    patch_size: float  # one tile's side in coords units; NaN when the file does not say
    core_files: tuple[str, ...]  # TMA: the core images, as recorded (attribute ``core_files``)
    core: np.ndarray  # (n,) int32 index into core_files per instance; -1 where unknown


def read_bag_layout(path: str | Path) -> BagLayout:
    """Coords and per-core provenance of a bag, without reading its features.

    ``patch_size``: TRIDENT's ``patch_size_level0`` on ``coords``, else this pipeline's ``tile_px_core``
    file attribute.  ``core``: from the extraction's ``core_tiles`` attribute (tiles per core, in core
    order: the bag's rows are the cores' tiles one core after another); -1 for every row when the bag
    records no ``core_tiles`` or they do not add up to its rows.
    """
    with _open_bag(path) as handle:
        shape = handle["features"].shape or (0,)
        n = int(shape[0]) if len(shape) == 2 else 0
        coords = (
            np.asarray(handle["coords"][()]).astype(np.int64).reshape(-1, 2)
            if "coords" in handle
            else np.zeros((n, 2), dtype=np.int64)
        )
        size = read_coords_attrs(handle).get("patch_size_level0", handle.attrs.get("tile_px_core"))
        cores = _attr(handle.attrs["core_files"]) if "core_files" in handle.attrs else []
        cores = [cores] if isinstance(cores, str) else cores
        tiles = (
            np.asarray(handle.attrs["core_tiles"], dtype=np.int64) if "core_tiles" in handle.attrs else None
        )
    if coords.shape[0] != n:
        raise HafInputError(path, f"'coords' has {coords.shape[0]} rows for {n} feature rows", field="coords")
    core = np.full(n, -1, dtype=np.int32)
    if tiles is not None and len(tiles) == len(cores) and int(tiles.sum()) == n:
        core = np.repeat(np.arange(len(cores), dtype=np.int32), tiles)
    return BagLayout(
        n=n,
        coords=coords,
        patch_size=float("nan") if size is None else float(size),
        core_files=tuple(str(c) for c in cores),
        core=core,
    )


def read_pooled_bag(
    paths: Sequence[str | Path], expected_dim: int | None = None, max_abs: float | None = None
) -> np.ndarray:
    """Concatenate the instances of several h5 bags of one patient (e.g. a slide and its ``_a`` rescan)."""
    parts = [read_bag(p, expected_dim, max_abs)[0] for p in paths]
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros((0, expected_dim or 0), dtype=np.float32)
    return np.concatenate(parts, axis=0)


def write_bag(
    path: str | Path,
    features: np.ndarray,
    coords: np.ndarray,
    attrs: Mapping[str, Any] | None = None,
    coords_attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write a bag atomically: a temporary file in the same folder, renamed when complete.

    ``attrs`` go on the file, ``coords_attrs`` on the ``coords`` dataset (where TRIDENT keeps its
    :data:`TRIDENT_COORDS_ATTRS`).
    """
    features = np.asarray(features, dtype=np.float32)
    coords = np.asarray(coords, dtype=np.int32).reshape(-1, 2)
    if len(features) != len(coords):
        raise ValueError(f"{len(features)} feature rows but {len(coords)} coords")
    with atomic_path(path, ".h5") as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("features", data=features)
            dset = handle.create_dataset("coords", data=coords)
            for key, value in (attrs or {}).items():
                handle.attrs[key] = value
            for key, value in (coords_attrs or {}).items():
                dset.attrs[key] = value


# TRIDENT writes these on its ``coords`` dataset (CLAM #309, TRIDENT #75 ask for them to be read).
TRIDENT_COORDS_ATTRS = ("patch_size", "patch_size_level0", "level0_magnification", "target_magnification")
# Magnification from resolution, the scanners' convention: 0.25 um/px = 40x, 0.5 um/px = 20x.
MAGNIFICATION_UM = 10.0


def trident_coords_attrs(tile_px: int, tile_mpp: float, level0_mpp: float) -> dict[str, Any]:
    """TRIDENT's ``coords`` attributes for tiles of ``tile_px`` at ``tile_mpp`` cut from an image at ``level0_mpp``.

    A TMA core PNG is its own level 0 (``extract.core_mpp``): ``patch_size = tile_px``,
    ``patch_size_level0 = round(tile_px * tile_mpp / core_mpp)`` (the tile's side in core pixels, the
    unit of ``coords``), magnifications ``10 / mpp`` (0.25 um/px -> 40x, 0.5 um/px -> 20x).
    """
    return {
        "patch_size": int(tile_px),
        "patch_size_level0": int(round(tile_px * tile_mpp / level0_mpp)),
        "level0_magnification": float(MAGNIFICATION_UM / level0_mpp),
        "target_magnification": float(MAGNIFICATION_UM / tile_mpp),
    }


def read_coords_attrs(handle: h5py.File) -> dict[str, Any]:
    """The TRIDENT attributes present on an open bag's ``coords`` dataset (numpy scalars made plain)."""
    if "coords" not in handle or not isinstance(handle["coords"], h5py.Dataset):
        return {}
    found = {}
    for key in TRIDENT_COORDS_ATTRS:
        if key in handle["coords"].attrs:
            value = handle["coords"].attrs[key]
            found[key] = value.item() if isinstance(value, np.generic) else value
    return found


def _attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_attr(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_bag_attrs(path: str | Path) -> dict[str, Any] | None:
    """The attributes and feature shape of an existing bag, or None if it cannot be read."""
    try:
        with h5py.File(path, "r") as handle:
            attrs = {k: _attr(v) for k, v in handle.attrs.items()}
            attrs["_shape"] = tuple(handle["features"].shape)
    except (OSError, KeyError):
        return None
    return attrs
