"""TMA core images -> one h5 bag of tile embeddings per patient, and the extraction index.

Input: the cohort manifest (``patient_id``, ``tma_files``: ``;``-joined core image paths of the
configured markers). Output (docs/ARCHITECTURE.md): ``{h5_dir}/{patient_id}.h5`` written with
:func:`haf.artifacts.bags.write_bag` (atomic: a temporary file renamed when complete) and ``index.tsv``
(``patient_id, h5_path, n_cores, n_tiles, n_empty_cores, status, n_failed_cores``; written last,
atomically).

Pipeline. DataLoader workers decode and tile whole cores (:mod:`haf.extract.tiling`) and hand back
uint8 tiles (pinned memory on CUDA); the main process copies them to the device (non-blocking),
normalises there, and encodes fixed-size batches across core boundaries under bf16 autocast on CUDA
(fp32 on CPU), optionally ``torch.compile``-d (static shapes: the last batch is padded). Results are
read back one batch late, so the device is already busy with the next batch while the host sorts rows
into patients and writes each patient's h5 as soon as its last core is done.

Per patient: every core of the manifest row (a core of another marker, recognised by its HANCOCK file
name, is left out and counted). Status ``ok`` (>= 1 tile), ``empty`` (no core with tissue: Stage 1
treats the patient as missing the modality) or ``failed`` (every core unreadable, policy ``skip``).

Bad cores. Empty cores (no tissue, smaller than one tile) are counted per patient (``n_empty_cores``)
and in the log. Unreadable cores (missing, truncated, not an image) follow ``extract.on_unreadable``:
``fail`` (default) finishes and writes every other patient, then raises one error naming every bad
file (no index is written; a rerun redoes only the patients without an h5); ``skip`` leaves the core
out, counts it (``n_failed_cores``) and logs the file and the error.

Cohort check. After every patient is written, the rule fails (no index) when the cohort gives no tile
at all, or when fewer than ``extract.min_tiled_core_fraction`` of its readable cores give one: the
error names the tiling settings, one tile's size in core pixels and the core sizes seen, since that is a
wrong ``core_mpp`` or tile/mask setting rather than a cohort without tissue (:func:`check_tiled_share`).

Resume. A patient is redone only if its h5 is missing, unreadable, or its attributes differ from the
current run: encoder, weights digest, tile settings (``tile_px``, ``tile_mpp`` and a digest of all
tiling settings), feature width, or the fingerprint of its core files (paths, sizes, mtimes).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from haf.artifacts.bags import read_bag_attrs, trident_coords_attrs, write_bag
from haf.artifacts.manifest import listed_files, read_manifest, resolve_listed
from haf.artifacts.tma_index import INDEX_COLUMNS, write_tma_index
from haf.errors import HafConfigError, HafInputError
from haf.extract.registry import (
    LoadedEncoder,
    WeightsSource,
    check_tile_px,
    get_spec,
    load_encoder,
    resolve_weights,
)
from haf.extract.tiling import (
    STATUS_FAILED,
    STATUS_NO_TISSUE,
    STATUS_OK,
    STATUS_TOO_SMALL,
    TilingSettings,
    read_core,
    tile_core,
)
from haf.io.tma import CORE_NAME_RE, canonical_marker
from haf.runtime.device import autocast
from haf.settings import ExtractSettings

log = logging.getLogger(__name__)

RESUME_KEYS = (
    "encoder",
    "weights_digest",
    "tile_px",
    "tile_mpp",
    "tiling_digest",
    "feature_dim",
    "sources_digest",
)
ON_UNREADABLE = ("fail", "skip")


# ---------------------------------------------------------------------------------------------
# what to extract


@dataclass
class PatientCores:
    """One patient's cores (manifest order) and where its bag goes."""

    patient_id: str
    cores: list[Path]
    raw: list[str]
    h5_path: Path
    sources_digest: str = ""


def read_manifest_cores(
    manifest: str | Path, markers: Sequence[str], counts: Counter | None = None
) -> list[PatientCores]:
    """Patients with core images from the manifest; a core of another marker is left out and counted.

    Paths are resolved by :func:`haf.artifacts.manifest.resolve_listed`. Patients without ``tma_files``
    are not TMA patients and are only counted.
    """
    counts = counts if counts is not None else Counter()
    frame = read_manifest(manifest, required=("patient_id", "tma_files"))
    wanted = {canonical_marker(m) for m in markers}
    patients: list[PatientCores] = []
    for rec in frame.itertuples(index=False):
        raw = listed_files(rec.tma_files)
        if not raw:
            counts["patients_without_cores"] += 1
            continue
        kept: list[str] = []
        for p in raw:
            match = CORE_NAME_RE.match(Path(p).name)
            if match and canonical_marker(match.group(1)) not in wanted:
                counts["cores_other_marker_left_out"] += 1
                continue
            kept.append(p)
        if not kept:
            counts["patients_only_other_markers"] += 1
            continue
        paths = [resolve_listed(p, manifest) for p in kept]
        patients.append(PatientCores(str(rec.patient_id), paths, kept, Path()))
    return patients


def sources_digest(paths: Sequence[Path], raw: Sequence[str]) -> str:
    """Fingerprint of a patient's core files: written path, size and mtime (a replaced file is redone)."""
    digest = hashlib.sha1()
    for path, text in zip(paths, raw, strict=True):
        try:
            st = path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{text}\t{stamp}\n".encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# resume


def resume_mismatch(attrs: dict[str, Any] | None, expected: dict[str, Any]) -> str | None:
    """Why an existing bag cannot be kept (``None``: it matches the current run)."""
    if attrs is None:
        return "unreadable"
    for key in RESUME_KEYS:
        have, want = attrs.get(key), expected[key]
        if isinstance(want, float):
            if have is None or not np.isclose(float(have), want, rtol=0, atol=1e-9):
                return key
        elif have != want:
            return key
    shape = attrs.get("_shape", ())
    if (
        len(shape) != 2
        or shape[0] != attrs.get("n_tiles")
        or (shape[0] and shape[1] != expected["feature_dim"])
    ):
        return "shape"
    return None


def index_row(patient: PatientCores, attrs: dict[str, Any]) -> dict[str, Any]:
    return {
        "patient_id": patient.patient_id,
        "h5_path": str(patient.h5_path),
        "n_cores": int(attrs["n_cores"]),
        "n_tiles": int(attrs["n_tiles"]),
        "n_empty_cores": int(attrs["n_empty_cores"]),
        "status": str(attrs["status"]),
        "n_failed_cores": int(attrs["n_failed_cores"]),
    }


def remove_stale_temporaries(h5_dir: Path) -> int:
    """Delete temporary bags a killed run left behind (``.<id>.h5.<random>.h5``, from atomic_path)."""
    removed = 0
    if h5_dir.is_dir():
        for tmp in h5_dir.glob(".*.h5.*.h5"):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


# ---------------------------------------------------------------------------------------------
# decoding and tiling in workers


class CoreDataset(torch.utils.data.Dataset):
    """Item i = the decoded, tiled core i (uint8 tiles); an unreadable core comes back as ``failed``."""

    def __init__(self, paths: Sequence[Path], settings: TilingSettings) -> None:
        self.paths = list(paths)
        self.settings = settings

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        t = self.settings.tile_px
        try:
            rgb, mode = read_core(self.paths[i])
            tiles = tile_core(rgb, self.settings, grayscale=mode.startswith("gray"))
        except HafInputError as exc:
            return {
                "i": i,
                "tiles": torch.zeros((0, 3, t, t), dtype=torch.uint8),
                "coords": torch.zeros((0, 2), dtype=torch.int32),
                "status": STATUS_FAILED,
                "mode": "",
                "error": str(exc),
                "core_shape": (0, 0),
            }
        return {
            "i": i,
            "tiles": tiles.tiles,
            "coords": torch.from_numpy(tiles.coords),
            "status": tiles.status,
            "mode": mode,
            "error": "",
            "core_shape": tiles.core_shape,
        }


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def plan_workers(device: torch.device, threads: int, num_workers: int | None) -> tuple[int, int]:
    """(DataLoader workers, torch threads of the main process) within the rule's ``threads``.

    CUDA: the model runs on the GPU, so all but one thread decode (``threads - 1`` workers). CPU: the
    encoder needs the cores too: half the threads decode, the rest run the model.
    """
    threads = max(1, int(threads))
    auto = threads - 1 if device.type == "cuda" else threads // 2
    workers = auto if num_workers is None else min(int(num_workers), auto)
    workers = max(0, workers)
    compute = 1 if device.type == "cuda" else max(1, threads - workers)
    return workers, compute


# ---------------------------------------------------------------------------------------------
# encoding


class TileEncoder:
    """Normalise uint8 tiles on the device and encode them in batches (bf16 autocast on CUDA)."""

    def __init__(
        self,
        encoder: LoadedEncoder,
        device: torch.device,
        batch_size: int,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        self.device = device
        self.batch_size = int(batch_size)
        self.channels_last = bool(channels_last) and device.type == "cuda"
        model = encoder.model.to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.compiled = bool(compile) and device.type == "cuda"
        if compile and not self.compiled:
            log.info("extract.compile ignored on %s (torch.compile is used on CUDA only)", device)
        self.model = torch.compile(model) if self.compiled else model
        spec = encoder.spec
        self.offset = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0
        self.scale = 1.0 / (
            torch.tensor(spec.std, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0
        )
        self.dim = spec.dim

    @torch.inference_mode()
    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 (n, 3, t, t) on the device -> float32 (n, D) on the device (asynchronous on CUDA)."""
        n = tiles.shape[0]
        x = (tiles.to(torch.float32) - self.offset) * self.scale
        if self.compiled and n < self.batch_size:  # static shapes: no recompilation for the last batch
            x = torch.cat([x, x.new_zeros((self.batch_size - n, *x.shape[1:]))])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            out = self.model(x)
        return out[:n].float()


@dataclass
class _CoreState:
    patient: int
    n: int = -1  # tiles; -1 until the loader delivered the core
    got: int = 0
    feats: list[np.ndarray] = field(default_factory=list)
    coords: np.ndarray | None = None
    status: str = ""
    mode: str = ""
    error: str = ""
    core_shape: tuple[int, int] = (0, 0)


# ---------------------------------------------------------------------------------------------
# the rule's library function


def extract_tma_features(
    manifest: str | Path,
    index_path: str | Path,
    h5_dir: str | Path,
    section: ExtractSettings | dict[str, Any],
    device: torch.device | str = "cpu",
    *,
    threads: int = 1,
    progress: bool = True,
    allow_random_weights: bool = False,
    encoder: LoadedEncoder | None = None,
) -> dict[str, Any]:
    """Extract every TMA patient's bag (resuming finished ones) and write the index; returns counts.

    ``section``: the ``extract`` settings (or schema-filled section). ``allow_random_weights``: hub encoders without weights run with a
    random init (benchmarks only). ``encoder``: an already loaded encoder (tests, benchmarks).
    """
    started = time.perf_counter()
    device = torch.device(device)
    section = ExtractSettings.from_config(section)
    name = section.encoder
    spec = get_spec(name)
    settings = TilingSettings.from_section(section)
    check_tile_px(name, settings.tile_px)
    policy = section.on_unreadable
    if policy not in ON_UNREADABLE:
        raise HafConfigError(f"extract.on_unreadable must be one of {ON_UNREADABLE}, got {policy!r}")
    markers = list(section.markers)
    h5_dir = Path(h5_dir)
    index_path = Path(index_path)

    source: WeightsSource = (
        encoder.source
        if encoder is not None
        else resolve_weights(name, section.weights, allow_random=allow_random_weights)
    )
    counts: Counter = Counter()
    patients = read_manifest_cores(manifest, markers, counts)
    expected_base = {
        "encoder": name,
        "weights_digest": source.digest,
        "tile_px": int(settings.tile_px),
        "tile_mpp": float(settings.tile_mpp),
        "tiling_digest": settings.digest(),
        "feature_dim": int(spec.dim),
    }
    log.info(
        "extract_tma: encoder %s (%d-d, weights %s), markers %s, tiles %d px at %.3g um/px from cores at %.3g um/px",
        name,
        spec.dim,
        source.digest,
        ",".join(markers),
        settings.tile_px,
        settings.tile_mpp,
        settings.core_mpp,
    )

    removed = remove_stale_temporaries(h5_dir)
    if removed:
        log.info("removed %d temporary h5 file(s) left by an interrupted run", removed)
    rows: dict[str, dict[str, Any]] = {}
    todo: list[PatientCores] = []
    for patient in patients:
        patient.h5_path = h5_dir / f"{patient.patient_id}.h5"
        patient.sources_digest = sources_digest(patient.cores, patient.raw)
        expected = dict(expected_base, sources_digest=patient.sources_digest)
        if patient.h5_path.exists():
            attrs = read_bag_attrs(patient.h5_path)
            why = resume_mismatch(attrs, expected)
            if why is None:
                rows[patient.patient_id] = index_row(patient, attrs)
                counts["patients_resumed"] += 1
                continue
            counts[f"patients_redone_{why}"] += 1
        todo.append(patient)
    log.info(
        "%d TMA patient(s): %d already done (h5 matches this run), %d to extract",
        len(patients),
        counts["patients_resumed"],
        len(todo),
    )

    failures: list[tuple[str, str]] = []
    core_shapes: list[tuple[int, int]] = []
    tiles_done = 0
    if todo:
        model = encoder if encoder is not None else load_encoder(name, source=source)
        tiles_done = _extract(
            todo,
            model,
            settings,
            device,
            section,
            threads,
            progress,
            policy,
            expected_base,
            rows,
            counts,
            failures,
            core_shapes,
        )

    elapsed = time.perf_counter() - started
    counts["tiles_extracted"] = tiles_done
    counts["seconds"] = round(elapsed, 2)
    for row in rows.values():
        counts[f"status_{row['status']}"] += 1
    log.info("extract_tma counts: %s", dict(sorted(counts.items())))
    if tiles_done:
        log.info(
            "extracted %d tiles in %.1f s end to end (%.1f tiles/s)",
            tiles_done,
            elapsed,
            tiles_done / elapsed,
        )
    if failures:
        listing = "; ".join(f"patient {pid}: {err}" for pid, err in failures[:20])
        more = f" (and {len(failures) - 20} more)" if len(failures) > 20 else ""
        raise HafInputError(
            None,
            f"{len(failures)} unreadable core image(s); every other patient's h5 was written and a rerun "
            f"redoes only the affected patients. Fix or remove these files (or set extract.on_unreadable: "
            f"skip to leave them out): {listing}{more}",
        )
    index_rows = [rows[p.patient_id] for p in patients]
    check_tiled_share(
        pd.DataFrame(index_rows, columns=list(INDEX_COLUMNS)),
        settings,
        section,
        counts,
        core_shapes,
        patients,
    )
    frame = write_tma_index(index_path, index_rows)
    log.info("wrote %s (%d patients)", index_path, len(frame))
    return dict(counts)


def check_tiled_share(
    index: pd.DataFrame,
    settings: TilingSettings,
    section: ExtractSettings,
    counts: Counter,
    core_shapes: Sequence[tuple[int, int]],
    patients: Sequence[PatientCores],
) -> None:
    """Fail when the cohort gives no tile, or fewer than ``extract.min_tiled_core_fraction`` of its
    readable cores give one: that is a wrong ``core_mpp`` or tile/mask setting, not a cohort without
    tissue, and Stage 1 would otherwise fail a rule later on an empty TMA modality.

    The error names the tiling settings, the tile's size in core pixels and the core sizes seen
    (decoded in this run, else read from a few core headers). Every patient's h5 is already written;
    a rerun with other settings redoes them (the tiling digest differs).
    """
    n_cores = int(index["n_cores"].sum()) if len(index) else 0
    if n_cores == 0:
        return
    readable = n_cores - int(index["n_failed_cores"].sum())
    tiled = readable - int(index["n_empty_cores"].sum())
    n_tiles = int(index["n_tiles"].sum())
    minimum = section.min_tiled_core_fraction
    share = tiled / readable if readable else 0.0
    counts["cores_with_tiles"] = tiled
    log.info(
        "%d of %d readable core(s) (%.1f %%) gave at least one tile (%d tiles; extract.min_tiled_core_fraction %g)",
        tiled,
        readable,
        100.0 * share,
        n_tiles,
        minimum,
    )
    if n_tiles > 0 and share >= minimum:
        return
    shapes = list(core_shapes)
    if not shapes:  # every patient resumed: read a few core headers (no decoding)
        from PIL import Image

        for path in [c for p in patients for c in p.cores][:20]:
            try:
                with Image.open(path) as image:
                    shapes.append((image.height, image.width))
            except OSError:
                continue
    if shapes:
        hs, ws = np.array([h for h, _ in shapes]), np.array([w for _, w in shapes])
        sizes = (
            f"core images {int(np.median(hs))} x {int(np.median(ws))} px (median of {len(shapes)}; "
            f"height {hs.min()}-{hs.max()}, width {ws.min()}-{ws.max()})"
        )
    else:
        sizes = "core sizes unknown (no core could be read)"
    statuses = ", ".join(
        f"{k.removeprefix('cores_')} {v}"
        for k, v in sorted(counts.items())
        if k in (f"cores_{STATUS_NO_TISSUE}", f"cores_{STATUS_TOO_SMALL}", f"cores_{STATUS_FAILED}")
    )
    what = "no tile in the whole cohort" if n_tiles == 0 else "too few cores with a tile"
    raise HafInputError(
        None,
        f"extract_tma: {what}: {tiled} of {readable} readable core(s) ({100.0 * share:.1f} %) gave a tile, "
        f"extract.min_tiled_core_fraction is {minimum:g}"
        + (f" (this run: {statuses})" if statuses else "")
        + f". Tiling: tile_px {settings.tile_px} at tile_mpp {settings.tile_mpp:g} um/px from cores at "
        f"core_mpp {settings.core_mpp:g} um/px, so one tile covers {settings.tile_px_core:.0f} x "
        f"{settings.tile_px_core:.0f} core pixels; {sizes}. Tissue mask: saturation >= "
        f"{settings.tissue_saturation_min:g}, value <= {settings.tissue_value_max:g}, a tile kept at "
        f"min_tissue_fraction {settings.min_tissue_fraction:g}. Check extract.core_mpp (the cores' real "
        "resolution) and the tile and mask settings; every patient's h5 was written and a rerun with "
        "other settings redoes them.",
    )


def _extract(
    todo: list[PatientCores],
    encoder: LoadedEncoder,
    settings: TilingSettings,
    device: torch.device,
    section: ExtractSettings,
    threads: int,
    progress: bool,
    policy: str,
    expected_base: dict[str, Any],
    rows: dict[str, dict[str, Any]],
    counts: Counter,
    failures: list[tuple[str, str]],
    core_shapes: list[tuple[int, int]],
) -> int:
    """Run the decode/tile -> encode -> write pipeline over the patients in ``todo``; returns tiles encoded.

    ``core_shapes`` receives the (H, W) of every decoded core (for the cohort-level tiling check)."""
    from tqdm import tqdm

    cores = [(p, path) for p, patient in enumerate(todo) for path in patient.cores]
    states = [_CoreState(patient=p) for p, _ in cores]
    remaining = [len(patient.cores) for patient in todo]
    first_core = np.cumsum([0] + remaining[:-1]).tolist()
    workers, compute_threads = plan_workers(device, threads, section.num_workers)
    if device.type == "cpu":
        torch.set_num_threads(compute_threads)
    batch_size = section.batch_size
    pin = device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        CoreDataset([path for _, path in cores], settings),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=2 if workers else None,  # 2 decoded cores per worker in shared memory
        worker_init_fn=_worker_init if workers else None,
    )
    log.info(
        "%d core(s) of %d patient(s) on %s: batch %d, %d loader worker(s), %d compute thread(s), %s",
        len(cores),
        len(todo),
        device,
        batch_size,
        workers,
        compute_threads,
        "bf16 autocast" if device.type == "cuda" else "fp32",
    )
    batches = iter(loader)  # workers start decoding while the model moves to the device
    runner = TileEncoder(
        encoder,
        device,
        batch_size,
        section.compile,
        section.channels_last,
    )
    started = time.perf_counter()
    bar = tqdm(
        total=len(cores), unit="core", desc=f"extract {encoder.name}", disable=not progress, mininterval=2
    )
    buffer: list[tuple[int, torch.Tensor]] = []
    buffered = 0
    pending: tuple[torch.Tensor, torch.cuda.Event | None, list[tuple[int, int]]] | None = None
    encoded = 0
    wait = 0.0

    def finish_core(i: int) -> None:
        state = states[i]
        bar.update(1)
        p = state.patient
        remaining[p] -= 1
        if remaining[p] == 0:
            mine = states[first_core[p] : first_core[p] + len(todo[p].cores)]
            _finish_patient(todo[p], mine, encoder, settings, policy, expected_base, rows, counts, failures)
            for s in mine:
                s.feats = []  # free the rows once written

    def collect(host: torch.Tensor, done: torch.cuda.Event | None, segments: list[tuple[int, int]]) -> None:
        if done is not None:
            done.synchronize()  # this batch's copy to the host, queued before the next batch's compute
        array = host.numpy()
        row = 0
        for i, n in segments:
            states[i].feats.append(array[row : row + n])
            states[i].got += n
            row += n
            if states[i].got == states[i].n:
                finish_core(i)

    def launch(n: int) -> None:
        nonlocal buffered, pending, encoded
        pieces, segments, take = [], [], n
        while take:
            i, tiles = buffer[0]
            k = min(take, tiles.shape[0])
            pieces.append(tiles[:k])
            segments.append((i, k))
            if k == tiles.shape[0]:
                buffer.pop(0)
            else:
                buffer[0] = (i, tiles[k:])
            take -= k
        buffered -= n
        out = runner(torch.cat(pieces) if len(pieces) > 1 else pieces[0])
        done = None
        if device.type == "cuda":  # queue the copy now, wait for it only after the next batch is queued
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        else:
            host = out
        encoded += n
        if pending is not None:
            collect(*pending)
        pending = (host, done, segments)
        elapsed = time.perf_counter() - started
        bar.set_postfix_str(f"{encoded / max(elapsed, 1e-9):.0f} tiles/s", refresh=False)

    while True:
        t0 = time.perf_counter()
        try:
            item = next(batches)
        except StopIteration:
            break
        wait += time.perf_counter() - t0
        i = int(item["i"])
        state = states[i]
        state.n = int(item["tiles"].shape[0])
        state.coords = item["coords"].numpy().astype(np.int32, copy=True)
        state.status, state.mode, state.error = item["status"], item["mode"], item["error"]
        state.core_shape = tuple(int(v) for v in item["core_shape"])
        if state.status != STATUS_FAILED:
            core_shapes.append(state.core_shape)
        if state.mode not in ("", "rgb"):
            counts[f"cores_converted_from_{state.mode}"] += 1
        if state.n == 0:
            finish_core(i)
            continue
        buffer.append((i, item["tiles"].to(device, non_blocking=pin)))
        buffered += state.n
        while buffered >= batch_size:
            launch(batch_size)
    if buffered:
        launch(buffered)
    if pending is not None:
        collect(*pending)
    bar.close()
    elapsed = time.perf_counter() - started
    log.info(
        "encoded %d tiles in %.1f s (%.1f tiles/s; main process waited %.1f s for decoded cores)",
        encoded,
        elapsed,
        encoded / max(elapsed, 1e-9),
        wait,
    )
    return encoded


def _finish_patient(
    patient: PatientCores,
    states: list[_CoreState],
    encoder: LoadedEncoder,
    settings: TilingSettings,
    policy: str,
    expected_base: dict[str, Any],
    rows: dict[str, dict[str, Any]],
    counts: Counter,
    failures: list[tuple[str, str]],
) -> None:
    """Write one patient's bag (or record its failure) once all its cores are encoded."""
    pid = patient.patient_id
    failed = [s for s in states if s.status == STATUS_FAILED]
    for raw, s in zip(patient.raw, states, strict=True):
        counts[f"cores_{s.status}"] += 1
        if s.status in (STATUS_NO_TISSUE, STATUS_TOO_SMALL):
            log.info("patient %s: core %s has no tiles (%s)", pid, raw, s.status)
    for s in failed:
        log.error("patient %s: unreadable core: %s", pid, s.error)
    if failed and policy == "fail":
        failures.extend((pid, s.error) for s in failed)
        counts["patients_not_written_unreadable_core"] += 1
        return
    dim = encoder.spec.dim
    feats = [f for s in states for f in s.feats]
    features = np.concatenate(feats, axis=0) if feats else np.zeros((0, dim), dtype=np.float32)
    coords = np.concatenate([s.coords for s in states if s.n > 0] or [np.zeros((0, 2), np.int32)], axis=0)
    n_tiles = int(features.shape[0])
    n_empty = sum(s.status in (STATUS_NO_TISSUE, STATUS_TOO_SMALL) for s in states)
    if n_tiles:
        status = "ok"
    else:
        status = "failed" if len(failed) == len(states) else "empty"
        log.warning(
            "patient %s: no tile from any of its %d core(s) (%d without tissue or too small, %d unreadable): status %s",
            pid,
            len(states),
            n_empty,
            len(failed),
            status,
        )
    attrs = dict(
        expected_base,
        sources_digest=patient.sources_digest,
        core_mpp=float(settings.core_mpp),
        tile_px_core=float(settings.tile_px_core),
        n_cores=len(states),
        n_tiles=n_tiles,
        n_empty_cores=int(n_empty),
        n_failed_cores=len(failed),
        status=status,
        core_files=np.array(patient.raw, dtype=object),
        core_tiles=np.array([max(s.n, 0) for s in states], dtype=np.int64),
        core_status=np.array([s.status for s in states], dtype=object),
        coords_convention="x, y of the tile's top-left corner in pixels of the original core image",
    )
    coords_attrs = trident_coords_attrs(settings.tile_px, settings.tile_mpp, settings.core_mpp)
    _write(patient.h5_path, features.astype(np.float32, copy=False), coords, attrs, coords_attrs)
    rows[pid] = index_row(patient, attrs)
    counts[f"patients_{status}"] += 1


def _write(
    path: Path,
    features: np.ndarray,
    coords: np.ndarray,
    attrs: dict[str, Any],
    coords_attrs: dict[str, Any] | None = None,
) -> None:
    """h5 string-array attributes need an explicit variable-length string type."""
    converted = {}
    for key, value in attrs.items():
        if isinstance(value, np.ndarray) and value.dtype == object:
            converted[key] = np.array([str(v) for v in value], dtype=h5py.string_dtype())
        else:
            converted[key] = value
    write_bag(path, features, coords, converted, coords_attrs)


__all__ = [
    "STATUS_OK",
    "CoreDataset",
    "PatientCores",
    "TileEncoder",
    "extract_tma_features",
    "plan_workers",
    "read_manifest_cores",
    "resume_mismatch",
    "sources_digest",
]
