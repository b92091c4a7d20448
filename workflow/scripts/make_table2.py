"""Rule table2: stage-wise detachment ablation (with vs without detachment), accuracy and AUC."""

from _haf_rule import start

from haf.eval.data import load_predictions
from haf.eval.repeats import cv_shape, read_repeats
from haf.eval.tables import (
    build_table2,
    cv_sentence,
    latex_table,
    markdown_table,
    synthetic_prefix,
    table2_columns,
    table2_long,
    table2_notes,
    threshold_sentence,
    write_csv,
    write_text,
)
from haf.settings import EvaluationSettings

log = start(snakemake, "haf.table2")
ev = EvaluationSettings.from_config(snakemake.params.evaluation)
predictions = load_predictions(snakemake.input.predictions)
repeats = read_repeats(snakemake.input.folds)
n_repeats, k = cv_shape(repeats)
table = build_table2(predictions, dict(snakemake.params.methods), rule=ev.threshold, repeats=repeats)
title = f"{synthetic_prefix(snakemake.params.synthetic)}Table 2: ablation of stage-wise detachment"
notes = [f"{cv_sentence(n_repeats, k)} {threshold_sentence(ev.threshold)}", *table2_notes()]
if snakemake.params.synthetic:
    notes.insert(0, "SYNTHETIC DEMO DATA: these numbers say nothing about real patients.")
long = table2_long(table)
columns = table2_columns(table)
write_csv(snakemake.output.csv, table)
write_text(snakemake.output.md, markdown_table(long, columns, title=title, notes=notes))
write_text(snakemake.output.tex, latex_table(long, columns, caption=title, label="tab:table2", notes=notes))
for _, row in table.iterrows():
    log.info(
        "%-20s acc %s | scratch %s | warm %s   AUC %s | scratch %s | warm %s",
        row["setting"],
        row["accuracy_detach"],
        row["accuracy_nodetach"],
        row["accuracy_nodetach_warm"],
        row["auc_detach"],
        row["auc_nodetach"],
        row["auc_nodetach_warm"],
    )
