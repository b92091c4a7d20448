"""Patient-level folds, written once to ``cohort/folds.tsv`` and read by every method.

``kfold``: stratified K-fold on the binary label, with "no label" (e.g. censored before the horizon)
as its own stratum so that those patients spread evenly too; inside each training part a stratified
validation part of ``val_fraction``. ``official_in``/``official_out``/``oropharynx``: train/test from
HANCOCK's split JSON, the validation part carved from its training part the same way; one fold, 0.

Long format: ``patient_id, fold, part`` with part in ``train|val|test``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from haf.artifacts.predictions import PARTS
from haf.errors import HafInputError
from haf.settings import CVSettings

log = logging.getLogger(__name__)


def strata(label: pd.Series | np.ndarray) -> np.ndarray:
    """Stratum per patient: ``'0'``, ``'1'`` or ``'none'`` (no binary label)."""
    values = np.asarray(label, dtype=float)
    return np.where(np.isnan(values), "none", np.where(values > 0.5, "1", "0"))


def stratified_holdout(
    ids: np.ndarray, stratum: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask of a stratified held-out part: ``round(fraction * n_s)`` per stratum.

    A stratum of at least 2 patients gives at least one to the held-out part and keeps at least one
    (a validation AUC needs both classes when they exist).
    """
    held = np.zeros(len(ids), dtype=bool)
    for s in sorted(set(stratum.tolist())):
        members = np.flatnonzero(stratum == s)
        members = members[np.argsort(ids[members], kind="stable")]  # deterministic before shuffling
        n = len(members)
        k = int(np.floor(fraction * n + 0.5))
        if n >= 2:
            k = min(max(k, 1), n - 1)
        else:
            k = 0
        held[rng.permutation(members)[:k]] = True
    return held


def kfold_folds(targets: pd.DataFrame, k: int, seed: int, val_fraction: float, val_from: str) -> pd.DataFrame:
    """Stratified K-fold with a stratified validation part (seeded, patient level).

    ``val_from="train"``: ``val_fraction`` of each training part (SPEC); ``"heldout"``: the held-out fold
    split 50/50 (stratified) into validation and test, the other K-1 folds all train (the HAF authors' code).
    """
    ids = targets["patient_id"].to_numpy().astype(str)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    stratum = strata(targets["label"].to_numpy()[order])
    counts = pd.Series(stratum).value_counts()
    if counts.max() < k:
        raise HafInputError(
            None,
            f"cv.k = {k} folds but the largest label stratum has only {int(counts.max())} patients; lower cv.k",
            field="cv.k",
        )
    if counts.min() < k:
        log.warning(
            "stratum %r has %d patients, fewer than cv.k = %d folds: some test parts will lack it",
            counts.idxmin(),
            int(counts.min()),
            k,
        )
    from sklearn.model_selection import StratifiedKFold  # imported here: the Snakefile imports this module

    # StratifiedKFold needs the strata as class labels; the split itself is seeded by cv.seed.
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    rows = []
    for fold, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(len(ids)), stratum)):
        rng = np.random.default_rng([seed, fold])
        part = np.empty(len(ids), dtype=object)
        if val_from == "heldout":
            val = stratified_holdout(ids[test_idx], stratum[test_idx], 0.5, rng)
            part[train_idx] = "train"
            part[test_idx[val]] = "val"
            part[test_idx[~val]] = "test"
        elif val_from == "train":
            val = stratified_holdout(ids[train_idx], stratum[train_idx], val_fraction, rng)
            part[test_idx] = "test"
            part[train_idx[val]] = "val"
            part[train_idx[~val]] = "train"
        else:
            raise ValueError(f"cv.val_from must be train or heldout, got {val_from!r}")
        rows.append(pd.DataFrame({"patient_id": ids, "fold": fold, "part": part}))
    return pd.concat(rows, ignore_index=True)


def official_folds(
    targets: pd.DataFrame, split: dict[str, str], seed: int, val_fraction: float, source: str | Path = "split"
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One fold from an official split: its test part, its training part minus a stratified validation part.

    Cohort patients missing from the split file cannot be placed and are left out of the folds;
    split patients outside the cohort are ignored. Both are counted and logged.
    """
    ids = np.sort(targets["patient_id"].to_numpy().astype(str))
    labels = targets.set_index("patient_id").loc[ids, "label"].to_numpy()
    in_split = np.array([pid in split for pid in ids])
    not_in_cohort = sorted(set(split) - set(ids))
    counts = {
        "cohort_not_in_split": int((~in_split).sum()),
        "split_not_in_cohort": len(not_in_cohort),
    }
    if (~in_split).any():
        missing = ids[~in_split].tolist()
        log.warning(
            "%d cohort patients are not in %s and are left out of the folds: %s%s",
            len(missing),
            source,
            ", ".join(missing[:20]),
            " ..." if len(missing) > 20 else "",
        )
    if not_in_cohort:
        log.info(
            "%d patients of %s are not in the cohort (no modality or no survival data) and are ignored",
            len(not_in_cohort),
            source,
        )
    ids, labels = ids[in_split], labels[in_split]
    is_test = np.array([split[pid] == "test" for pid in ids])
    if not is_test.any() or is_test.all():
        raise HafInputError(
            source, "the split leaves the cohort without a training or a test part", field="dataset"
        )
    part = np.where(is_test, "test", "train").astype(object)
    train_idx = np.flatnonzero(~is_test)
    rng = np.random.default_rng([seed, 0])
    val = stratified_holdout(ids[train_idx], strata(labels[train_idx]), val_fraction, rng)
    part[train_idx[val]] = "val"
    return pd.DataFrame({"patient_id": ids, "fold": 0, "part": part}), counts


@dataclass(frozen=True)
class FoldScheme:
    """One way to split the cohort: how many folds, which official split file (if any), the splitter."""

    name: str
    split_file: str | None  # file in ``paths.splits`` the scheme reads (None: no file)
    n_folds: Callable[[CVSettings], int]
    make: Callable[[pd.DataFrame, CVSettings, dict[str, str] | None, str | Path], tuple[pd.DataFrame, dict]]


def repeat_seed(seed: int, repeat: int) -> int:
    """The split seed of repeat ``repeat`` (repeat 0 is the configured seed: R = 1 gives the plain K-fold)."""
    return int(seed) + 1000 * int(repeat)


def _kfold(targets: pd.DataFrame, cv: CVSettings, split: dict[str, str] | None, source: str | Path):
    frames = []
    for r in range(cv.repeats):
        folds = kfold_folds(targets, cv.k, repeat_seed(cv.seed, r), cv.val_fraction, cv.val_from)
        frames.append(folds.assign(repeat=r, fold=folds["fold"] + r * cv.k))
    return pd.concat(frames, ignore_index=True), {}


def _official(targets: pd.DataFrame, cv: CVSettings, split: dict[str, str] | None, source: str | Path):
    if split is None:
        raise ValueError(f"cv.scheme {cv.scheme!r} needs its official split file")
    frames, counts = [], {}
    for r in range(cv.repeats):  # the test part is the split's; each repeat draws its own validation part
        folds, counts = official_folds(targets, split, repeat_seed(cv.seed, r), cv.val_fraction, source)
        frames.append(folds.assign(repeat=r, fold=r))
    return pd.concat(frames, ignore_index=True), counts


FOLD_SCHEMES: dict[str, FoldScheme] = {
    "kfold": FoldScheme("kfold", None, lambda cv: cv.k * cv.repeats, _kfold),
    "official_in": FoldScheme("official_in", "dataset_split_in.json", lambda cv: cv.repeats, _official),
    "official_out": FoldScheme("official_out", "dataset_split_out.json", lambda cv: cv.repeats, _official),
    "oropharynx": FoldScheme("oropharynx", "dataset_split_Oropharynx.json", lambda cv: cv.repeats, _official),
}
"""The fold-scheme registry (``cv.scheme``). Adding a scheme: an entry here, the schema enum, a test."""


def fold_scheme(name: str) -> FoldScheme:
    try:
        return FOLD_SCHEMES[name]
    except KeyError:
        raise ValueError(f"cv.scheme must be one of {', '.join(FOLD_SCHEMES)}, got {name!r}") from None


def fold_ids(cv: CVSettings) -> list[int]:
    """The fold indices of a run: R x K for ``kfold`` (``cv.repeats`` seeded K-fold splits; fold
    ``r * K + k`` is fold k of repeat r), R for the official splits (one test part, R validation draws)."""
    return list(range(fold_scheme(cv.scheme).n_folds(cv)))


def make_folds(
    targets: pd.DataFrame,
    cv: CVSettings,
    split: dict[str, str] | None = None,
    split_source: str | Path = "split",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The folds table for ``cv.scheme`` (``split``: the scheme's split file, read), and counts per fold."""
    scheme = fold_scheme(cv.scheme)
    counts: dict[str, Any] = {"scheme": scheme.name, "cohort": len(targets)}
    folds, scheme_counts = scheme.make(targets, cv, split, split_source)
    counts.update(scheme_counts)
    labels = targets.set_index("patient_id")["label"]
    summary = {}
    for fold, frame in folds.groupby("fold"):
        per = {}
        for part in PARTS:
            pids = frame.loc[frame["part"] == part, "patient_id"]
            lab = labels.loc[pids]
            per[part] = {
                "n": len(pids),
                "labelled": int(lab.notna().sum()),
                "positives": int((lab == 1).sum()),
            }
        summary[int(fold)] = per
        log.info(
            "fold %d: %s",
            fold,
            "; ".join(
                f"{p} {v['n']} ({v['positives']}/{v['labelled']} positive of labelled)"
                for p, v in per.items()
            ),
        )
    counts["folds"] = summary
    return folds, counts
