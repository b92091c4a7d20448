"""Rule claims: the HAF paper's claims tested on this run's own outputs, each with an effect, a 95% CI,
a p-value and a verdict (haf.eval.claims; docs/evaluation.md, "Claims table")."""

import re

import pandas as pd
from _haf_rule import start

from haf.artifacts.aligned import read_aligned
from haf.artifacts.folds import read_folds
from haf.artifacts.masked import load_masked
from haf.artifacts.predictions import COLUMNS
from haf.eval.claims import CLAIMS_MD_COLUMNS, build_claims, claims_display, claims_notes
from haf.eval.data import load_predictions, read_cohort_survival
from haf.eval.fold_test import part_size_ratio
from haf.eval.repeats import cv_shape, read_repeats
from haf.eval.survival_tables import cohort_grid
from haf.eval.tables import markdown_table, synthetic_prefix, write_csv, write_text
from haf.settings import EvaluationSettings

log = start(snakemake, "haf.claims")
ev = EvaluationSettings.from_config(snakemake.params.evaluation)
predictions = (
    load_predictions(snakemake.input.predictions)
    if len(snakemake.input.predictions)
    else pd.DataFrame(columns=list(COLUMNS))
)
masked = load_masked(snakemake.input.masked) if len(snakemake.input.masked) else None
aligned = {}
for path in snakemake.input.aligned:
    match = re.search(r"fold_(\d+)", str(path))
    if match is None:
        raise ValueError(f"{path}: cannot tell the fold of an aligned.npz outside a fold_<k> folder")
    aligned[int(match.group(1))] = read_aligned(path)
repeats = read_repeats(snakemake.input.folds)
n_repeats, k = cv_shape(repeats)
grid = cohort_grid(
    read_cohort_survival(snakemake.input.folds, snakemake.input.targets), int(ev.td_auc_points)
)
result = build_claims(
    predictions,
    masked,
    aligned,
    dict(snakemake.params.methods),
    grid=grid,
    repeats=repeats,
    rule=ev.threshold,
    n_boot=int(ev.bootstrap),
    seed=int(ev.bootstrap_seed),
    flat_margin=float(ev.claims_flat_margin),
    test_train_ratio=part_size_ratio(read_folds(snakemake.input.folds)),
)
write_csv(snakemake.output.csv, result.table)
notes = claims_notes(
    result.left_out,
    repeats=n_repeats,
    k=k,
    n_boot=int(ev.bootstrap),
    flat_margin=float(ev.claims_flat_margin),
    synthetic=snakemake.params.synthetic,
)
title = f"{synthetic_prefix(snakemake.params.synthetic)}Claims of the HAF paper tested on this run"
write_text(
    snakemake.output.md,
    markdown_table(claims_display(result.table), CLAIMS_MD_COLUMNS, title=title, notes=notes),
)
for _, row in result.table.iterrows():
    log.info(
        "%-12s %-60s effect %+.3f [%+.3f, %+.3f] p %.3g; folds %+.3f [%+.3f, %+.3f] -> %s",
        row["claim"][:12],
        row["metric"][:60],
        row["effect"],
        row["ci_low"],
        row["ci_high"],
        row["p"],
        row["fold_effect"],
        row["fold_ci_low"],
        row["fold_ci_high"],
        row["verdict"],
    )
