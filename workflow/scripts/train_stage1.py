"""Rule stage1: train every fold's CLAM model of one pathology model (wsi | tma | wsi_tma)."""

from _haf_rule import start

log = start(snakemake, "haf.stage1")

from haf.mil.train import OUTPUT_KEYS, run_stage1_folds  # noqa: E402
from haf.runtime.device import resolve_device, set_torch_threads  # noqa: E402
from haf.settings import Stage1Settings, TrainingSettings  # noqa: E402

set_torch_threads(snakemake.threads)
device = resolve_device(snakemake.params.device)
settings = Stage1Settings.from_config(snakemake.params.stage1)
log.info(
    "stage1 %s folds %s on %s (%d threads)",
    snakemake.wildcards.pmod,
    snakemake.params.folds,
    device,
    snakemake.threads,
)
out = snakemake.output
folds = [int(f) for f in snakemake.params.folds]
run_stage1_folds(  # every fold side by side on one shared bag store (stacked runtime)
    snakemake.wildcards.pmod,
    folds,
    manifest=snakemake.input.manifest,
    targets=snakemake.input.targets,
    folds_path=snakemake.input.folds,
    tma_index=snakemake.input.tma_index[0] if snakemake.input.tma_index else None,
    section=settings,
    device=device,
    outputs_per_fold=[{key: getattr(out, key)[k] for key in OUTPUT_KEYS} for k in range(len(folds))],
    encoder=snakemake.params.encoder,
    selection=TrainingSettings.from_config(snakemake.params.training),
    progress=True,
)
