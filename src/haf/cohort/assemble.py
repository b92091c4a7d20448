"""Assemble one fold's :class:`haf.artifacts.fold_inputs.FoldInputs` from the cohort tables, the fold's
tabular matrices and the fold's Stage 1 embeddings.

``present[wsi]``/``present[tma]`` = the patient has a Stage 1 embedding in that fold (an empty bag
gives none); tabular presence comes from the tabular npz. Patients left with no modality at all are
excluded and counted (FoldInputs refuses them).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from haf.artifacts.embeddings import read_embeddings
from haf.artifacts.fold_inputs import FoldInputs
from haf.artifacts.predictions import PARTS
from haf.artifacts.tabular import read_tabular_npz
from haf.errors import HafInputError
from haf.modalities import MODALITIES, PATHOLOGY, TABULAR

log = logging.getLogger(__name__)


def assemble_fold_inputs(
    fold: int,
    targets: pd.DataFrame,
    folds: pd.DataFrame,
    tabular_path: str | Path,
    embedding_paths: dict[str, str | Path],
    manifest: pd.DataFrame | None = None,
) -> tuple[FoldInputs, dict[str, Any]]:
    """Build and validate the fold's inputs; returns them with the counts (logged).

    ``folds`` is the whole folds table (this fold's rows are used); ``embedding_paths`` maps ``wsi``
    and ``tma`` to that fold's Stage 1 ``embeddings.npz`` (a pathology modality left out is absent for
    every patient: no method of the run needs it, or the cohort has none). An embedding for a patient outside the fold,
    or with a part that disagrees with ``folds.tsv``, is an error naming the file and the patient.
    """
    rows = folds[folds["fold"] == fold].sort_values("patient_id", kind="stable")
    if rows.empty:
        raise HafInputError(None, f"fold {fold} has no patient in folds.tsv", field="fold")
    ids = rows["patient_id"].to_numpy().astype(str)
    part = rows["part"].to_numpy().astype(str)
    index = {pid: i for i, pid in enumerate(ids)}
    tgt = targets.set_index("patient_id")
    not_in_targets = [pid for pid in ids if pid not in tgt.index]
    if not_in_targets:
        raise HafInputError(
            None, f"patient {not_in_targets[0]} is in folds.tsv but not in targets.tsv", field="patient_id"
        )
    n = len(ids)
    present = np.zeros((n, len(MODALITIES)), dtype=bool)
    features: dict[str, np.ndarray] = {}
    columns: dict[str, list[str]] = {}
    counts: dict[str, Any] = {"fold": fold, "fold_patients": n}

    tab = read_tabular_npz(tabular_path)
    tab_ids = tab["patient_id"].astype(str)
    if sorted(tab_ids.tolist()) != ids.tolist():
        raise HafInputError(
            tabular_path, f"patients differ from fold {fold} of folds.tsv", field="patient_id"
        )
    order = np.array([np.flatnonzero(tab_ids == pid)[0] for pid in ids]) if n else np.zeros(0, dtype=int)
    if "part" in tab and not (tab["part"].astype(str)[order] == part).all():
        raise HafInputError(tabular_path, f"parts differ from fold {fold} of folds.tsv", field="part")
    for m in TABULAR:
        j = MODALITIES.index(m)
        present[:, j] = tab[f"present_{m}"][order].astype(bool)
        features[m] = tab[f"x_{m}"][order].astype(np.float32)
        columns[m] = tab[f"columns_{m}"].astype(str).tolist()

    for m in PATHOLOGY:
        path = embedding_paths.get(m)
        if path is None:  # no method of the run uses it, or the cohort has none: absent for everyone
            features[m] = np.zeros((n, 0), dtype=np.float32)
            columns[m] = []
            counts[f"{m}_embeddings"] = 0
            log.info(
                "%s: no Stage 1 embeddings in this run (not needed or not in the cohort): absent for every patient",
                m,
            )
            continue
        emb = read_embeddings(path)
        e_ids, e_part, z = emb.patient_id, emb.part, emb.z
        x = np.zeros((n, z.shape[1]), dtype=np.float32)
        for pid, p, row in zip(e_ids, e_part, z, strict=True):
            if pid not in index:
                raise HafInputError(
                    path, f"embedding of patient {pid}, who is not in fold {fold}", field="patient_id"
                )
            i = index[pid]
            if part[i] != p:
                raise HafInputError(
                    path, f"part {p!r} but folds.tsv has {part[i]!r}", where=f"patient {pid}", field="part"
                )
            x[i] = row
            present[i, MODALITIES.index(m)] = True
        features[m] = x
        columns[m] = [f"{m}_z{k}" for k in range(z.shape[1])]
        counts[f"{m}_embeddings"] = len(e_ids)
        if manifest is not None:
            has = set(manifest.loc[manifest[f"has_{m}"] == 1, "patient_id"])
            without = sorted(has.intersection(ids) - set(e_ids))
            unexpected = sorted(set(e_ids) - has)
            counts[f"{m}_available_without_embedding"] = len(without)
            if without:
                log.warning(
                    "%d patients have %s data in the manifest but no Stage 1 embedding (empty bag?): %s",
                    len(without),
                    m,
                    ", ".join(without[:20]),
                )
            if unexpected:
                log.warning(
                    "%d %s embeddings of patients the manifest lists without %s", len(unexpected), m, m
                )

    keep = present.any(axis=1)
    excluded = ids[~keep].tolist()
    counts["excluded_no_modality"] = len(excluded)
    if excluded:
        log.warning(
            "%d patients excluded from fold %d: no modality left (%s)",
            len(excluded),
            fold,
            ", ".join(excluded[:20]),
        )
    ids, part, present = ids[keep], part[keep], present[keep]
    for m in MODALITIES:
        features[m] = features[m][keep]
    label = tgt.loc[ids, "label"].to_numpy(dtype=float)
    inputs = FoldInputs(
        fold=fold,
        patient_id=ids.astype(object),
        part=part.astype(object),
        label=label,
        time=tgt.loc[ids, "time"].to_numpy(dtype=float),
        event=tgt.loc[ids, "event"].to_numpy(dtype=np.int64),
        present=present,
        features=features,
        columns=columns,
    ).validate(source=f"fold {fold} inputs")
    counts["n_patients"] = inputs.n
    counts["per_part"] = {p: int((part == p).sum()) for p in PARTS}
    counts["present"] = {m: int(present[:, j].sum()) for j, m in enumerate(MODALITIES)}
    counts["labelled"] = int(np.isfinite(label).sum())
    log.info(
        "fold %d inputs: %d patients (%s); present per modality: %s; %d with a binary label",
        fold,
        inputs.n,
        ", ".join(f"{p} {v}" for p, v in counts["per_part"].items()),
        ", ".join(f"{m} {v}" for m, v in counts["present"].items()),
        counts["labelled"],
    )
    return inputs, counts
