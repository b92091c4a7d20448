"""Rule metrics: results/metrics.json, each method's pooled metrics read from Table 1 and the survival
table, for experiment trackers (haf.eval.run_metrics)."""

from _haf_rule import start

from haf.artifacts.files import write_json
from haf.eval.run_metrics import build_metrics

log = start(snakemake, "haf.metrics")
payload = build_metrics(
    snakemake.input.table1,
    snakemake.input.survival,
    methods=dict(snakemake.params.methods),
    cv=dict(snakemake.params.cv),
    n_folds=int(snakemake.params.k),
    synthetic=bool(snakemake.params.synthetic),
)
write_json(snakemake.output.json, payload)
methods = payload["methods"]
log.info(
    "metrics of %d methods (%d with binary, %d with survival metrics)",
    len(methods),
    sum(m["binary"] is not None for m in methods.values()),
    sum(m["survival"] is not None for m in methods.values()),
)
