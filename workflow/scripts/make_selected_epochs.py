"""Rule selected_epochs: the kept epoch of every per-fold model and the folds whose validation part had
fewer usable patients than training.min_val_patients (haf.eval.epochs, docs/selection.md)."""

from _haf_rule import start

from haf.artifacts.aligned import read_aligned
from haf.eval.data import load_predictions
from haf.eval.epochs import (
    TrainedModel,
    aligned_val_counts,
    prediction_val_counts,
    selected_epochs,
    selected_epochs_markdown,
)
from haf.eval.repeats import cv_shape, read_repeats
from haf.eval.tables import synthetic_prefix, write_csv, write_text
from haf.settings import EvaluationSettings, TrainingSettings

log = start(snakemake, "haf.selected_epochs")
training = TrainingSettings.from_config(snakemake.params.training)
early = EvaluationSettings.from_config(snakemake.params.evaluation).early_epoch
repeats = read_repeats(snakemake.input.folds)
n_repeats, k = cv_shape(repeats)
models = []
for m in snakemake.params.models:
    folds = [int(f) for f in m["folds"]]
    if m["task_loss"] is None:  # Stage 2: no labels; usable = validation patients with >= 2 modalities
        counts = aligned_val_counts({f: read_aligned(p) for f, p in zip(folds, m["counts"], strict=True)})
        usable = ">= 2 modalities"
    else:
        counts = prediction_val_counts(load_predictions(m["counts"]), folds, m["task_loss"])
        usable = "labelled" if m["task_loss"] == "bce" else "all (Cox)"
    models.append(
        TrainedModel(
            name=m["name"],
            label=m["label"],
            stage=m["stage"],
            logs=dict(zip(folds, m["logs"], strict=True)),
            val_counts=counts,
            usable=usable,
        )
    )
summary, per_fold = selected_epochs(
    models, repeats=repeats, min_val_patients=training.min_val_patients, early_epoch=early
)
write_csv(snakemake.output.csv, summary)
write_csv(snakemake.output.per_fold, per_fold)
title = (
    f"{synthetic_prefix(snakemake.params.synthetic)}Kept epochs per model ({training.selection} selection)"
)
write_text(
    snakemake.output.md,
    selected_epochs_markdown(
        summary,
        title=title,
        early_epoch=early,
        min_val_patients=training.min_val_patients,
        selection=training.selection,
        n_repeats=n_repeats,
        k=k,
        sksurv=list(snakemake.params.sksurv),
    ),
)
for _, row in summary.iterrows():
    log.info(
        "%-28s kept epoch %d / %g / %d, %d fold(s) <= %d, small validation folds %d of %d",
        row["model"],
        row["kept_epoch_min"],
        row["kept_epoch_median"],
        row["kept_epoch_max"],
        row["early_folds"],
        early,
        row["small_val_folds"],
        row["n_folds"],
    )
if snakemake.params.sksurv:
    log.info("left out (no epochs: one fit, or a penalty path): %s", ", ".join(snakemake.params.sksurv))
