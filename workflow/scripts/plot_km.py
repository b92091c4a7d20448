"""Rule fig_km: Kaplan-Meier curves of predicted high/low risk groups with log-rank p-values."""

import pandas as pd
from _haf_rule import start

from haf.eval.data import load_predictions, method_predictions
from haf.eval.figures import plot_km, title_prefix
from haf.eval.survival_tables import km_summary, risk_groups
from haf.eval.tables import write_csv

log = start(snakemake, "haf.fig_km")
methods = dict(snakemake.params.methods)
predictions = load_predictions(snakemake.input.predictions)
groups, summaries = {}, {}
for method in methods:
    groups[method] = risk_groups(method_predictions(predictions, method))
    summaries[method] = km_summary(groups[method])
    log.info("%s: %s", method, summaries[method])
write_csv(
    snakemake.output.csv,
    pd.concat(
        [g.assign(method=m, logrank_p=summaries[m]["logrank_p"]) for m, g in groups.items()],
        ignore_index=True,
    ),
)
plot_km(
    groups,
    summaries,
    {m: d["label"] for m, d in methods.items()},
    snakemake.output.pdf,
    snakemake.output.png,
    title=f"{title_prefix(snakemake.params.synthetic)}Overall survival of predicted risk groups "
    "(split at each fold's median validation risk)",
)
