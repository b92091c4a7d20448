"""Which epoch every per-fold model kept, and which folds selected it on a small validation part.

The selected-epochs table (rule ``selected_epochs``, docs/selection.md) reads every trained model's
per-fold ``train_log.tsv`` (its ``best`` row is the kept epoch) and counts each fold's validation
patients; Table 1 carries the same small-validation flag (:func:`small_val_flags`).

Where the validation counts come from: the model's own ``predictions.tsv`` (val part), not the
``folds.tsv`` split and not the training log. The predictions are exactly the patients the model
scored on its validation part, so a model that cannot score a patient (WSI-CLAM on a patient
without a slide) does not count them, and they exist for every method without retraining (training
logs record no counts). ``usable`` follows :func:`haf.runtime.tensors.training_rows`, the rows the
validation score and loss use: the labelled patients for a binary loss, every validation patient for
a Cox loss (which :func:`haf.runtime.fit.fit_stacked` also counts for its ``min_val_patients``
warning). Stage 2 alignment uses no labels: its usable patients are the validation patients with at
least two modalities (what its validation loss can use), counted from ``aligned.npz``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from haf.artifacts.aligned import Aligned
from haf.artifacts.train_log import read_train_log
from haf.errors import HafInputError
from haf.eval.repeats import CV_REPEAT, Repeats, repeat_of

log = logging.getLogger(__name__)

VAL_COUNT_COLUMNS: tuple[str, ...] = ("fold", "n_val", "n_val_labelled", "n_val_usable")


def kept_epoch(path: str | Path) -> dict[str, float]:
    """The kept epoch of one ``train_log.tsv`` (its ``best`` row), the epochs trained, and the kept
    epoch's validation score and loss. A missing or malformed log is an error naming the file."""
    frame = read_train_log(path)
    if frame.empty:
        raise HafInputError(path, "training log has no epoch", field="epoch")
    epochs = pd.to_numeric(frame["epoch"], errors="coerce")
    if epochs.isna().any() or (epochs != np.round(epochs)).any() or (epochs < 0).any():
        raise HafInputError(path, "epoch is not a non-negative integer in every row", field="epoch")
    best = frame.loc[frame["best"]].iloc[0]
    return dict(
        kept_epoch=int(epochs[frame["best"]].iloc[0]),
        epochs_trained=int(len(frame)),
        kept_val_score=float(best["val_score"]),
        kept_val_loss=float(best["val_loss"]),
    )


def prediction_val_counts(predictions: pd.DataFrame, folds: Sequence[int], task_loss: str) -> pd.DataFrame:
    """Per fold: validation patients in one model's predictions (``n_val``), those with a binary label
    (``n_val_labelled``) and those its validation score uses (``n_val_usable``: labelled for ``bce``,
    all for ``cox``). A fold without validation predictions counts 0."""
    if task_loss not in ("bce", "cox"):
        raise ValueError(f"task_loss must be bce or cox, got {task_loss!r}")
    val = predictions[predictions["part"] == "val"]
    records = []
    for fold in folds:
        rows = val[val["fold"] == int(fold)]
        labelled = int(rows["label"].notna().sum())
        records.append(
            dict(
                fold=int(fold),
                n_val=len(rows),
                n_val_labelled=labelled,
                n_val_usable=labelled if task_loss == "bce" else len(rows),
            )
        )
    return pd.DataFrame.from_records(records, columns=list(VAL_COUNT_COLUMNS))


def aligned_val_counts(aligned: Mapping[int, Aligned]) -> pd.DataFrame:
    """Per fold of a Stage 2 alignment: validation patients, and those with >= 2 modalities (usable)."""
    records = []
    for fold, a in aligned.items():
        val = a.part == "val"
        records.append(
            dict(
                fold=int(fold),
                n_val=int(val.sum()),
                n_val_labelled=np.nan,
                n_val_usable=int((a.present[val].sum(axis=1) >= 2).sum()),
            )
        )
    return pd.DataFrame.from_records(records, columns=list(VAL_COUNT_COLUMNS))


def small_val_flags(counts: pd.DataFrame, min_val_patients: int) -> pd.Series:
    """True where a fold's validation part has fewer usable patients than ``min_val_patients``."""
    return counts["n_val_usable"].astype(float) < int(min_val_patients)


@dataclass
class TrainedModel:
    """One trained model of the run: its per-fold training logs and validation counts.

    ``name``: the method (fusion, joint, comparator) or ``stage1/{pmod}``, ``stage2/{align}``;
    ``usable``: what its usable validation patients are (for the table's notes).
    """

    name: str
    label: str
    stage: str
    logs: Mapping[int, str | Path]
    val_counts: pd.DataFrame
    usable: str = "labelled"


SUMMARY_COLUMNS: tuple[str, ...] = (
    "model",
    "label",
    "stage",
    "usable",
    "n_folds",
    "n_cv_repeats",
    "kept_epoch_min",
    "kept_epoch_median",
    "kept_epoch_max",
    "early_folds",
    "epochs_trained_median",
    "epochs_trained_max",
    "val_usable_min",
    "val_usable_median",
    "val_labelled_min",
    "val_labelled_median",
    "small_val_folds",
)


def selected_epochs(
    models: Sequence[TrainedModel],
    *,
    repeats: Repeats | None,
    min_val_patients: int,
    early_epoch: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary (one row per model) and every fold's kept epoch and validation counts.

    ``early_folds``: folds whose kept epoch is ``<= early_epoch``; ``small_val_folds``: folds whose
    validation part has fewer usable patients than ``min_val_patients`` (``training.min_val_patients``).
    Counts run over every fold of every CV repeat (``n_folds`` = R x K).
    """
    folds_out, rows = [], []
    for model in models:
        counts = model.val_counts.set_index("fold")
        missing = sorted(set(int(f) for f in model.logs) - set(counts.index.astype(int)))
        if missing:
            raise ValueError(f"{model.name}: no validation counts for fold(s) {missing}")
        records = []
        for fold in sorted(model.logs):
            records.append(
                dict(fold=int(fold), **kept_epoch(model.logs[fold]), **counts.loc[int(fold)].to_dict())
            )
        per_fold = pd.DataFrame.from_records(records)
        per_fold.insert(0, "model", model.name)
        per_fold.insert(1, "label", model.label)
        per_fold.insert(2, "stage", model.stage)
        per_fold.insert(4, CV_REPEAT, repeat_of(per_fold["fold"], repeats))
        per_fold["early"] = per_fold["kept_epoch"] <= int(early_epoch)
        per_fold["small_val"] = small_val_flags(per_fold, min_val_patients)
        folds_out.append(per_fold)
        kept, trained = per_fold["kept_epoch"], per_fold["epochs_trained"]
        usable, labelled = per_fold["n_val_usable"].astype(float), per_fold["n_val_labelled"].astype(float)
        rows.append(
            dict(
                model=model.name,
                label=model.label,
                stage=model.stage,
                usable=model.usable,
                n_folds=len(per_fold),
                n_cv_repeats=int(per_fold[CV_REPEAT].nunique()),
                kept_epoch_min=int(kept.min()),
                kept_epoch_median=float(kept.median()),
                kept_epoch_max=int(kept.max()),
                early_folds=int(per_fold["early"].sum()),
                epochs_trained_median=float(trained.median()),
                epochs_trained_max=int(trained.max()),
                val_usable_min=float(usable.min()),
                val_usable_median=float(usable.median()),
                val_labelled_min=float(labelled.min()) if labelled.notna().any() else np.nan,
                val_labelled_median=float(labelled.median()) if labelled.notna().any() else np.nan,
                small_val_folds=int(per_fold["small_val"].sum()),
            )
        )
        if per_fold["small_val"].any():
            log.warning(
                "%s: %d of %d folds selected their epoch on fewer than %d usable validation patients "
                "(training.min_val_patients): folds %s",
                model.name,
                int(per_fold["small_val"].sum()),
                len(per_fold),
                min_val_patients,
                per_fold.loc[per_fold["small_val"], "fold"].tolist(),
            )
    summary = pd.DataFrame.from_records(rows, columns=list(SUMMARY_COLUMNS))
    per_fold = pd.concat(folds_out, ignore_index=True) if folds_out else pd.DataFrame()
    return summary, per_fold


SELECTED_EPOCHS_COLUMNS = {
    "label": "Model",
    "stage": "Stage",
    "folds": "Folds",
    "kept": "Kept epoch min / median / max",
    "early": "Folds kept <= E",
    "trained": "Epochs trained median / max",
    "val": "Usable val. patients min / median",
    "small_val": "Small val. folds",
}


def _num(value: float) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:g}"


def selected_epochs_display(summary: pd.DataFrame, early_epoch: int) -> tuple[pd.DataFrame, dict[str, str]]:
    """Display strings of the summary and its Markdown headings (``E`` = ``early_epoch``)."""
    display = pd.DataFrame(
        dict(
            label=summary["label"],
            stage=summary["stage"],
            folds=[f"{n}" for n in summary["n_folds"]],
            kept=[
                f"{_num(a)} / {_num(b)} / {_num(c)}"
                for a, b, c in zip(
                    summary["kept_epoch_min"],
                    summary["kept_epoch_median"],
                    summary["kept_epoch_max"],
                    strict=True,
                )
            ],
            early=[f"{n}" for n in summary["early_folds"]],
            trained=[
                f"{_num(a)} / {_num(b)}"
                for a, b in zip(summary["epochs_trained_median"], summary["epochs_trained_max"], strict=True)
            ],
            val=[
                f"{_num(a)} / {_num(b)} ({u})"
                for a, b, u in zip(
                    summary["val_usable_min"], summary["val_usable_median"], summary["usable"], strict=True
                )
            ],
            small_val=[f"{n} †" if n else "0" for n in summary["small_val_folds"]],
        )
    )
    columns = dict(SELECTED_EPOCHS_COLUMNS)
    columns["early"] = f"Folds kept <= {int(early_epoch)}"
    return display, columns


def small_val_note(min_val_patients: int, flagged: Sequence[str]) -> str:
    """The footnote of a table with a small-validation flag (the methods flagged named)."""
    text = (
        f"† Small val. folds: folds (of every CV repeat) whose validation part had fewer than "
        f"{int(min_val_patients)} usable patients (training.min_val_patients; usable: labelled for binary "
        "losses, every validation patient for Cox losses, >= 2 modalities for Stage 2), counted in the "
        "model's own validation predictions: the kept epoch (and, for `val` thresholds, the cut) rests on "
        "few patients."
    )
    if flagged:
        return text + " Flagged: " + ", ".join(flagged) + "."
    return text + " None flagged."


def selected_epochs_markdown(
    summary: pd.DataFrame,
    *,
    title: str,
    early_epoch: int,
    min_val_patients: int,
    selection: str,
    n_repeats: int,
    k: int,
    sksurv: Sequence[str] = (),
) -> str:
    """``selected_epochs.md``: the summary with its notes (what is counted, the flag, what is left out)."""
    from haf.eval.tables import markdown_table

    display, columns = selected_epochs_display(summary, early_epoch)
    flagged = [
        f"{label} ({int(n)} of {int(f)} folds)"
        for label, n, f in zip(summary["label"], summary["small_val_folds"], summary["n_folds"], strict=True)
        if n
    ]
    notes = [
        f"{n_repeats} CV repeat(s) of {k} folds: every count and statistic runs over all {n_repeats * k} "
        f"folds. Kept epoch: the `best` row of each fold's train_log.tsv (0-based; training.selection = "
        f"{selection}). Folds kept <= {int(early_epoch)}: folds whose kept epoch is at most "
        f"{int(early_epoch)} (evaluation.early_epoch), a near-untrained model. Epochs trained: rows of the "
        "log (early stopping ends it).",
        small_val_note(min_val_patients, flagged),
    ]
    if sksurv:
        notes.append(
            "Left out (no epochs: a single fit, or a penalty path chosen on validation Harrell's C): "
            + ", ".join(sksurv)
            + "."
        )
    return markdown_table(display, columns, title=title, notes=notes)
