"""Rules ``fusion`` and ``fusion_joint``: train one fusion method (HAF, a variant or an ablation) on every
fold at once (the folds side by side); write each fold's outputs."""

from _haf_rule import start

log = start(snakemake, "haf.fusion")

from haf.fusion.train import train_method_folds, write_run  # noqa: E402
from haf.runtime.device import resolve_device, set_torch_threads  # noqa: E402
from haf.settings import (  # noqa: E402
    EvaluationSettings,
    Stage1Settings,
    Stage2Settings,
    Stage3Settings,
    TrainingSettings,
)

set_torch_threads(snakemake.threads)
device = resolve_device(snakemake.params.device)
params = {
    "stage1": Stage1Settings.from_config(snakemake.params.stage1),
    "stage2": Stage2Settings.from_config(snakemake.params.stage2),
    "stage3": Stage3Settings.from_config(snakemake.params.stage3),
}
inputs = snakemake.input
bags = None
if "manifest" in inputs.keys():  # no-detach methods re-train the Stage 1 encoders from the bags
    bags = {
        "manifest": inputs.manifest,
        "tma_index": inputs.tma_index[0] if inputs.tma_index else None,
        "available": list(snakemake.params.pathology),
    }
# init: stage1 (warm start): the folds' Stage 1 models, one named input per pathology modality
stage1_models = {
    pm: list(getattr(inputs, f"stage1_{pm}")) for pm in ("wsi", "tma") if f"stage1_{pm}" in inputs.keys()
}
runs = train_method_folds(
    snakemake.wildcards.method,
    snakemake.params.declaration,
    list(inputs.fold_inputs),
    params,
    device,
    projectors=list(inputs.projectors) if "projectors" in inputs.keys() else None,
    bags=bags,
    stage1_models=stage1_models or None,
    selection=TrainingSettings.from_config(snakemake.params.training),
    progress=True,
)
evaluation = EvaluationSettings.from_config(snakemake.params.evaluation)
out = snakemake.output
for k, run in enumerate(runs):
    files = {key: getattr(out, key)[k] for key in ("model", "predictions", "masked", "train_log")}
    write_run(run, files, seed=params["stage3"].seed, evaluation=evaluation)
