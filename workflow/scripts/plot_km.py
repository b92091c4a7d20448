"""Rule fig_km: Kaplan-Meier curves of predicted high/low risk groups with log-rank p-values.

``km.csv``: one ``record == "patient"`` row per pooled test patient (its group, time, event, risk) and,
for each method and group, ``record == "at_risk"`` rows: the number at risk (``at_risk``: time >= t)
and the deaths / censorings before t (``events_before``, ``censored_before``) at whole years ``years``
(``time`` in days), the numbers printed under the figure's panels.
"""

import pandas as pd
from _haf_rule import start

from haf.eval.data import load_predictions, method_predictions
from haf.eval.figures import plot_km, title_prefix
from haf.eval.survival_tables import at_risk_years, km_at_risk, km_summary, risk_groups
from haf.eval.tables import write_csv

log = start(snakemake, "haf.fig_km")
methods = dict(snakemake.params.methods)
predictions = load_predictions(snakemake.input.predictions)
groups, summaries = {}, {}
for method in methods:
    groups[method] = risk_groups(method_predictions(predictions, method))
    summaries[method] = km_summary(groups[method])
    log.info("%s: %s", method, summaries[method])
years = at_risk_years(groups)
at_risk = {m: km_at_risk(g, years) for m, g in groups.items()}
patients = [
    g.assign(record="patient", method=m, logrank_p=summaries[m]["logrank_p"]) for m, g in groups.items()
]
tables = [t.assign(record="at_risk", method=m) for m, t in at_risk.items() if len(t)]
km = pd.concat(patients + tables, ignore_index=True)
for column in ("at_risk", "events_before", "censored_before"):  # counts stay integers next to blank cells
    if column in km:
        km[column] = km[column].astype("Int64")
write_csv(snakemake.output.csv, km)
plot_km(
    groups,
    summaries,
    {m: d["label"] for m, d in methods.items()},
    snakemake.output.pdf,
    snakemake.output.png,
    at_risk=at_risk,
    title=f"{title_prefix(snakemake.params.synthetic)}Overall survival of predicted risk groups "
    "(split at each fold's median validation risk)",
)
