"""Rule fig_km: Kaplan-Meier curves of predicted high/low risk groups with log-rank p-values.

``km.csv``: one ``record == "patient"`` row per pooled test patient and CV repeat (its group, time,
event, risk, ``cv_repeat``, the log-rank p of that repeat) and, for each method and group of the drawn
repeat, ``record == "at_risk"`` rows: the number at risk (``at_risk``: time >= t) and the deaths /
censorings before t (``events_before``, ``censored_before``) at whole years ``years`` (``time`` in
days), the numbers printed under the figure's panels. With several CV repeats the figure draws the
first repeat's groups (every patient once; a curve over patients counted R times would have no
number at risk) and its panel titles give that repeat's log-rank p and the median over repeats.
"""

import pandas as pd
from _haf_rule import start

from haf.eval.data import load_predictions, method_predictions
from haf.eval.figures import plot_km, title_prefix
from haf.eval.repeats import CV_REPEAT, cv_shape, read_repeats
from haf.eval.survival_tables import at_risk_years, km_at_risk, km_summary, risk_groups
from haf.eval.tables import write_csv

log = start(snakemake, "haf.fig_km")
methods = dict(snakemake.params.methods)
predictions = load_predictions(snakemake.input.predictions)
repeats = read_repeats(snakemake.input.folds)
n_repeats, k = cv_shape(repeats)
groups, shown, summaries, per_repeat = {}, {}, {}, {}
for method in methods:
    groups[method] = risk_groups(method_predictions(predictions, method), repeats)
    first = int(groups[method][CV_REPEAT].min())
    shown[method] = groups[method][groups[method][CV_REPEAT] == first]
    per_repeat[method] = {int(r): km_summary(g) for r, g in groups[method].groupby(CV_REPEAT)}
    summaries[method] = km_summary(shown[method])
    if n_repeats > 1:
        summaries[method]["logrank_p_median"] = km_summary(groups[method])["logrank_p"]
    log.info("%s: %s", method, summaries[method])
years = at_risk_years(shown)
at_risk = {m: km_at_risk(g, years) for m, g in shown.items()}
patients = [
    g.assign(
        record="patient",
        method=m,
        logrank_p=g[CV_REPEAT].map(lambda r, m=m: per_repeat[m][int(r)]["logrank_p"]),
    )
    for m, g in groups.items()
]
tables = [
    t.assign(record="at_risk", method=m, **{CV_REPEAT: int(shown[m][CV_REPEAT].min())})
    for m, t in at_risk.items()
    if len(t)
]
km = pd.concat(patients + tables, ignore_index=True)
for column in ("at_risk", "events_before", "censored_before"):  # counts stay integers next to blank cells
    if column in km:
        km[column] = km[column].astype("Int64")
write_csv(snakemake.output.csv, km)
plot_km(
    shown,
    summaries,
    {m: d["label"] for m, d in methods.items()},
    snakemake.output.pdf,
    snakemake.output.png,
    at_risk=at_risk,
    title=f"{title_prefix(snakemake.params.synthetic)}Overall survival of predicted risk groups "
    "(split at each fold's median validation risk"
    + (
        f"; CV repeat 0 of {n_repeats}, log-rank p: this repeat / median over repeats)"
        if n_repeats > 1
        else ")"
    ),
)
