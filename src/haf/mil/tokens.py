"""Instance tokens of the token-level comparators: a fixed, seeded subsample of each patient's bag.

The token-level comparators (``attention_fusion`` / ``mfmf`` with ``tokens: instance``) attend over
the instances (patches) of the WSI/TMA bags instead of one Stage 1 vector per modality.  The bags
hold frozen UNI patch features, so a patient's tokens do not change during training: they are taken
once per job, as at most ``cap`` instances per pathology modality and patient.

**The subsample** (:func:`subsample_rows`): a bag of ``n <= cap`` instances keeps all of them, in file
order; a larger bag keeps ``cap`` instances drawn uniformly without replacement, sorted back into file
order, with a NumPy generator seeded by ``SeedSequence([seed, crc32("{modality}:{patient_id}")])``.
The draw depends on nothing else (not the fold, its parts, the other patients or their order), so a
patient has the same tokens in every fold and part: the subsample cannot carry information about
which patients are trained on (no leakage), and it is the same at training and at test time.
``seed`` is the declaration's ``instance_seed``.

:class:`InstanceTokens` holds the result for a whole cohort: per pathology modality a padded
``(P, N, D)`` float32 array (zeros at padding) and a ``(P, N)`` bool mask (True = a real instance,
packed first), ``N`` = the largest kept bag (at most ``cap``).  The runtime
(:class:`haf.runtime.tensors.FoldTensors`) indexes it by patient like any other input.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from haf.errors import HafInputError
from haf.modalities import MODALITIES, PATHOLOGY

log = logging.getLogger(__name__)


def subsample_rows(patient_id: str, modality: str, n: int, cap: int, seed: int) -> np.ndarray:
    """Rows of a bag of ``n`` instances kept as tokens (see the module docstring): sorted, at most ``cap``."""
    if cap < 1:
        raise ValueError(f"instance token cap must be >= 1, got {cap}")
    if n <= cap:
        return np.arange(n)
    key = zlib.crc32(f"{modality}:{patient_id}".encode())
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(key)]))
    return np.sort(rng.choice(n, size=cap, replace=False))


@dataclass
class InstanceTokens:
    """Every patient's instance tokens per pathology modality (module docstring)."""

    patient_id: np.ndarray  # (P,) str
    x: dict[str, np.ndarray]  # modality -> (P, N_m, D_m) float32, zeros at padding
    mask: dict[str, np.ndarray]  # modality -> (P, N_m) bool, real instances first
    cap: int
    seed: int
    bag_sizes: dict[str, np.ndarray] = field(
        default_factory=dict
    )  # modality -> (P,) full bag sizes (0: none)

    @property
    def modalities(self) -> list[str]:
        return [m for m in PATHOLOGY if m in self.x]

    def dims(self) -> dict[str, int]:
        """Token width per pathology modality."""
        return {m: int(self.x[m].shape[-1]) for m in self.modalities}

    def rows_of(self, patient_ids: Sequence[str]) -> np.ndarray:
        """(n,) row of each patient in this table; -1 for a patient without tokens."""
        where = {str(p): i for i, p in enumerate(self.patient_id)}
        return np.array([where.get(str(p), -1) for p in patient_ids], dtype=np.int64)

    def check(self, patient_ids: Sequence[str], present: np.ndarray, modalities: Sequence[str]) -> None:
        """Fold inputs and tokens agree: a patient marked as having WSI/TMA has at least one instance token.

        A patient with a bag whom the fold inputs mark absent is ignored (the presence mask decides) and
        counted in the log.
        """
        rows = self.rows_of(patient_ids)
        for m in modalities:
            if m not in PATHOLOGY:
                continue
            j = MODALITIES.index(m)
            if m in self.x:
                has = np.where(rows >= 0, self.mask[m][np.maximum(rows, 0)].any(axis=1), False)
            else:
                has = np.zeros(len(rows), dtype=bool)
            lacking = present[:, j] & ~has
            if lacking.any():
                pid = patient_ids[int(np.flatnonzero(lacking)[0])]
                raise HafInputError(
                    f"{m} bags",
                    f"patient {pid} has {m} in the fold inputs but no {m} instance tokens ({int(lacking.sum())} "
                    f"such patients): the bags and Stage 1 disagree",
                    field=m,
                )
            extra = int((~present[:, j] & has).sum())
            if extra:
                log.info("%s: %d patients have %s instances but no %s in the fold inputs: tokens unused",
                         m, extra, m, m)  # fmt: skip


def instance_tokens_from_stores(
    stores: Mapping[str, Any], patient_ids: Sequence[str], cap: int, seed: int
) -> InstanceTokens:
    """The tokens of these patients from their bag stores (:class:`haf.mil.bags.BagStore` per modality).

    Each bag is read once (one full bag in memory at a time) and subsampled with :func:`subsample_rows`.
    """
    pids = [str(p) for p in patient_ids]
    x, mask, sizes = {}, {}, {}
    for m in PATHOLOGY:
        if m not in stores:
            continue
        store = stores[m]
        n = np.array([store.n_instances(p) for p in pids], dtype=np.int64)
        kept = np.minimum(n, cap)
        width = max(1, int(kept.max()) if len(kept) else 1)
        arr = np.zeros((len(pids), width, store.dim), dtype=np.float32)
        valid = np.zeros((len(pids), width), dtype=bool)
        for i, pid in enumerate(pids):
            if n[i] == 0:
                continue
            bag = store.read(pid)
            rows = subsample_rows(pid, m, len(bag), cap, seed)
            arr[i, : len(rows)] = bag[rows]
            valid[i, : len(rows)] = True
        x[m], mask[m], sizes[m] = arr, valid, n
        with_bag = n > 0
        log.info(
            "%s instance tokens: %d of %d patients with a bag, cap %d (seed %d): %d bags subsampled "
            "(instances %d -> %d), token table %s",
            m, int(with_bag.sum()), len(pids), cap, seed, int((n > cap).sum()), int(n.sum()), int(kept.sum()),
            arr.shape,
        )  # fmt: skip
    return InstanceTokens(np.array(pids, dtype=object), x, mask, int(cap), int(seed), sizes)


def open_instance_tokens(
    paths: Mapping[str, Any],
    patient_ids: Sequence[str],
    modalities: Sequence[str],
    *,
    cap: int,
    seed: int,
    wsi_dim: int = 1024,
    max_abs: float | None = None,
) -> InstanceTokens:
    """The instance tokens of a token method's pathology modalities, from the run's bag sources.

    ``paths``: ``manifest`` (WSI bags), ``tma_index`` (TMA bags; None when the run has no TMA) and
    ``available`` (the pathology modalities the cohort has; default both), as the no-detach rule
    passes them (:func:`haf.fusion.joint.open_bag_stores`); the bags are read, not cached.
    """
    from haf.mil.bags import BagStore

    stores = {}
    for m in PATHOLOGY:
        if m not in modalities or m not in paths.get("available", PATHOLOGY):
            continue
        if m == "tma" and paths.get("tma_index") is None:
            continue
        stores[m] = BagStore.for_pathology_model(
            m,
            manifest=Path(paths["manifest"]),
            tma_index=paths.get("tma_index"),
            wsi_dim=wsi_dim,
            max_abs=max_abs,
        )
    return instance_tokens_from_stores(stores, patient_ids, cap, seed)
