"""Rules ``fusion`` and ``fusion_joint``: train one fusion method (HAF, a variant or an ablation) on one fold; write its outputs."""

from _haf_rule import start

log = start(snakemake, "haf.fusion")

from haf.fusion.train import train_method, write_run  # noqa: E402
from haf.runtime.device import resolve_device, set_torch_threads  # noqa: E402
from haf.settings import EvaluationSettings, Stage1Settings, Stage2Settings, Stage3Settings  # noqa: E402

set_torch_threads(snakemake.threads)
device = resolve_device(snakemake.params.device)
method = snakemake.wildcards.method
params = {
    "stage1": Stage1Settings.from_config(snakemake.params.stage1),
    "stage2": Stage2Settings.from_config(snakemake.params.stage2),
    "stage3": Stage3Settings.from_config(snakemake.params.stage3),
}
inputs = snakemake.input
bags = None
if "manifest" in inputs.keys():  # no-detach methods re-train the Stage 1 encoders from the bags
    bags = {"manifest": inputs.manifest, "tma_index": inputs.tma_index}
run = train_method(
    method,
    snakemake.params.declaration,
    inputs.fold_inputs,
    params,
    device,
    projectors=inputs.get("projectors"),
    bags=bags,
    progress=True,
)
write_run(
    run,
    {
        "model": snakemake.output.model,
        "predictions": snakemake.output.predictions,
        "masked": snakemake.output.masked,
        "train_log": snakemake.output.train_log,
    },
    seed=params["stage3"].seed,
    evaluation=EvaluationSettings.from_config(snakemake.params.evaluation),
)
