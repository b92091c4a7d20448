"""Rule stage1: train every fold's CLAM model of one pathology model (wsi | tma | wsi_tma)."""

from _haf_rule import start

log = start(snakemake, "haf.stage1")

from haf.mil.train import run_stage1  # noqa: E402
from haf.runtime.device import resolve_device, set_torch_threads  # noqa: E402
from haf.settings import Stage1Settings  # noqa: E402

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
for k, fold in enumerate(snakemake.params.folds):
    run_stage1(
        pmod=snakemake.wildcards.pmod,
        fold=int(fold),
        manifest=snakemake.input.manifest,
        targets=snakemake.input.targets,
        folds=snakemake.input.folds,
        tma_index=snakemake.input.tma_index[0] if snakemake.input.tma_index else None,
        section=settings,
        device=device,
        encoder=snakemake.params.encoder,
        outputs={
            key: getattr(out, key)[k]
            for key in ("model", "embeddings", "predictions", "train_log", "loss_curve")
        },
        progress=True,
    )
