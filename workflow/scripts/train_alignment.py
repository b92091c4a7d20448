"""Rule ``align``: Stage 2 projectors (GA or CLIP) of one fold -> projectors.pt, aligned.npz, train_log.tsv."""

from haf.alignment.train import train_alignment, write_alignment_outputs
from haf.artifacts.fold_inputs import FoldInputs
from haf.logs import setup_logging
from haf.runtime.device import resolve_device, set_torch_threads

log = setup_logging(snakemake.log[0], "align")
set_torch_threads(snakemake.threads)
device = resolve_device(snakemake.params.device)
align = snakemake.wildcards.align
inputs = FoldInputs.load(snakemake.input.fold_inputs)
log.info("Stage 2 %s alignment, fold %d, %d patients, device %s", align, inputs.fold, inputs.n, device)
result = train_alignment(inputs, align, snakemake.params.stage2, device, progress=True)
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
