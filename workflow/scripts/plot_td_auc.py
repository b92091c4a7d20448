"""Rule fig_td_auc: cumulative/dynamic AUC(t) over follow-up, pooled out-of-fold, per method."""

import pandas as pd
from _haf_rule import start

from haf.eval.data import load_predictions, method_predictions, read_cohort_survival
from haf.eval.figures import plot_td_auc, title_prefix
from haf.eval.repeats import cv_shape, read_repeats
from haf.eval.survival_tables import cohort_grid, survival_metrics
from haf.eval.tables import write_csv
from haf.settings import EvaluationSettings

log = start(snakemake, "haf.fig_td_auc")
ev = EvaluationSettings.from_config(snakemake.params.evaluation)
methods = dict(snakemake.params.methods)
predictions = load_predictions(snakemake.input.predictions)
repeats = read_repeats(snakemake.input.folds)
n_repeats, k = cv_shape(repeats)
grid = cohort_grid(
    read_cohort_survival(snakemake.input.folds, snakemake.input.targets), int(ev.td_auc_points)
)
curves = []
for method in methods:
    _, _, c = survival_metrics(method_predictions(predictions, method), grid, repeats)
    curves.append(c.assign(method=method))
curves = pd.concat(curves, ignore_index=True)
curves["time_years"] = curves["time_days"] / 365.25
write_csv(snakemake.output.csv, curves)
plot_td_auc(
    curves,
    {m: d["label"] for m, d in methods.items()},
    snakemake.output.pdf,
    snakemake.output.png,
    title=f"{title_prefix(snakemake.params.synthetic)}Time-dependent AUC (pooled out-of-fold"
    + (f", mean over {n_repeats} CV repeats" if n_repeats > 1 else "")
    + f"; band ± SD over {n_repeats * k} folds)",
)
log.info("td-AUC on %d grid times in [%.0f, %.0f) days", len(grid.times), grid.lo, grid.hi)
