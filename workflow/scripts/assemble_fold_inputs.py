"""Rule fold_inputs: every fold's FoldInputs from targets, folds, tabular and Stage 1 embeddings (thin adapter)."""

from _haf_rule import start

from haf.artifacts.folds import read_folds
from haf.artifacts.manifest import read_manifest
from haf.artifacts.targets import read_targets
from haf.cohort.assemble import assemble_fold_inputs

log = start(snakemake, "haf.fold_inputs")
targets = read_targets(snakemake.input.targets)
folds = read_folds(snakemake.input.folds)
manifest = read_manifest(snakemake.input.manifest)
for k, fold in enumerate(snakemake.params.folds):
    inputs, counts = assemble_fold_inputs(
        fold,
        targets,
        folds,
        snakemake.input.tabular[k],
        {m: getattr(snakemake.input, m)[k] for m in snakemake.params.pathology},
        manifest=manifest,
    )
    inputs.save(snakemake.output[k])
    log.info("wrote %s: %s", snakemake.output[k], counts)
