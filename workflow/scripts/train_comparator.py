"""Rule ``comparator``: train one comparable method (late fusion, attention fusion, MFMF, feature
interaction or PARACHUTE) on one fold and write its four outputs."""

from haf.artifacts.fold_inputs import FoldInputs
from haf.comparators import run_comparator
from haf.logs import setup_logging
from haf.runtime.device import resolve_device, set_torch_threads

log = setup_logging(snakemake.log[0], "comparator")
set_torch_threads(snakemake.threads)
device = resolve_device(snakemake.params.device)
method = snakemake.wildcards.method
inputs = FoldInputs.load(snakemake.input.fold_inputs)
log.info("%s fold %d: %d patients from %s", method, inputs.fold, inputs.n, snakemake.input.fold_inputs)
run_comparator(
    inputs,
    snakemake.params.declaration,
    {"stage3": snakemake.params.stage3, "parachute": snakemake.params.parachute},
    snakemake.params.evaluation,
    {
        "model": snakemake.output.model,
        "predictions": snakemake.output.predictions,
        "masked": snakemake.output.masked,
        "train_log": snakemake.output.train_log,
    },
    method=method,
    device=device,
    progress=True,
)
