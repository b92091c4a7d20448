"""Rule survival_table: Harrell's and Uno's C, integrated td-AUC and the KM log-rank test per method."""

import pandas as pd
from _haf_rule import start

from haf.eval.data import load_predictions, method_predictions, read_cohort_survival
from haf.eval.survival_tables import cohort_grid, km_summary, risk_groups, survival_metrics
from haf.eval.tables import (
    SURVIVAL_COLUMNS,
    format_survival_table,
    latex_table,
    markdown_table,
    survival_notes,
    synthetic_prefix,
    write_csv,
    write_text,
)
from haf.settings import EvaluationSettings

log = start(snakemake, "haf.survival_table")
ev = EvaluationSettings.from_config(snakemake.params.evaluation)
methods = dict(snakemake.params.methods)
predictions = load_predictions(snakemake.input.predictions)
cohort = read_cohort_survival(snakemake.input.folds, snakemake.input.targets)
grid = cohort_grid(cohort, int(ev.td_auc_points))
rows, folds = [], []
for method, decl in methods.items():
    mrows = method_predictions(predictions, method)
    summary, per_fold, _ = survival_metrics(mrows, grid)
    km = km_summary(risk_groups(mrows))
    rows.append(
        dict(
            method=method,
            label=decl["label"],
            task_loss=decl["task_loss"],
            **summary,
            **km,
        )
    )
    folds.append(per_fold.assign(method=method))
    log.info(
        "%-24s Harrell %.3f  Uno %.3f  iAUC %.3f  log-rank p %.3g",
        method,
        summary["harrell_c_pooled"],
        summary["uno_c_pooled"],
        summary["td_auc_mean_pooled"],
        km["logrank_p"],
    )
table = pd.DataFrame.from_records(rows)
write_csv(snakemake.output.csv, table)
write_csv(snakemake.output.per_fold, pd.concat(folds, ignore_index=True))
title = f"{synthetic_prefix(snakemake.params.synthetic)}Survival metrics of the out-of-fold risk scores"
notes = survival_notes(grid, int(snakemake.params.k), snakemake.params.synthetic)
display = format_survival_table(table)
write_text(snakemake.output.md, markdown_table(display, SURVIVAL_COLUMNS, title=title, notes=notes))
write_text(
    snakemake.output.tex,
    latex_table(display, SURVIVAL_COLUMNS, caption=title, label="tab:survival", notes=notes),
)
