"""The geometry of the Stage 2 embeddings before and after alignment: one place for every number.

The claims table's row (e) (:mod:`haf.eval.claims`), Fig. 3's caption (rule ``fig_tsne``) and
``bench/bench_alignment_grid.py`` all call these functions, so the numbers they show are the same
numbers (issue 15 item 5):

* within-patient cross-modality cosine: the mean cosine between the modality vectors of one patient
  (a shared space: high), averaged over the part's patients with at least two modalities;
* cross-patient same-modality cosine: the mean cosine between one modality's vectors of different
  patients, averaged over the modalities (modality islands, or a collapse: high);
* sigma_1^2 share: sigma_1^2 / sum_j sigma_j^2 of one patient's matrix of modality vectors (1 = rank 1),
  averaged over patients.

"Centred" versions remove each modality's mean over the part's patients that have it first, so that
every patient's vectors pointing one fixed way (a collapse) does not count as shared geometry; the
claims row's effect uses them. The cross-patient cosine is reported uncentred only: after centring a
modality's vectors sum to zero, so their mean pairwise cosine is about -1/(n-1) by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from haf.artifacts.aligned import Aligned
from haf.modalities import MODALITIES

STAGES: tuple[str, ...] = ("before", "after")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1)
    return x / np.where(norms > 0, norms, 1)[:, None]


def mean_pairwise_cosine(x: np.ndarray) -> float:
    """Mean cosine over the distinct pairs of rows of ``x`` (NaN for fewer than two rows)."""
    if len(x) < 2:
        return float("nan")
    unit = _unit_rows(np.asarray(x, dtype=float))
    gram = unit @ unit.T
    return float(gram[np.triu_indices(len(x), k=1)].mean())


def sigma1_share(x: np.ndarray) -> float:
    """sigma_1^2 / sum_j sigma_j^2 of ``x`` (1 for rank 1; NaN for a zero matrix)."""
    s = np.linalg.svd(np.asarray(x, dtype=float), compute_uv=False)
    total = float(np.sum(s**2))
    return float(s[0] ** 2 / total) if total > 0 else float("nan")


def _stage_embeddings(aligned: Aligned, stage: str) -> Mapping[str, np.ndarray]:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return aligned.pre if stage == "before" else aligned.post


def patient_geometry(aligned: Aligned, part: str = "test") -> pd.DataFrame:
    """Per ``part`` patient with >= 2 modalities: cross-modality cosine and sigma_1^2 share, before/after.

    Columns ``cosine_{before,after}`` and ``share_{before,after}`` on centred embeddings (the mean over
    the part's patients who have the modality removed), ``*_raw``: the same without centring. The share is
    of the (centred) vectors as they are, not re-normalised.
    """
    rows = np.flatnonzero(aligned.part == part)
    present = aligned.present[rows]
    keep = rows[present.sum(axis=1) >= 2]
    out: dict[str, Any] = {"patient_id": aligned.patient_id[keep]}
    for stage in STAGES:
        embeddings = _stage_embeddings(aligned, stage)
        for centred in (True, False):
            cos, share = [], []
            means = {}
            for j, m in enumerate(MODALITIES):
                have = rows[aligned.present[rows, j]]
                means[m] = embeddings[m][have].mean(axis=0) if (centred and len(have)) else 0.0
            for i in keep:
                mods = [m for j, m in enumerate(MODALITIES) if aligned.present[i, j]]
                x = np.vstack([embeddings[m][i] - means[m] for m in mods])
                cos.append(mean_pairwise_cosine(x))
                share.append(sigma1_share(x))
            suffix = "" if centred else "_raw"
            out[f"cosine_{stage}{suffix}"] = cos
            out[f"share_{stage}{suffix}"] = share
    return pd.DataFrame(out)


def same_modality_cosine(aligned: Aligned, part: str = "test", stage: str = "after") -> float:
    """Cross-patient same-modality cosine (uncentred): per modality, the mean cosine between the vectors
    of the ``part`` patients who have it; the mean over modalities with at least two such patients."""
    embeddings = _stage_embeddings(aligned, stage)
    rows = np.flatnonzero(aligned.part == part)
    values = []
    for j, m in enumerate(MODALITIES):
        have = rows[aligned.present[rows, j]]
        if len(have) >= 2:
            values.append(mean_pairwise_cosine(embeddings[m][have]))
    return float(np.mean(values)) if values else float("nan")


GEOMETRY_KEYS: tuple[str, ...] = (
    "cos_within",
    "cos_within_raw",
    "cos_same_mod_raw",
    "share",
    "share_raw",
)
"""The numbers of :func:`geometry_summary`, each with ``_before`` and ``_after``."""


def geometry_summary(aligned: Aligned, part: str = "test") -> dict[str, float]:
    """The part's geometry before and after alignment: the patient means of :func:`patient_geometry`
    (``cos_within``, ``share``: centred; ``*_raw``: uncentred) and :func:`same_modality_cosine`
    (``cos_same_mod_raw``), each ``{key}_{before|after}``, and ``n_patients`` (those with >= 2
    modalities, over which the within-patient numbers are averaged)."""
    g = patient_geometry(aligned, part)
    out: dict[str, float] = {"n_patients": float(len(g))}
    for stage in STAGES:
        for suffix in ("", "_raw"):
            cos = g[f"cosine_{stage}{suffix}"]
            share = g[f"share_{stage}{suffix}"]
            out[f"cos_within{suffix}_{stage}"] = float(cos.mean()) if len(g) else float("nan")
            out[f"share{suffix}_{stage}"] = float(share.mean()) if len(g) else float("nan")
        out[f"cos_same_mod_raw_{stage}"] = same_modality_cosine(aligned, part, stage)
    return out


def geometry_caption(summary: Mapping[str, float], fold: int, part: str = "test") -> str:
    """Fig. 3's caption lines: the numbers of :func:`geometry_summary`, before -> after alignment."""

    def arrow(key: str) -> str:
        return f"{summary[f'{key}_before']:.3f} -> {summary[f'{key}_after']:.3f}"

    return (
        f"Fold {fold}, {part} part, {int(summary['n_patients'])} patients with >= 2 modalities; before -> after "
        f"alignment: within-patient cross-modality cosine {arrow('cos_within_raw')} (centred "
        f"{arrow('cos_within')}),\ncross-patient same-modality cosine {arrow('cos_same_mod_raw')}, "
        f"sigma_1^2 share {arrow('share_raw')} (centred {arrow('share')}; 1 = rank 1). "
        "Same functions as the claims table's row (e)."
    )
