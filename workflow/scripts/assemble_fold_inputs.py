"""Rule fold_inputs: one fold's FoldInputs from targets, folds, tabular and Stage 1 embeddings (thin adapter)."""

from _haf_rule import start

from haf.artifacts.folds import read_folds
from haf.artifacts.manifest import read_manifest
from haf.artifacts.targets import read_targets
from haf.cohort.assemble import assemble_fold_inputs

log = start(snakemake, "haf.fold_inputs")
fold = int(snakemake.wildcards.fold)
inputs, counts = assemble_fold_inputs(
    fold,
    read_targets(snakemake.input.targets),
    read_folds(snakemake.input.folds),
    snakemake.input.tabular,
    {"wsi": snakemake.input.wsi, "tma": snakemake.input.tma},
    manifest=read_manifest(snakemake.input.manifest),
)
inputs.save(snakemake.output[0])
log.info("wrote %s: %s", snakemake.output[0], counts)
