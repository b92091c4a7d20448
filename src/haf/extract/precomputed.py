"""TMA features made elsewhere (TRIDENT, CLAM, ...) used instead of extraction (config ``extract.precomputed``).

Input: a folder of feature files, one per patient or one per core:

* ``.h5`` / ``.hdf5`` in the TRIDENT/CLAM layout: dataset ``features`` (N x D, or 1 x N x D) and,
  optionally, ``coords`` (N x 2) with TRIDENT's attributes (``patch_size``, ``patch_size_level0``,
  ``level0_magnification``, ``target_magnification``), which are read and carried over;
* ``.pt`` / ``.pth``: a tensor N x D (CLAM's ``pt_files``), read with ``torch.load(weights_only=True)``;
  no coordinates (written as -1).

Which file belongs to whom:

* a table (``extract.precomputed.table``: columns ``patient_id, file``, TSV or CSV; ``file`` relative to
  the folder unless absolute; several rows of a patient are concatenated in table order), else
* the file name: a stem that is a HANCOCK core name (``TumorCenter_<M>_block<B>_x<c>_y<r>_patient<NNN>``)
  is one core of that patient, checked against the TMA maps (``paths.tma_maps``) when they exist (a
  disagreement is an error naming the file and the map); cores of other markers than
  ``extract.markers`` are left out and counted; a patient's cores follow the manifest's core order, else
  (marker, block, row, column); any other stem is a patient id.

Checks (each error names the file): ``features`` present, 2-D, floating point, finite (the row is
named), width = ``extract.precomputed.dim`` or else the registry width of ``extract.encoder`` (a wrong
width says both numbers); ``coords`` N x 2 with integer values. A patient with both a patient file and
core files is an error naming both.

Output: exactly what extraction writes (``features/tma/{encoder}/index.tsv`` and one h5 per patient in
this pipeline's layout, :func:`haf.artifacts.bags.write_bag`), so Stage 1 cannot tell the difference except by
the attributes (``weights_digest = "precomputed"``, ``precomputed_files``). Counted and logged, never
silently dropped: a manifest patient with core images but no feature file (index status ``missing``:
Stage 1 treats the modality as missing), patients with neither (not TMA patients, as in extraction),
files or table rows of patients outside the cohort, cores of other markers, files with no rows
(status ``empty`` when all of a patient's files are empty).

Resume: a patient's h5 is rewritten only when its source files (paths, sizes, mtimes), the encoder or
the width changed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from haf.artifacts.bags import TRIDENT_COORDS_ATTRS, read_coords_attrs, trident_coords_attrs, write_bag
from haf.artifacts.tma_index import write_tma_index
from haf.errors import HafConfigError, HafInputError
from haf.extract.registry import encoder_dim
from haf.io.tma import CORE_NAME_RE, canonical_marker, parse_core_name, read_tma_maps
from haf.settings import ExtractSettings

log = logging.getLogger(__name__)

H5_SUFFIXES = (".h5", ".hdf5")
PT_SUFFIXES = (".pt", ".pth")
FEATURE_SUFFIXES = H5_SUFFIXES + PT_SUFFIXES
PRECOMPUTED_DIGEST = "precomputed"
STATUS_MISSING = "missing"
RESUME_KEYS = ("encoder", "weights_digest", "feature_dim", "sources_digest")


# ---------------------------------------------------------------------------------------------
# reading one file


@dataclass
class FeatureFile:
    """One validated feature file: float32 features, int32 coords (-1 when the file has none)."""

    path: Path
    features: np.ndarray
    coords: np.ndarray
    coords_attrs: dict[str, Any] = field(default_factory=dict)
    has_coords: bool = True


def _check_features(path: Path, features: Any, expected_dim: int, what: str) -> np.ndarray:
    array = np.asarray(features)
    if array.ndim == 3 and array.shape[0] == 1:  # some tools keep a batch axis: (1, N, D)
        array = array[0]
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, expected_dim)
    if array.ndim != 2:
        raise HafInputError(path, f"{what} has shape {array.shape}, expected (N, D)", field="features")
    if not np.issubdtype(array.dtype, np.floating):
        raise HafInputError(
            path, f"{what} are {array.dtype}, expected floating point (float16/32/64)", field="features"
        )
    if array.shape[0] and array.shape[1] != expected_dim:
        raise HafInputError(
            path,
            f"{what} are {array.shape[1]}-d but {expected_dim}-d are expected (extract.precomputed.dim, else "
            "the registry width of extract.encoder): features of another encoder?",
            field="features",
        )
    array = array.astype(np.float32, copy=False)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise HafInputError(
            path, "NaN or inf in features", where=f"row {int(np.flatnonzero(bad)[0])}", field="features"
        )
    return array.reshape(-1, expected_dim)


def _check_coords(path: Path, coords: Any, n: int) -> np.ndarray:
    array = np.asarray(coords)
    if array.size == 0 and n == 0:
        return np.zeros((0, 2), dtype=np.int32)
    if array.ndim != 2 or array.shape != (n, 2):
        raise HafInputError(path, f"'coords' has shape {array.shape}, expected ({n}, 2)", field="coords")
    if not np.issubdtype(array.dtype, np.integer):
        if not (np.isfinite(array).all() and np.all(array == np.round(array))):
            raise HafInputError(path, "'coords' are not whole pixel positions", field="coords")
    return array.astype(np.int32)


def read_feature_file(path: str | Path, expected_dim: int) -> FeatureFile:
    """Read and check one TRIDENT/CLAM ``.h5`` or ``.pt`` feature file; every error names the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in H5_SUFFIXES:
        try:
            handle = h5py.File(path, "r")
        except OSError as exc:
            raise HafInputError(path, f"cannot open as HDF5: {exc}") from None
        with handle:
            if "features" not in handle or not isinstance(handle["features"], h5py.Dataset):
                found = ", ".join(handle.keys()) or "nothing"
                raise HafInputError(path, f"no 'features' dataset (found: {found})", field="features")
            features = _check_features(path, handle["features"][()], expected_dim, "'features'")
            if "coords" in handle:
                coords = _check_coords(path, handle["coords"][()], len(features))
                return FeatureFile(path, features, coords, read_coords_attrs(handle))
        return FeatureFile(path, features, np.full((len(features), 2), -1, np.int32), {}, has_coords=False)
    if suffix in PT_SUFFIXES:
        import torch

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise HafInputError(path, f"cannot load as a PyTorch file: {type(exc).__name__}: {exc}") from None
        if isinstance(obj, dict) and "features" in obj:
            obj = obj["features"]
        if not isinstance(obj, torch.Tensor):
            raise HafInputError(
                path, f"expected a tensor N x D (CLAM pt_files), found {type(obj).__name__}", field="features"
            )
        if not obj.is_floating_point():
            raise HafInputError(path, f"the tensor is {obj.dtype}, expected floating point", field="features")
        features = _check_features(path, obj.detach().float().numpy(), expected_dim, "the tensor")
        return FeatureFile(path, features, np.full((len(features), 2), -1, np.int32), {}, has_coords=False)
    raise HafInputError(
        path, f"unknown feature file type {path.suffix!r}; expected one of {FEATURE_SUFFIXES}"
    )


# ---------------------------------------------------------------------------------------------
# which files belong to whom


@dataclass
class Assignment:
    """Feature files per patient, with what was left out."""

    files: dict[str, list[Path]]
    kind: dict[str, str]  # patient -> "patient" | "core" | "table"
    counts: Counter
    outside: list[str]  # file names / table rows of patients not in the cohort


def _core_stem(path: Path) -> re.Match | None:
    return CORE_NAME_RE.match(path.stem + ".png")


def assign_files(
    folder: str | Path,
    patients: list[str],
    manifest_cores: dict[str, list[str]],
    markers: list[str],
    table: str | Path | None = None,
    tma_maps: str | Path | None = None,
) -> Assignment:
    """Map the folder's feature files (or the table's rows) to cohort patients (module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HafConfigError(f"extract.precomputed.dir: {str(folder)!r} is not a folder")
    cohort = set(patients)
    counts: Counter = Counter()
    files: dict[str, list[Path]] = {}
    kind: dict[str, str] = {}
    outside: list[str] = []
    if table:
        return _assign_from_table(Path(table), folder, cohort, counts)
    maps = read_tma_maps(tma_maps) if tma_maps else {}
    wanted = {canonical_marker(m) for m in markers}
    per_core: dict[str, list[tuple[tuple, Path]]] = {}
    per_patient: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if path.suffix.lower() not in FEATURE_SUFFIXES:
            counts["files_not_features"] += 1
            continue
        if _core_stem(path):
            core = parse_core_name(path.with_suffix(".png"))
            if core.marker not in wanted:
                counts["core_files_other_marker_left_out"] += 1
                continue
            if core.block in maps:
                map_path, mapping = maps[core.block]
                if mapping.get(core.position) != core.patient_id:
                    have = mapping.get(core.position, "no entry")
                    raise HafInputError(
                        path,
                        f"the file name says patient {core.patient_id} but the TMA map {map_path} has "
                        f"{have!r} at core {core.position} (row-col = y-x) of block {core.block}",
                        field="file name",
                    )
            else:
                counts["core_files_unchecked_no_map"] += 1
            pid = core.patient_id
            if pid not in cohort:
                outside.append(path.name)
                continue
            order = [Path(c).stem for c in manifest_cores.get(pid, [])]
            rank = order.index(path.stem) if path.stem in order else len(order)
            per_core.setdefault(pid, []).append(((rank, core.marker, core.block, core.y, core.x), path))
        else:
            pid = path.stem
            if pid not in cohort:
                outside.append(path.name)
                continue
            if pid in per_patient:
                raise HafInputError(
                    path, f"a second feature file for patient {pid} (the first is {per_patient[pid].name})"
                )
            per_patient[pid] = path
    for pid, path in per_patient.items():
        if pid in per_core:
            raise HafInputError(
                path,
                f"patient {pid} has a patient-level file and core-level files "
                f"({', '.join(p.name for _, p in per_core[pid][:3])}); keep one kind",
            )
        files[pid], kind[pid] = [path], "patient"
    for pid, items in per_core.items():
        files[pid], kind[pid] = [p for _, p in sorted(items, key=lambda t: t[0])], "core"
    counts["files_outside_cohort"] += len(outside)
    return Assignment(files, kind, counts, outside)


def _assign_from_table(table: Path, folder: Path, cohort: set[str], counts: Counter) -> Assignment:
    sep = "," if table.suffix.lower() == ".csv" else "\t"
    try:
        frame = pd.read_csv(table, sep=sep, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HafInputError(table, f"cannot read the table: {exc}") from None
    for column in ("patient_id", "file"):
        if column not in frame.columns:
            raise HafInputError(table, f"missing column {column!r} (expected patient_id, file)", field=column)
    files: dict[str, list[Path]] = {}
    outside: list[str] = []
    for line, rec in enumerate(frame.itertuples(index=False), start=2):
        pid, raw = str(rec.patient_id).strip(), str(rec.file).strip()
        if not pid or not raw:
            raise HafInputError(table, "empty patient_id or file", where=f"line {line}")
        path = Path(raw) if Path(raw).is_absolute() else folder / raw
        if not path.is_file():
            raise HafInputError(table, f"file not found: {path}", where=f"line {line}", field="file")
        if pid not in cohort:
            outside.append(f"line {line} ({pid}: {raw})")
            continue
        files.setdefault(pid, []).append(path)
    counts["table_rows_outside_cohort"] += len(outside)
    return Assignment(files, dict.fromkeys(files, "table"), counts, outside)


# ---------------------------------------------------------------------------------------------
# the rule's library function


def _manifest(manifest: Path) -> tuple[list[str], dict[str, list[str]]]:
    try:
        frame = pd.read_csv(manifest, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HafInputError(manifest, f"cannot read the manifest: {exc}") from None
    if "patient_id" not in frame.columns:
        raise HafInputError(manifest, "missing column 'patient_id'", field="patient_id")
    cores = frame["tma_files"] if "tma_files" in frame.columns else pd.Series([""] * len(frame))
    patients = [str(p).strip() for p in frame["patient_id"]]
    return patients, {
        pid: [c.strip() for c in str(raw).split(";") if c.strip()]
        for pid, raw in zip(patients, cores, strict=True)
    }


def _sources_digest(paths: list[Path]) -> str:
    digest = hashlib.sha1()
    for path in paths:
        st = path.stat()
        digest.update(f"{path}\t{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _existing(path: Path) -> dict[str, Any] | None:
    try:
        with h5py.File(path, "r") as handle:
            attrs = {k: handle.attrs[k] for k in handle.attrs}
            attrs["_shape"] = tuple(handle["features"].shape)
    except (OSError, KeyError):
        return None
    return {
        k: (v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v)
        for k, v in attrs.items()
    }


def _strings(values: list[str]) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=h5py.string_dtype())


def import_precomputed(
    manifest: str | Path,
    index_path: str | Path,
    h5_dir: str | Path,
    section: ExtractSettings | dict[str, Any],
    *,
    tma_maps: str | Path | None = None,
) -> dict[str, Any]:
    """Turn a folder of precomputed TMA features into the extraction's index and per-patient h5; counts.

    ``section``: the ``extract`` settings (``encoder``, ``markers``, tile settings, ``precomputed``).
    """
    started = time.perf_counter()
    section = ExtractSettings.from_config(section)
    pre = dict(section.precomputed)
    if not pre.get("dir"):
        raise HafConfigError(
            "extract.precomputed.dir is not set: nothing to import (null = extract from the core images)"
        )
    name = section.encoder
    dim = int(pre["dim"]) if pre.get("dim") else encoder_dim(name)
    manifest, index_path, h5_dir = Path(manifest), Path(index_path), Path(h5_dir)
    patients, manifest_cores = _manifest(manifest)
    assigned = assign_files(
        pre["dir"], patients, manifest_cores, list(section.markers), pre.get("table"), tma_maps
    )
    counts = Counter(assigned.counts)
    if assigned.outside:
        log.warning(
            "%d feature file(s)/table row(s) belong to patients outside the cohort and are left out: %s%s",
            len(assigned.outside),
            ", ".join(assigned.outside[:10]),
            " ..." if len(assigned.outside) > 10 else "",
        )
    tile_px, tile_mpp, core_mpp = section.tile_px, section.tile_mpp, section.core_mpp
    config_coords = trident_coords_attrs(tile_px, tile_mpp, core_mpp)
    log.info(
        "extract_tma from precomputed features in %s (%s): encoder %s, %d-d, %d of %d patients have files",
        pre["dir"],
        f"table {pre['table']}" if pre.get("table") else "file names",
        name,
        dim,
        len(assigned.files),
        len(patients),
    )
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    for pid in patients:
        paths = assigned.files.get(pid)
        if not paths:
            if manifest_cores[pid]:
                missing.append(pid)
                counts["patients_missing_precomputed"] += 1
                rows.append(
                    {
                        "patient_id": pid,
                        "h5_path": "",
                        "n_cores": 0,
                        "n_tiles": 0,
                        "n_empty_cores": 0,
                        "status": STATUS_MISSING,
                        "n_failed_cores": 0,
                    }
                )
            else:
                counts["patients_without_tma"] += 1
            continue
        out = h5_dir / f"{pid}.h5"
        digest = _sources_digest(paths)
        expected = {
            "encoder": name,
            "weights_digest": PRECOMPUTED_DIGEST,
            "feature_dim": dim,
            "sources_digest": digest,
        }
        old = _existing(out) if out.exists() else None
        if (
            old is not None
            and all(old.get(k) == v for k, v in expected.items())
            and old["_shape"][0] == old.get("n_tiles")
        ):
            counts["patients_resumed"] += 1
            rows.append(_row(pid, out, old))
            continue
        parts = [read_feature_file(p, dim) for p in paths]
        coords_attrs = _coords_attrs(parts, config_coords)
        features = np.concatenate([p.features for p in parts])
        coords = np.concatenate([p.coords for p in parts])
        n_tiles = int(len(features))
        n_empty = sum(len(p.features) == 0 for p in parts)
        counts["files_empty"] += n_empty
        status = "ok" if n_tiles else "empty"
        if not n_tiles:
            log.warning("patient %s: its %d feature file(s) hold no rows: status empty", pid, len(parts))
        attrs = dict(
            expected,
            tile_px=int(coords_attrs.get("patch_size", tile_px)),
            tile_mpp=tile_mpp,
            n_cores=len(parts),
            n_tiles=n_tiles,
            n_empty_cores=int(n_empty),
            n_failed_cores=0,
            status=status,
            precomputed_kind=assigned.kind[pid],
            precomputed_files=_strings([str(p) for p in paths]),
            core_files=_strings([p.name for p in paths]),
            core_tiles=np.array([len(p.features) for p in parts], dtype=np.int64),
            core_status=_strings(["ok" if len(p.features) else "empty" for p in parts]),
            coords_convention=(
                "as written by the tool that made the features (TRIDENT/CLAM: x, y of the tile's top-left "
                "corner in level-0 pixels); -1 where the file had no coords"
            ),
        )
        write_bag(out, features, coords, attrs, coords_attrs)
        counts[f"patients_{status}"] += 1
        counts["tiles_imported"] += n_tiles
        rows.append(_row(pid, out, attrs))
    if missing:
        log.warning(
            "%d patient(s) have TMA core images in the manifest but no precomputed feature file: index status "
            "'missing' (treated as missing the TMA modality): %s%s",
            len(missing),
            ", ".join(missing[:20]),
            " ..." if len(missing) > 20 else "",
        )
    write_tma_index(index_path, rows)
    counts["seconds"] = round(time.perf_counter() - started, 2)
    log.info("extract_tma (precomputed) counts: %s", dict(sorted(counts.items())))
    log.info("wrote %s (%d patients)", index_path, len(rows))
    return dict(counts)


def _coords_attrs(parts: list[FeatureFile], config_coords: dict[str, Any]) -> dict[str, Any]:
    """TRIDENT's coords attributes of the files when present (the first file's; others must agree), else
    the ones the config describes (module docstring)."""
    found = [p for p in parts if p.coords_attrs]
    if not found:
        return dict(config_coords)
    first = found[0].coords_attrs
    for other in found[1:]:
        for key in TRIDENT_COORDS_ATTRS:
            if (
                key in first
                and key in other.coords_attrs
                and not np.isclose(float(first[key]), float(other.coords_attrs[key]))
            ):
                raise HafInputError(
                    other.path,
                    f"coords attribute {key} = {other.coords_attrs[key]} but {found[0].path.name} has {first[key]}: "
                    "one patient's features were made with different tiling",
                    field="coords",
                )
    return {**config_coords, **first}


def _row(pid: str, path: Path, attrs: dict[str, Any]) -> dict[str, Any]:
    return {
        "patient_id": pid,
        "h5_path": str(path),
        "n_cores": int(attrs["n_cores"]),
        "n_tiles": int(attrs["n_tiles"]),
        "n_empty_cores": int(attrs["n_empty_cores"]),
        "status": str(attrs["status"]),
        "n_failed_cores": int(attrs["n_failed_cores"]),
    }


__all__ = ["FeatureFile", "assign_files", "import_precomputed", "read_feature_file"]
