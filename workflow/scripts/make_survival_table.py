"""Rule survival_table: Harrell's and Uno's C, integrated td-AUC, integrated Brier score and the KM
log-rank test per method, with patient-bootstrap CIs and paired tests against the reference method."""

import pandas as pd
from _haf_rule import start

from haf.eval.data import is_risk_only, load_predictions, method_predictions, read_cohort_survival
from haf.eval.repeats import cv_shape, read_repeats
from haf.eval.survival_boot import SURVIVAL_METRICS
from haf.eval.survival_tables import (
    cohort_grid,
    km_summary,
    pooled_sets,
    risk_groups,
    survival_ci,
    survival_metrics,
    survival_paired,
    survival_references,
)
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
repeats = read_repeats(snakemake.input.folds)
n_repeats, k = cv_shape(repeats)
cohort = read_cohort_survival(snakemake.input.folds, snakemake.input.targets)
grid = cohort_grid(cohort, int(ev.td_auc_points))
n_boot, seed = int(ev.bootstrap), int(ev.bootstrap_seed)
rows, folds, sets = [], [], {}
for method, decl in methods.items():
    mrows = method_predictions(predictions, method)
    summary, per_fold, _ = survival_metrics(mrows, grid, repeats)
    sets[method] = pooled_sets(mrows, grid, repeats)
    ci = survival_ci(sets[method], grid, n_boot, seed)
    km = km_summary(risk_groups(mrows, repeats))
    rows.append(dict(method=method, label=decl["label"], task_loss=decl["task_loss"], **summary, **ci, **km))
    folds.append(per_fold.assign(method=method))
    log.info(
        "%-24s Harrell %.3f [%.3f, %.3f]  Uno %.3f  iAUC %.3f  IBS %.3f (%s)  log-rank p %.3g",
        method,
        summary["harrell_c_pooled"],
        ci["harrell_c_ci_low"],
        ci["harrell_c_ci_high"],
        summary["uno_c_pooled"],
        summary["td_auc_mean_pooled"],
        summary["ibs_pooled"],
        summary["ibs_status"],
        km["logrank_p"],
    )
table = pd.DataFrame.from_records(rows)
references = survival_references(
    methods, ev.reference_method, {m: is_risk_only(method_predictions(predictions, m)) for m in methods}
)
log.info(
    "paired tests: reference per metric %s (evaluation.reference_method = %s)",
    references,
    ev.reference_method,
)
tests = []
for metric in SURVIVAL_METRICS:
    ref = references[metric]
    if ref is None:
        log.warning("no reference method for %s: no paired tests", metric)
        continue
    for method in methods:
        if method == ref or (metric == "ibs" and not is_risk_only(method_predictions(predictions, method))):
            continue
        result = survival_paired(sets[ref], sets[method], grid, n_boot, seed, metrics=(metric,))[metric]
        tests.append(
            dict(reference=ref, method=method, label=methods[method]["label"], metric=metric, **result)
        )
write_csv(snakemake.output.csv, table)
write_csv(snakemake.output.per_fold, pd.concat(folds, ignore_index=True))
write_csv(
    snakemake.output.tests,
    pd.DataFrame.from_records(tests)
    if tests
    else pd.DataFrame(columns=["reference", "method", "label", "metric", "delta", "p_value"]),
)
title = f"{synthetic_prefix(snakemake.params.synthetic)}Survival metrics of the out-of-fold risk scores"
notes = survival_notes(grid, k, snakemake.params.synthetic, repeats=n_repeats, n_boot=n_boot)
display = format_survival_table(table)
write_text(snakemake.output.md, markdown_table(display, SURVIVAL_COLUMNS, title=title, notes=notes))
write_text(
    snakemake.output.tex,
    latex_table(display, SURVIVAL_COLUMNS, caption=title, label="tab:survival", notes=notes),
)
