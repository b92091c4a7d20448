"""Rule fig_dropout: Fig. 2, AUC and accuracy under test-time modality dropout (and its numbers)."""

from _haf_rule import start

from haf.artifacts.masked import load_masked
from haf.eval.data import load_predictions
from haf.eval.figures import plot_dropout, title_prefix
from haf.eval.repeats import cv_shape, read_repeats
from haf.eval.robustness import aggregate, check_protocol, masked_metrics
from haf.eval.tables import write_csv
from haf.settings import EvaluationSettings

log = start(snakemake, "haf.fig_dropout")
ev = EvaluationSettings.from_config(snakemake.params.evaluation)
methods = dict(snakemake.params.methods)
predictions = load_predictions(snakemake.input.predictions)
repeats = read_repeats(snakemake.input.folds)
n_repeats, k = cv_shape(repeats)
masked = load_masked(snakemake.input.masked)
metrics = masked_metrics(masked, predictions, rule=ev.threshold, scenarios=("dropout",))
check_protocol(metrics, {"dropout": list(ev.dropout_p)}, int(ev.repeats))
agg = aggregate(metrics, ("auc", "accuracy", "mean_n_present"), repeats)
agg.insert(1, "label", agg["method"].map(lambda m: methods[m]["label"]))
write_csv(snakemake.output.csv, agg)
plot_dropout(
    agg,
    {m: d["label"] for m, d in methods.items()},
    snakemake.output.pdf,
    snakemake.output.png,
    title=f"{title_prefix(snakemake.params.synthetic)}Robustness to test-time modality dropout "
    f"({n_repeats} x {k}-fold CV, {ev.repeats} masks per p)",
)
log.info("scored %d (method, fold, p, repeat) masks of %d methods", len(metrics), len(methods))
