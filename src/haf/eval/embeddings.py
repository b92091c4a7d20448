"""Figures 3 and 4 data: modality embeddings before (``pre_{m}``) and after (``u_{m}``) alignment.

Both come from one fold's ``stage2/ga/fold_{k}/aligned.npz`` (config ``evaluation.tsne_fold``):
each fold trains its own projectors, so embeddings of different folds live in different spaces and
are not pooled.  Only the modalities a patient has are shown (absent rows are placeholders).
"""

from __future__ import annotations

import numpy as np

from haf.artifacts.aligned import Aligned
from haf.errors import HafInputError
from haf.modalities import MODALITIES


def stack(aligned: Aligned, part: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pre, post, modality, patient_id) for every present (patient, modality) pair of ``part``."""
    rows = np.flatnonzero(aligned.part == part)
    if len(rows) == 0:
        raise HafInputError(None, f"aligned embeddings hold no {part} patient")
    pre, post, modality, pid = [], [], [], []
    for j, m in enumerate(MODALITIES):
        sel = rows[aligned.present[rows, j]]
        pre.append(aligned.pre[m][sel])
        post.append(aligned.post[m][sel])
        modality += [m] * len(sel)
        pid += list(aligned.patient_id[sel])
    return np.vstack(pre), np.vstack(post), np.array(modality), np.array(pid)


def tsne_2d(x: np.ndarray, seed: int, exact_max: int = 1000) -> np.ndarray:
    """Two-dimensional t-SNE (scikit-learn, PCA initialisation, fixed seed); perplexity < n / 3.

    Exact gradients up to ``exact_max`` points (one test fold: a few hundred points): no OpenMP,
    which on a shared machine made the Barnes-Hut variant 30x slower, and no approximation.
    """
    from sklearn.manifold import TSNE

    n = len(x)
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {n}")
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    method = "exact" if n <= exact_max else "barnes_hut"
    return TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, method=method
    ).fit_transform(x)


def representative_patient(aligned: Aligned, part: str = "test") -> str:
    """The ``part`` patient with the most modalities; ties: the lowest patient id."""
    rows = np.flatnonzero(aligned.part == part)
    if len(rows) == 0:
        raise HafInputError(None, f"aligned embeddings hold no {part} patient")
    counts = aligned.present[rows].sum(axis=1)
    best = rows[counts == counts.max()]
    return str(sorted(aligned.patient_id[best])[0])


def patient_matrix(aligned: Aligned, patient_id: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(pre, post, modalities): the patient's present modalities x embedding dimensions."""
    idx = np.flatnonzero(aligned.patient_id == patient_id)
    if len(idx) != 1:
        raise HafInputError(None, f"patient {patient_id} appears {len(idx)} times in the aligned embeddings")
    i = int(idx[0])
    mods = [m for j, m in enumerate(MODALITIES) if aligned.present[i, j]]
    return (
        np.vstack([aligned.pre[m][i] for m in mods]),
        np.vstack([aligned.post[m][i] for m in mods]),
        mods,
    )


def mean_pairwise_correlation(matrix: np.ndarray) -> float:
    """Mean Pearson correlation between the rows (modalities) of one patient's matrix."""
    if len(matrix) < 2:
        return float("nan")
    corr = np.corrcoef(matrix)
    return float(corr[np.triu_indices(len(matrix), k=1)].mean())
