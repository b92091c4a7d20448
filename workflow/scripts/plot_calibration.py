"""Rule fig_calibration: predicted P(death by t) vs Kaplan-Meier observed, at fixed horizons."""

import pandas as pd
from _haf_rule import start

from haf.eval.data import load_predictions, method_predictions, read_cohort_survival
from haf.eval.figures import plot_calibration, title_prefix
from haf.eval.repeats import cv_shape, read_repeats
from haf.eval.survival_tables import calibration_table, cohort_grid
from haf.eval.tables import write_csv
from haf.settings import EvaluationSettings

log = start(snakemake, "haf.fig_calibration")
ev = EvaluationSettings.from_config(snakemake.params.evaluation)
target = snakemake.params.target
methods = dict(snakemake.params.methods)
label_horizon = float(target["horizon_days"]) if target["rule"] == "horizon" else None
horizons = [float(h) for h in ev.horizons_days]
predictions = load_predictions(snakemake.input.predictions)
repeats = read_repeats(snakemake.input.folds)
n_repeats, k = cv_shape(repeats)
grid = cohort_grid(
    read_cohort_survival(snakemake.input.folds, snakemake.input.targets), int(ev.td_auc_points)
)
bins, summaries = [], []
for method in methods:
    b, s = calibration_table(
        method_predictions(predictions, method),
        grid,
        horizons,
        int(ev.calibration_bins),
        label_horizon,
        repeats,
    )
    bins.append(b)
    summaries.append(s)
    for _, row in s.iterrows():
        log.info("%s at %g days: %s", method, row["horizon_days"], row["status"])
bins = pd.concat(bins, ignore_index=True)
write_csv(snakemake.output.csv, bins)
write_csv(snakemake.output.summary, pd.concat(summaries, ignore_index=True))
plot_calibration(
    bins,
    horizons,
    {m: d["label"] for m, d in methods.items()},
    snakemake.output.pdf,
    snakemake.output.png,
    title=f"{title_prefix(snakemake.params.synthetic)}Calibration of predicted risk (pooled out-of-fold test patients"
    + (f", bins averaged over {n_repeats} CV repeats)" if n_repeats > 1 else ")"),
)
