"""``stage1/{wsi|tma|wsi_tma}/fold_{k}/attention.h5`` (rule ``stage1``): per-instance CLAM attention.

For every patient of the fold with a non-empty bag (train, val and test), the gated attention of the fold's
model over the patient's **full** bag in eval mode: exactly the weights ``a_i`` of Eq. 2 that pooled the
patient's final embedding in ``embeddings.npz`` (:meth:`haf.mil.clam.GatedAttentionMIL.attend_one`),
with where each instance came from.  What attention heatmaps (rule ``fig_attention``) and any downstream
analysis read.

Layout (HDF5; every string attribute UTF-8; written atomically and byte-stably: no timestamps; bags of
:data:`COMPRESS_FROM` instances or more gzip-compressed)::

    /                       attrs format = "haf-stage1-attention", version = 1, pmod, fold, method
                            ("{pmod}_clam"), n_patients, coords_convention
    /patients/{patient_id}  attrs part (train | val | test), risk (the bag logit, as in predictions.tsv),
                                  n_instances,
                                  source_files      the bag's h5 files, in the bag's instance order,
                                  source_modality   wsi | tma per source file,
                                  source_patch_size one tile's side in coords units per source file
                                                    (TRIDENT's patch_size_level0, else the extraction's
                                                    tile_px_core; NaN when the bag does not say),
                                  core_files        the TMA core images the tiles were cut from, as the bags
                                                    record them (attribute core_files), in bag order,
                                  core_images       each core's path resolved against the manifest
                                                    ('' when no such file exists, e.g. precomputed features)
        attention  float32 (n,)    a_i, >= 0, sums to 1 over the bag
        coords     int64 (n, 2)    the bag's coords rows (x, y), in instance order
        source     int32 (n,)      index into source_files
        core       int32 (n,)      index into core_files; -1 where unknown (WSI patches; a bag that does
                                   not record its tiles per core)

The instance order is the bag's: the rows of its h5 files concatenated in ``source_files`` order (what
:class:`haf.mil.bags.BagStore` feeds the model).  Patient ids are group names, so one containing ``/``
(or equal to ``.``) is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from haf.artifacts.files import atomic_path
from haf.artifacts.predictions import PARTS
from haf.errors import HafInputError

FORMAT = "haf-stage1-attention"
VERSION = 1
COORDS_CONVENTION = (
    "coords: the bag h5's coords rows; this pipeline's TMA tiles and TRIDENT/CLAM patches: x, y of the "
    "top-left corner in level-0 pixels of the source image"
)
SUM_TOLERANCE = 1e-4
"""How far a bag's attention may sum from 1 (float32 softmax over up to ~1e5 instances: ~1e-6 measured)."""
_STR = h5py.string_dtype()
_COMPRESSION = dict(compression="gzip", compression_opts=4, shuffle=True)
COMPRESS_FROM = 1024
"""Bags of at least this many instances are stored gzip-compressed (chunked); smaller ones contiguous: a
chunked dataset's index costs ~2 KB, more than a small bag's data (measured: 39 bags of 8 tiles, 475 KB
chunked vs 134 KB contiguous)."""


@dataclass
class BagAttention:
    """One patient's attention over its full bag and where each instance came from."""

    patient_id: str
    part: str
    risk: float
    attention: np.ndarray  # (n,) float32
    coords: np.ndarray  # (n, 2) int64
    source: np.ndarray  # (n,) int32, index into source_files
    core: np.ndarray  # (n,) int32, index into core_files, -1 unknown
    source_files: tuple[str, ...]
    source_modality: tuple[str, ...]
    source_patch_size: tuple[float, ...]
    core_files: tuple[str, ...] = ()
    core_images: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return int(len(self.attention))

    def check(self, where: str | Path | None = None) -> None:
        """Every invariant of the contract; a violation names the patient and the field."""
        pid, n = self.patient_id, len(self.attention)

        def fail(problem: str, name: str) -> None:
            raise HafInputError(where, problem, where=f"patient {pid}", field=name)

        if not pid or "/" in pid or pid == ".":
            fail("a patient id must be non-empty, without '/', and not '.'", "patient_id")
        if self.part not in PARTS:
            fail(f"part {self.part!r} not in {PARTS}", "part")
        a = np.asarray(self.attention)
        if a.ndim != 1 or n == 0:
            fail(f"attention must be a non-empty vector, got shape {a.shape}", "attention")
        if not np.isfinite(a).all() or (a < 0).any():
            fail("attention must be finite and >= 0", "attention")
        total = float(a.astype(np.float64).sum())
        if abs(total - 1.0) > SUM_TOLERANCE:
            fail(f"attention sums to {total:.6g}, not 1 (tolerance {SUM_TOLERANCE:g})", "attention")
        if np.asarray(self.coords).shape != (n, 2):
            fail(f"coords have shape {np.asarray(self.coords).shape}, expected ({n}, 2)", "coords")
        k = len(self.source_files)
        if len(self.source_modality) != k or len(self.source_patch_size) != k:
            fail("source_files, source_modality and source_patch_size differ in length", "source_files")
        for name, index, size in (("source", self.source, k), ("core", self.core, len(self.core_files))):
            index = np.asarray(index)
            low = 0 if name == "source" else -1
            if index.shape != (n,) or (n and (index.min() < low or index.max() >= size)):
                fail(f"{name} must be ({n},) indices in [{low}, {size})", name)
        if len(self.core_images) != len(self.core_files):
            fail("core_images and core_files differ in length", "core_images")


@dataclass
class AttentionFile:
    """One fold's attention file: its attributes and the patients read (all, or those asked for)."""

    pmod: str
    fold: int
    method: str
    patients: dict[str, BagAttention] = field(default_factory=dict)


def _strings(values: Sequence[str]) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=_STR)


def write_attention(path: str | Path, bags: Iterable[BagAttention], *, pmod: str, fold: int) -> int:
    """Write ``attention.h5`` atomically from one :class:`BagAttention` per patient; returns their count.

    Groups are written in patient-id order and no dataset records a time, so the same attention gives the
    same bytes.  Each bag is checked first (:meth:`BagAttention.check`); a patient twice is an error.
    """
    bags = sorted(bags, key=lambda b: b.patient_id)
    ids = [b.patient_id for b in bags]
    if len(set(ids)) != len(ids):
        dup = next(p for p in ids if ids.count(p) > 1)
        raise ValueError(f"{path}: patient {dup} appears twice")
    for bag in bags:
        bag.check(path)
    with atomic_path(path, ".h5") as tmp:
        with h5py.File(tmp, "w", libver="earliest", track_order=False) as handle:
            handle.attrs["format"] = FORMAT
            handle.attrs["version"] = VERSION
            handle.attrs["pmod"] = str(pmod)
            handle.attrs["fold"] = int(fold)
            handle.attrs["method"] = f"{pmod}_clam"
            handle.attrs["n_patients"] = len(bags)
            handle.attrs["coords_convention"] = COORDS_CONVENTION
            patients = handle.create_group("patients")
            for bag in bags:
                group = patients.create_group(bag.patient_id)
                group.attrs["part"] = bag.part
                group.attrs["risk"] = float(bag.risk)
                group.attrs["n_instances"] = bag.n
                group.attrs["source_files"] = _strings(bag.source_files)
                group.attrs["source_modality"] = _strings(bag.source_modality)
                group.attrs["source_patch_size"] = np.asarray(bag.source_patch_size, dtype=np.float64)
                group.attrs["core_files"] = _strings(bag.core_files)
                group.attrs["core_images"] = _strings(bag.core_images)
                for name, data, dtype in (
                    ("attention", bag.attention, np.float32),
                    ("coords", bag.coords, np.int64),
                    ("source", bag.source, np.int32),
                    ("core", bag.core, np.int32),
                ):
                    group.create_dataset(
                        name,
                        data=np.asarray(data, dtype=dtype),
                        track_times=False,
                        **(_COMPRESSION if bag.n >= COMPRESS_FROM else {}),
                    )
    return len(bags)


def _text(values) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values).tolist())


def _open(path: str | Path) -> h5py.File:
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise HafInputError(path, f"cannot open as HDF5: {exc}") from exc
    if handle.attrs.get("format") != FORMAT or "patients" not in handle:
        handle.close()
        raise HafInputError(
            path, f"not a Stage 1 attention file (attribute format != {FORMAT!r})", field="format"
        )
    version = int(handle.attrs.get("version", -1))
    if version != VERSION:
        handle.close()
        raise HafInputError(
            path, f"attention file version {version}, this code reads {VERSION}", field="version"
        )
    return handle


def _read_bag(path: str | Path, pid: str, group: h5py.Group) -> BagAttention:
    for name in ("attention", "coords", "source", "core"):
        if name not in group:
            raise HafInputError(path, "dataset missing", where=f"patient {pid}", field=name)
    for name in ("part", "risk", "source_files", "source_modality", "source_patch_size"):
        if name not in group.attrs:
            raise HafInputError(path, "attribute missing", where=f"patient {pid}", field=name)
    bag = BagAttention(
        patient_id=pid,
        part=_text(group.attrs["part"])[0],
        risk=float(group.attrs["risk"]),
        attention=np.asarray(group["attention"][()], dtype=np.float32),
        coords=np.asarray(group["coords"][()], dtype=np.int64).reshape(-1, 2),
        source=np.asarray(group["source"][()], dtype=np.int32),
        core=np.asarray(group["core"][()], dtype=np.int32),
        source_files=_text(group.attrs["source_files"]),
        source_modality=_text(group.attrs["source_modality"]),
        source_patch_size=tuple(float(v) for v in np.atleast_1d(group.attrs["source_patch_size"])),
        core_files=_text(group.attrs.get("core_files", _strings([]))),
        core_images=_text(group.attrs.get("core_images", _strings([]))),
    )
    bag.check(path)
    return bag


def read_attention(path: str | Path, patients: Sequence[str] | None = None) -> AttentionFile:
    """Read an attention file (every patient, or only ``patients``); each bag is checked on reading.

    A patient asked for but not in the file is an error naming it.
    """
    with _open(path) as handle:
        group = handle["patients"]
        wanted = sorted(group) if patients is None else [str(p) for p in patients]
        missing = [p for p in wanted if p not in group]
        if missing:
            raise HafInputError(
                path, f"no attention for patient(s) {', '.join(missing)} in this fold", field="patients"
            )
        bags = {pid: _read_bag(path, pid, group[pid]) for pid in wanted}
        return AttentionFile(
            pmod=_text(handle.attrs["pmod"])[0],
            fold=int(handle.attrs["fold"]),
            method=_text(handle.attrs["method"])[0],
            patients=bags,
        )


def attention_index(path: str | Path) -> pd.DataFrame:
    """``patient_id, part, risk, n_instances`` of every patient in the file, without reading the attention
    (to choose whose attention to draw)."""
    with _open(path) as handle:
        rows = [
            dict(
                patient_id=pid,
                part=_text(g.attrs["part"])[0],
                risk=float(g.attrs["risk"]),
                n_instances=int(g.attrs["n_instances"]),
            )
            for pid, g in handle["patients"].items()
        ]
    return pd.DataFrame(rows, columns=["patient_id", "part", "risk", "n_instances"])
