"""Rule ``align``: Stage 2 projectors (GA or CLIP) of every fold at once -> per fold projectors.pt,
aligned.npz, train_log.tsv."""

from _haf_rule import start

log = start(snakemake, "haf.align")

from haf.alignment.train import train_alignment_folds, write_alignment_outputs  # noqa: E402
from haf.artifacts.fold_inputs import FoldInputs  # noqa: E402
from haf.runtime.device import resolve_device, set_torch_threads  # noqa: E402
from haf.settings import Stage2Settings, TrainingSettings  # noqa: E402

set_torch_threads(snakemake.threads)
device = resolve_device(snakemake.params.device)
align = snakemake.wildcards.align
inputs = [FoldInputs.load(path) for path in snakemake.input.fold_inputs]
log.info("Stage 2 %s alignment, folds %s, device %s", align, [i.fold for i in inputs], device)
results = train_alignment_folds(
    inputs,
    align,
    Stage2Settings.from_config(snakemake.params.stage2),
    device,
    selection=TrainingSettings.from_config(snakemake.params.training),
    progress=True,
)
out = snakemake.output
for k, (result, fold_inputs) in enumerate(zip(results, inputs, strict=True)):
    write_alignment_outputs(
        {"projectors": out.projectors[k], "aligned": out.aligned[k], "train_log": out.train_log[k]},
        result,
        fold_inputs,
        device,
    )
