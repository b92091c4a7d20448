"""Lazy bag store: which h5 files make each patient's bag, and padded batches for any list of patients.

A :class:`BagStore` holds no features at construction, only the files per patient and their instance
counts (read from the h5 headers, which also checks every width before training starts).  Features are
read per batch with :func:`haf.artifacts.bags.read_bag` (NaN/inf rows, integer features, magnitudes
above ``stage1.max_abs_feature`` and wrong widths are errors naming the file and row), so peak memory is
one batch of bags, not the cohort.  When the whole cohort fits a budget the
store can instead be cached once on the training device (:meth:`BagStore.cache`): float32 on CPU, float16
on CUDA (half the memory; UNI features are O(1), fp16 keeps ~3 significant digits), read bag by bag so
host memory stays one bag even while the cache fills.

Bags per pathology model (:meth:`BagStore.for_pathology_model`):

* ``wsi``: ``cohort/manifest.tsv`` ``wsi_files`` (``;``-joined; a main slide and its ``_a`` slides are
  pooled into one bag), width ``stage1.wsi_dim``;
* ``tma``: ``features/tma/{encoder}/index.tsv`` rows with ``status == ok`` (``h5_path``), width read from
  the h5 (attribute ``feature_dim`` and the data; every file must agree);
* ``wsi_tma``: the WSI and TMA instances of a patient concatenated into one bag (same width required);
  patients with only one of the two keep that one (``require_both=True`` keeps only patients with both).

A patient whose bag has no instance (an empty h5, ``status`` not ``ok``) is treated as missing the
modality; every such case is counted in :attr:`BagStore.counts` and logged.

Batches (:meth:`BagStore.batch` / :meth:`BagStore.batches`) are :class:`BagBatch`: ``x`` (B, N, D)
zero-padded float32 on the requested device (or, with ``packed=True``, (M, D): only the real instances,
in ``mask``'s row-major order, which the model also takes and which never builds the padding), ``mask``
(B, N), ``n`` (B,) instance counts and ``present`` (B,) (False = the patient has no bag: an all-padding
row, so a caller may pass any patient ids).
``max_instances`` subsamples larger bags uniformly without replacement (training only; evaluation
passes ``None`` and sees full bags).

A stacked model (K folds at once) takes :meth:`BagStore.stacked_batch`: one group of patients per
member, member k's bags subsampled with member k's generator (the draws :meth:`BagStore.batch` makes
for that group alone), all members' instances gathered from the cache in one indexing operation.
:meth:`BagStore.bag` is one patient's full bag (a view of the cache when cached).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from haf.artifacts.bags import probe_bag, read_bag, read_pooled_bag
from haf.artifacts.manifest import listed_files, read_manifest, resolve_listed
from haf.artifacts.tma_index import read_tma_index
from haf.errors import HafInputError

log = logging.getLogger(__name__)


@dataclass
class BagBatch:
    """A padded batch of bags (see the module docstring)."""

    patient_id: list[str]
    x: torch.Tensor  # (B, N, D) float32, zero padding; or (M, D) when packed
    mask: torch.Tensor  # (B, N) bool
    n: np.ndarray  # (B,) instances in the batch per bag (after any subsampling)
    present: np.ndarray  # (B,) bool
    packed: bool = False  # True: x is (M, D), the real instances in mask's row-major order

    def __len__(self) -> int:
        return len(self.patient_id)


@dataclass
class StackedBagBatch:
    """One batch per member of a stacked model (:meth:`BagStore.stacked_batch`)."""

    patient_id: list[list[str]]  # member k's patients (empty: member k has no batch)
    x: torch.Tensor  # (M, D) float32: member 0's real instances (row-major in mask[0]), then member 1's...
    mask: torch.Tensor  # (K, B, N) bool; member k's bags in rows :len(patient_id[k])
    n: list[np.ndarray]  # member k's instances per bag (after any subsampling)
    active: torch.Tensor  # (K,) bool: member k has a batch

    def labels(self, label: Sequence[dict[str, float]], device: torch.device | str = "cpu") -> torch.Tensor:
        """(K, B) float labels from member k's ``label[k]`` (patient -> label); NaN on padding."""
        out = np.full(tuple(self.mask.shape[:2]), np.nan, dtype=np.float32)
        for k, pids in enumerate(self.patient_id):
            out[k, : len(pids)] = [label[k][p] for p in pids]
        return torch.from_numpy(out).to(device)


@dataclass(frozen=True)
class BagSource:
    """One patient's bag: the h5 files pooled into it and their instance counts."""

    patient_id: str
    files: tuple[Path, ...]
    counts: tuple[int, ...]
    kinds: tuple[str, ...] = ()  # the modality (wsi | tma) of each file; () = unknown

    @property
    def n(self) -> int:
        return int(sum(self.counts))


def _existing(raw: str, table: Path, row: int, field_name: str) -> Path:
    """A listed path resolved as the manifest's readers do; a missing file names the table row."""
    path = resolve_listed(raw, table)
    if not path.exists():
        raise HafInputError(table, f"file not found: {raw}", where=f"row {row}", field=field_name)
    return path


def wsi_sources(manifest: str | Path) -> tuple[dict[str, list[Path]], Counter]:
    """Patient -> WSI h5 files from the manifest (``wsi_files``, ``;``-joined), widths checked later."""
    manifest = Path(manifest)
    frame = read_manifest(manifest, required=("patient_id", "wsi_files"))
    counts: Counter = Counter()
    files: dict[str, list[Path]] = {}
    for i, rec in enumerate(frame.itertuples(index=False), start=2):  # row 1 = header
        raw = listed_files(rec.wsi_files)
        if not raw:
            counts["no_wsi_files"] += 1
            continue
        files[rec.patient_id] = [_existing(p, manifest, i, "wsi_files") for p in raw]
    return files, counts


def tma_sources(index: str | Path) -> tuple[dict[str, list[Path]], Counter]:
    """Patient -> TMA h5 file from the extraction index (rows with ``status == ok``)."""
    index = Path(index)
    frame = read_tma_index(index)
    counts: Counter = Counter()
    files: dict[str, list[Path]] = {}
    for i, rec in enumerate(frame.itertuples(index=False), start=2):
        if rec.status != "ok":
            counts[f"status_{rec.status or 'blank'}"] += 1
            continue
        files[rec.patient_id] = [_existing(str(rec.h5_path).strip(), index, i, "h5_path")]
    return files, counts


class BagStore:
    """Patients' bags of one pathology model, read lazily per batch (or from a device cache)."""

    def __init__(
        self,
        sources: dict[str, BagSource],
        dim: int,
        name: str,
        counts: Counter | None = None,
        max_abs: float | None = None,
    ) -> None:
        self.sources = dict(sorted(sources.items()))
        self.max_abs = max_abs  # stage1.max_abs_feature: a larger |feature| is an error naming the file
        self.dim = int(dim)
        self.name = name
        self.counts: Counter = Counter(counts or {})
        self._cache: torch.Tensor | None = None
        self._offset: dict[str, int] = {}

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_files(
        cls,
        files: dict[str, Sequence[str | Path]],
        *,
        name: str,
        dim: int | None = None,
        dim_source: str = "",
        max_abs: float | None = None,
    ) -> BagStore:
        """Probe every file: widths must equal ``dim`` (or agree with each other when ``dim`` is None).

        Empty bags are dropped and counted (``empty_bag``).
        """
        counts: Counter = Counter()
        sources: dict[str, BagSource] = {}
        width = dim
        first: Path | None = None
        for pid, paths in files.items():
            sizes = []
            for path in paths:
                n, d, attrs = probe_bag(path)
                attr_dim = attrs.get("feature_dim")
                if attr_dim is not None and n > 0 and int(attr_dim) != d:
                    raise HafInputError(
                        path,
                        f"attribute feature_dim = {int(attr_dim)} but 'features' are {d}-d",
                        field="feature_dim",
                    )
                if n > 0:
                    if width is None:
                        width, first = d, Path(path)
                    elif d != width:
                        expected = f"{dim_source} = {width}" if dim is not None else f"{width}-d like {first}"
                        raise HafInputError(
                            path,
                            f"'features' are {d}-d but {name} bags must be {expected} "
                            "(made with another encoder?)",
                            field="features",
                        )
                sizes.append(n)
            if sum(sizes) == 0:
                counts["empty_bag"] += 1
                continue
            sources[pid] = BagSource(pid, tuple(Path(p) for p in paths), tuple(sizes), (name,) * len(paths))
        return cls(sources, width or 0, name, counts, max_abs)

    @classmethod
    def for_pathology_model(
        cls,
        pmod: str,
        *,
        manifest: str | Path | None = None,
        tma_index: str | Path | None = None,
        wsi_dim: int = 1024,
        require_both: bool = False,
        max_abs: float | None = None,
    ) -> BagStore:
        """The bags of ``wsi``, ``tma`` or ``wsi_tma`` (see the module docstring); counts logged."""
        if pmod not in ("wsi", "tma", "wsi_tma"):
            raise ValueError(f"pathology model must be wsi, tma or wsi_tma, got {pmod!r}")
        stores: dict[str, BagStore] = {}
        if pmod in ("wsi", "wsi_tma"):
            if manifest is None:
                raise ValueError(f"{pmod} needs the manifest")
            files, counts = wsi_sources(manifest)
            stores["wsi"] = cls.from_files(
                files, name="wsi", dim=wsi_dim, dim_source="stage1.wsi_dim", max_abs=max_abs
            )
            stores["wsi"].counts.update(counts)
        if pmod in ("tma", "wsi_tma"):
            if tma_index is None:
                raise ValueError(f"{pmod} needs the TMA index")
            files, counts = tma_sources(tma_index)
            stores["tma"] = cls.from_files(files, name="tma", max_abs=max_abs)
            stores["tma"].counts.update(counts)
        if pmod != "wsi_tma":
            store = stores[pmod]
        else:
            wsi, tma = stores["wsi"], stores["tma"]
            if tma.sources and wsi.sources and tma.dim != wsi.dim:
                raise HafInputError(
                    tma_index,
                    f"wsi_tma pools WSI and TMA instances into one bag, so they need one width: WSI bags are "
                    f"{wsi.dim}-d (stage1.wsi_dim) but TMA bags are {tma.dim}-d (extract.encoder); "
                    "use the same encoder for both or drop wsi_tma_clam from run_methods",
                    field="features",
                )
            counts = Counter({f"wsi_{k}": v for k, v in wsi.counts.items()})
            counts.update({f"tma_{k}": v for k, v in tma.counts.items()})
            sources = {}
            for pid in sorted(set(wsi.sources) | set(tma.sources)):
                parts = [s.sources[pid] for s in (wsi, tma) if pid in s.sources]
                if len(parts) == 2:
                    counts["both"] += 1
                else:
                    counts[f"only_{'wsi' if pid in wsi.sources else 'tma'}"] += 1
                    if require_both:
                        counts["dropped_not_both"] += 1
                        continue
                sources[pid] = BagSource(
                    pid,
                    tuple(f for p in parts for f in p.files),
                    tuple(c for p in parts for c in p.counts),
                    tuple(k for p in parts for k in p.kinds),
                )
            store = cls(sources, wsi.dim or tma.dim, "wsi_tma", counts, max_abs)
        store.log_summary()
        return store

    def log_summary(self) -> None:
        sizes = np.array([s.n for s in self.sources.values()]) if self.sources else np.zeros(1, int)
        log.info(
            "%s bags: %d patients with a non-empty bag, %d-d, instances per bag min %d / median %d / max %d; "
            "counts (exclusions: empty_bag, no_wsi_files, status_*; pooling: both, only_*): %s",
            self.name,
            len(self.sources),
            self.dim,
            sizes.min(),
            int(np.median(sizes)),
            sizes.max(),
            dict(sorted(self.counts.items())) or "none",
        )

    # ---- queries ------------------------------------------------------------------------------
    @property
    def patient_ids(self) -> list[str]:
        return list(self.sources)

    def has(self, patient_id: str) -> bool:
        return patient_id in self.sources

    def n_instances(self, patient_id: str) -> int:
        source = self.sources.get(patient_id)
        return 0 if source is None else source.n

    def nbytes(self, dtype: torch.dtype = torch.float32) -> int:
        """Size of the whole cohort's features at ``dtype``."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return sum(s.n for s in self.sources.values()) * self.dim * itemsize

    def read(self, patient_id: str) -> np.ndarray:
        """One patient's full bag (float32, checked: width, NaN/inf rows name the file)."""
        source = self.sources[patient_id]
        if len(source.files) == 1:  # the common case: no concatenation copy
            return read_bag(source.files[0], self.dim, self.max_abs)[0]
        return read_pooled_bag(source.files, self.dim, self.max_abs)

    def bag(self, patient_id: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """One patient's full bag (n, D) float32 on ``device``: a view of the cache when cached (no copy
        on CPU), else read from its h5 files."""
        if self._cache is not None:
            offset = self._offset[patient_id]
            rows = self._cache[offset : offset + self.sources[patient_id].n]
            return rows.to(device=device, dtype=torch.float32)
        return torch.from_numpy(self.read(patient_id)).to(device)

    # ---- device cache -------------------------------------------------------------------------
    @property
    def cached(self) -> bool:
        return self._cache is not None

    def cache(self, device: torch.device, budget_bytes: float) -> bool:
        """Hold every bag on ``device`` (CUDA: float16) when it fits ``budget_bytes``; True if cached."""
        device = torch.device(device)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        need = self.nbytes(dtype)
        if need > budget_bytes or not self.sources:
            log.info(
                "%s: bags read lazily per batch (cohort %.2f GB > cache budget %.2f GB)",
                self.name,
                need / 1e9,
                budget_bytes / 1e9,
            )
            return False
        flat = torch.empty((sum(s.n for s in self.sources.values()), self.dim), dtype=dtype, device=device)
        offset = 0
        for pid, source in self.sources.items():
            bag = torch.from_numpy(self.read(pid))
            if len(bag) != source.n:
                raise HafInputError(source.files[0], f"bag has {len(bag)} rows, the header said {source.n}")
            chunk = bag.to(device=device, dtype=dtype)
            if dtype == torch.float16 and not bool(torch.isfinite(chunk).all()):
                raise HafInputError(
                    source.files[0],
                    f"patient {pid}: features exceed the float16 range of the GPU cache; "
                    "set stage1.cache_gb_gpu: 0 to read float32 bags per batch",
                    field="features",
                )
            flat[offset : offset + source.n] = chunk
            self._offset[pid] = offset
            offset += source.n
        self._cache = flat
        log.info(
            "%s: %d bags cached on %s (%s, %.2f GB)", self.name, len(self.sources), device, dtype, need / 1e9
        )
        return True

    # ---- batches ------------------------------------------------------------------------------
    def _rows(self, n: int, max_instances: int | None, rng: np.random.Generator | None) -> np.ndarray | None:
        """Rows to keep of a bag of ``n``: None = all; a sorted uniform subsample above the cap."""
        if max_instances is None or n <= max_instances:
            return None
        if rng is None:
            raise ValueError("subsampling a bag above max_instances needs an rng")
        return np.sort(rng.choice(n, size=max_instances, replace=False))

    def _instance_rows(
        self, pids: Sequence[str], max_instances: int | None, rng: np.random.Generator | None
    ) -> list[tuple[int, np.ndarray | None]]:
        """(instances, kept rows or None = all) per patient, subsampling in ``pids`` order with ``rng``."""
        rows = []
        for pid in pids:
            n = self.n_instances(pid)
            rows.append((n, self._rows(n, max_instances, rng) if n else None))
        return rows

    def _features(
        self, pids: Sequence[str], rows: Sequence[tuple[int, np.ndarray | None]], device: torch.device
    ) -> torch.Tensor:
        """The kept instances of these patients, packed (M, D) float32 on ``device``, in ``pids`` order."""
        sizes = [n if keep is None else len(keep) for n, keep in rows]
        starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        if self._cache is not None:
            flat = np.empty(int(starts[-1]), dtype=np.int64)
            for i, (pid, (n, keep)) in enumerate(zip(pids, rows, strict=True)):
                if n:
                    flat[starts[i] : starts[i + 1]] = self._offset[pid] + (
                        np.arange(n) if keep is None else keep
                    )
            return self._cache[torch.from_numpy(flat).to(self._cache.device)].to(
                device=device, dtype=torch.float32
            )
        array = np.empty((int(starts[-1]), self.dim), dtype=np.float32)
        for i, (pid, (n, keep)) in enumerate(zip(pids, rows, strict=True)):
            if n:
                bag = self.read(pid)  # one full bag at a time: peak = one bag + the batch
                array[starts[i] : starts[i + 1]] = bag if keep is None else bag[keep]
        return torch.from_numpy(array).to(device)

    def batch(
        self,
        patient_ids: Sequence[str],
        *,
        max_instances: int | None = None,
        rng: np.random.Generator | None = None,
        device: torch.device | str = "cpu",
        packed: bool = False,
    ) -> BagBatch:
        """A batch of these patients (any ids: one without a bag is an all-padding row).

        ``packed=False``: ``x`` (B, N, D) zero-padded.  ``packed=True``: ``x`` (M, D), the real instances
        only, in ``mask``'s row-major order (the model takes either; packed never builds the padding).
        """
        device = torch.device(device)
        pids = list(patient_ids)
        rows = self._instance_rows(pids, max_instances, rng)
        sizes = np.array([n if keep is None else len(keep) for n, keep in rows], dtype=np.int64)
        width = max(1, int(sizes.max()) if len(sizes) else 1)
        mask = torch.from_numpy(np.arange(width)[None, :] < sizes[:, None])
        x = self._features(pids, rows, device)
        mask = mask.to(device)
        if not packed:
            padded = x.new_zeros(len(pids), width, self.dim)
            padded[mask] = x
            x = padded
        return BagBatch(
            patient_id=pids,
            x=x,
            mask=mask,
            n=sizes,
            present=np.array([n > 0 for n, _ in rows], bool),
            packed=packed,
        )

    def stacked_batch(
        self,
        groups: Sequence[Sequence[str]],
        *,
        max_instances: int | None = None,
        rngs: Sequence[np.random.Generator | None] | None = None,
        device: torch.device | str = "cpu",
    ) -> StackedBagBatch:
        """One batch per member of a stacked model (``groups[k]``: member k's patients, may be empty).

        Member k's bags above ``max_instances`` are subsampled with ``rngs[k]``, exactly the draws
        :meth:`batch` makes for that group alone.  ``x`` is packed (M, D): member 0's real instances
        in ``mask[0]``'s row-major order, then member 1's, ... (one gather from the cache for all
        members); ``mask`` (K, B, N) with member k's bags in rows ``:len(groups[k])``.
        """
        device = torch.device(device)
        groups = [list(g) for g in groups]
        rngs = list(rngs) if rngs is not None else [None] * len(groups)
        rows = [self._instance_rows(g, max_instances, rng) for g, rng in zip(groups, rngs, strict=True)]
        sizes = [np.array([n if keep is None else len(keep) for n, keep in r], dtype=np.int64) for r in rows]
        width = max([1] + [int(s.max()) for s in sizes if len(s)])
        depth = max([0] + [len(g) for g in groups])
        mask = np.zeros((len(groups), depth, width), dtype=bool)
        for k, s in enumerate(sizes):
            mask[k, : len(s)] = np.arange(width)[None, :] < s[:, None]
        pids = [p for g in groups for p in g]
        x = self._features(pids, [r for member in rows for r in member], device)
        return StackedBagBatch(
            patient_id=groups,
            x=x,
            mask=torch.from_numpy(mask).to(device),
            n=sizes,
            active=torch.tensor([len(g) > 0 for g in groups], dtype=torch.bool),
        )

    def plan(
        self,
        patient_ids: Sequence[str],
        *,
        batch_bags: int,
        shuffle: bool,
        rng: np.random.Generator | None = None,
        max_instances: int | None = None,
        instance_budget: int | None = None,
        bucket: int = 8,
    ) -> list[list[str]]:
        """Group patients (with a bag) into batches.

        Training (``shuffle``): a random order, cut into windows of ``bucket * batch_bags`` bags that are
        sorted by size before cutting into batches of ``batch_bags`` (less padding), batch order shuffled.
        Evaluation: sorted by size, batches filled while ``B * N_max <= instance_budget`` (at least one bag
        each, at most ``batch_bags`` if no budget) so full bags never blow memory.
        """
        pids = [p for p in patient_ids if p in self.sources]
        size = {p: min(self.sources[p].n, max_instances or math.inf) for p in pids}
        if shuffle:
            if rng is None:
                raise ValueError("a shuffled plan needs an rng")
            order = [pids[i] for i in rng.permutation(len(pids))]
            window = max(1, bucket) * batch_bags
            batches = []
            for start in range(0, len(order), window):
                chunk = sorted(order[start : start + window], key=lambda p: size[p])
                batches += [chunk[i : i + batch_bags] for i in range(0, len(chunk), batch_bags)]
            return [batches[i] for i in rng.permutation(len(batches))]
        order = sorted(pids, key=lambda p: (size[p], p))
        batches, current = [], []
        for pid in order:
            too_many = instance_budget is None and len(current) >= batch_bags
            over = instance_budget is not None and (len(current) + 1) * size[pid] > instance_budget
            if current and (too_many or over):
                batches.append(current)
                current = []
            current.append(pid)
        if current:
            batches.append(current)
        return batches

    def batches(
        self,
        patient_ids: Sequence[str],
        *,
        batch_bags: int,
        shuffle: bool,
        rng: np.random.Generator | None = None,
        max_instances: int | None = None,
        instance_budget: int | None = None,
        device: torch.device | str = "cpu",
        packed: bool = False,
    ) -> Iterator[BagBatch]:
        """:meth:`plan` then :meth:`batch` per group (patients without a bag are skipped)."""
        for group in self.plan(
            patient_ids,
            batch_bags=batch_bags,
            shuffle=shuffle,
            rng=rng,
            max_instances=max_instances,
            instance_budget=instance_budget,
        ):
            yield self.batch(group, max_instances=max_instances, rng=rng, device=device, packed=packed)


@dataclass
class CapReport:
    """How many bags of a set exceed the training cap (logged once per training run)."""

    cap: int | None
    n_bags: int
    n_capped: int
    instances_before: int
    instances_after: int

    @classmethod
    def of(cls, store: BagStore, patient_ids: Sequence[str], cap: int | None) -> CapReport:
        sizes = np.array([store.n_instances(p) for p in patient_ids if store.has(p)], dtype=np.int64)
        after = sizes if cap is None else np.minimum(sizes, cap)
        return cls(
            cap=cap,
            n_bags=len(sizes),
            n_capped=int((sizes > after).sum()),
            instances_before=int(sizes.sum()),
            instances_after=int(after.sum()),
        )
