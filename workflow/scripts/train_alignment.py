"""Rule ``align``: Stage 2 projectors (GA or CLIP) of one fold -> projectors.pt, aligned.npz, train_log.tsv."""

from _haf_rule import start

log = start(snakemake, "haf.align")

from haf.alignment.train import train_alignment, write_alignment_outputs  # noqa: E402
from haf.artifacts.fold_inputs import FoldInputs  # noqa: E402
from haf.runtime.device import resolve_device, set_torch_threads  # noqa: E402
from haf.settings import Stage2Settings  # noqa: E402

set_torch_threads(snakemake.threads)
device = resolve_device(snakemake.params.device)
align = snakemake.wildcards.align
inputs = FoldInputs.load(snakemake.input.fold_inputs)
log.info("Stage 2 %s alignment, fold %d, %d patients, device %s", align, inputs.fold, inputs.n, device)
result = train_alignment(
    inputs, align, Stage2Settings.from_config(snakemake.params.stage2), device, progress=True
)
write_alignment_outputs(
    {
        "projectors": snakemake.output.projectors,
        "aligned": snakemake.output.aligned,
        "train_log": snakemake.output.train_log,
    },
    result,
    inputs,
    device,
)
