"""Rule table1: Table 1 (accuracy, AUC, majority and balanced accuracy, pooled CIs), fold table, tests."""

from _haf_rule import start

from haf.eval.data import check_coverage, load_predictions
from haf.eval.repeats import cv_shape, read_repeats
from haf.eval.tables import (
    TABLE1_COLUMNS,
    build_table1,
    latex_table,
    markdown_table,
    small_val_display,
    synthetic_prefix,
    table1_notes,
    write_csv,
    write_text,
)
from haf.settings import EvaluationSettings

log = start(snakemake, "haf.table1")
ev = EvaluationSettings.from_config(snakemake.params.evaluation)
predictions = load_predictions(snakemake.input.predictions)
missing = check_coverage(predictions, snakemake.input.folds)
log.info("test patients of folds.tsv without a test prediction, per method: %s", missing)
repeats = read_repeats(snakemake.input.folds)
n_repeats, k = cv_shape(repeats)
log.info("%d CV repeat(s) of %d folds", n_repeats, k)
result = build_table1(
    predictions,
    dict(snakemake.params.methods),
    rule=ev.threshold,
    n_boot=int(ev.bootstrap),
    seed=int(ev.bootstrap_seed),
    reference=ev.reference_method,
    repeats=repeats,
    min_val_patients=int(snakemake.params.min_val_patients),
)
title = f"{synthetic_prefix(snakemake.params.synthetic)}Table 1: cross-validated accuracy and AUC"
notes = table1_notes(ev.threshold, k, int(ev.bootstrap), snakemake.params.synthetic, repeats=n_repeats)
shown, columns, flag_notes = small_val_display(
    result.table, TABLE1_COLUMNS, int(snakemake.params.min_val_patients)
)
notes = notes + flag_notes
write_csv(snakemake.output.csv, result.table)
write_text(snakemake.output.md, markdown_table(shown, columns, title=title, notes=notes, group="group"))
write_text(
    snakemake.output.tex,
    latex_table(shown, columns, caption=title, label="tab:table1", notes=notes, group="group"),
)
for note in flag_notes:
    log.info("%s", note)
write_csv(snakemake.output.tests, result.tests)
write_csv(snakemake.output.per_fold, result.per_fold)
write_csv(snakemake.output.per_repeat, result.per_repeat)
for _, row in result.table.iterrows():
    log.info(
        "%-28s acc %s  AUC %s  pooled AUC %s  n=%d",
        row["method"],
        row["accuracy"],
        row["auc"],
        row["auc_ci"],
        row["n_labelled"],
    )
if result.excluded:
    log.info("left out of Table 1 (no-detach ablations, see Table 2): %s", ", ".join(result.excluded))
