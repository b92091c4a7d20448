"""Rule benchmarks: the training and extraction jobs' benchmark TSVs in one table (haf.eval.benchmarks)."""

from _haf_rule import start

from haf.eval.benchmarks import benchmark_markdown, benchmark_table
from haf.eval.tables import synthetic_prefix, write_csv, write_text

log = start(snakemake, "haf.benchmarks")
table, missing = benchmark_table(list(snakemake.params.jobs))
write_csv(snakemake.output.csv, table)
title = f"{synthetic_prefix(snakemake.params.synthetic)}Cost of the training and extraction jobs"
write_text(snakemake.output.md, benchmark_markdown(table, missing, title=title))
for job in missing:
    log.warning("no benchmark file for job %s: %s", job["job"], job["benchmark"])
log.info("%d job(s) benchmarked, %d without a benchmark file", len(table) - 1 - len(missing), len(missing))
