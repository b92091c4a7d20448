"""Rule table5: the PARACHUTE protocol (masked C-index/AUC per scenario and p) and its Table 5."""

from _haf_rule import start

from haf.artifacts.masked import load_masked
from haf.eval.data import load_predictions
from haf.eval.repeats import cv_shape, read_repeats
from haf.eval.robustness import aggregate, check_protocol, masked_metrics
from haf.eval.tables import (
    build_table5,
    cv_sentence,
    fmt_mean_std,
    format_table5,
    latex_table,
    markdown_table,
    synthetic_prefix,
    table5_notes,
    table5_rows,
    write_csv,
    write_text,
)
from haf.methods import per_p_models
from haf.settings import EvaluationSettings

log = start(snakemake, "haf.table5")
ev = EvaluationSettings.from_config(snakemake.params.evaluation)
methods = dict(snakemake.params.methods)
labels = {m: d["label"] for m, d in methods.items()}
p_values = list(ev.parachute_p)
predictions = load_predictions(snakemake.input.predictions)
repeats = read_repeats(snakemake.input.folds)
n_repeats, k = cv_shape(repeats)
masked = load_masked(snakemake.input.masked)
metrics = masked_metrics(
    masked, predictions, rule=ev.threshold, scenarios=ev.parachute_scenarios, with_cindex=True
)
check_protocol(metrics, {s: p_values for s in ev.parachute_scenarios}, int(ev.repeats))
agg = aggregate(metrics, ("cindex", "auc", "accuracy", "mean_n_present"), repeats)
# PARACHUTE's per-p protocol: the methods declared per_p_of a base give its "a model per p" rows
groups = per_p_models(methods)
for base, group in groups.items():
    log.info("per-p protocol of %s: %s", base, ", ".join(f"p={p:g} from {m}" for p, m in group.items()))
agg = table5_rows(agg, groups, p_values, labels)
agg.insert(1, "label", agg.pop("label"))
agg.insert(2, "training", agg.pop("training"))
write_csv(snakemake.output.masked, agg)

synthetic = snakemake.params.synthetic
shown = agg.assign(
    p_percent=(agg["p"] * 100).round(2).map(lambda v: f"{v:g}%"),
    cindex=[fmt_mean_std(m, s) for m, s in zip(agg["cindex_mean"], agg["cindex_std"], strict=True)],
    auc=[fmt_mean_std(m, s) for m, s in zip(agg["auc_mean"], agg["auc_std"], strict=True)],
)
write_text(
    snakemake.output.masked_md,
    markdown_table(
        shown,
        {
            "label": "Method",
            "scenario": "Missing",
            "p_percent": "p",
            "cindex": "C-index (Harrell)",
            "auc": "AUC",
        },
        title=f"{synthetic_prefix(synthetic)}Masked evaluation (PARACHUTE protocol)",
        notes=[
            f"pathology / tabular: the whole group is dropped with probability p; mixed: each of the two "
            f"groups is dropped with probability p, never both ({ev.repeats} random masks, the same for "
            f"every method, at least one modality kept); mean over masks within a fold. "
            f"{cv_sentence(n_repeats, k)}",
            "One model at every p: the method's model evaluated at each p. A model per p (PARACHUTE's "
            "protocol): at each p the model trained with runtime masking at p_miss = p (trained_method).",
        ],
    ),
)

table5 = build_table5(agg, p_values)
shown_as = agg.drop_duplicates("method").set_index("method")
table5.insert(1, "label", table5["method"].map(shown_as["label"]))
table5.insert(2, "training", table5["method"].map(shown_as["training"]))
write_csv(snakemake.output.csv, table5)
display, columns = format_table5(table5, p_values)
title = f"{synthetic_prefix(synthetic)}Table 5: degradation with increasing missingness"
notes = table5_notes(p_values, synthetic, repeats=n_repeats, k=k)
write_text(
    snakemake.output.md, markdown_table(display, columns, title=title, notes=notes, group="metric_name")
)
write_text(
    snakemake.output.tex,
    latex_table(display, columns, caption=title, label="tab:table5", notes=notes, group="metric_name"),
)
log.info("scored %d masks (%d methods x folds x scenarios x p x repeats)", len(metrics), len(methods))
