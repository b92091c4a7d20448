"""Rule ``comparator``: train one comparable method (late fusion, attention fusion, MFMF, feature
interaction or PARACHUTE) on every fold and write each fold's four outputs.  A token-level method
(``tokens: instance``) first takes its instance tokens from the bags (``haf.mil.tokens``)."""

from _haf_rule import start

log = start(snakemake, "haf.comparator")

from haf.artifacts.fold_inputs import FoldInputs  # noqa: E402
from haf.comparators.train import run_comparator_folds  # noqa: E402
from haf.runtime.device import resolve_device, set_torch_threads  # noqa: E402
from haf.settings import EvaluationSettings, ParachuteSettings, Stage3Settings, TrainingSettings  # noqa: E402

set_torch_threads(snakemake.threads)
device = resolve_device(snakemake.params.device)
method = snakemake.wildcards.method
sections = {
    "stage3": Stage3Settings.from_config(snakemake.params.stage3),
    "parachute": ParachuteSettings.from_config(snakemake.params.parachute),
}
evaluation = EvaluationSettings.from_config(snakemake.params.evaluation)
out = snakemake.output
inputs = [FoldInputs.load(path) for path in snakemake.input.fold_inputs]
for inp, path in zip(inputs, snakemake.input.fold_inputs, strict=True):
    log.info("%s fold %d: %d patients from %s", method, inp.fold, inp.n, path)
declaration = snakemake.params.declaration
tokens = None
if "manifest" in snakemake.input.keys():  # tokens: instance: the bags' instance tokens, taken once
    from haf.mil.tokens import open_instance_tokens

    bags = snakemake.params.bags
    tokens = open_instance_tokens(
        {
            "manifest": snakemake.input.manifest,
            "tma_index": snakemake.input.tma_index[0] if snakemake.input.tma_index else None,
            "available": list(bags["available"]),
        },
        sorted({str(p) for inp in inputs for p in inp.patient_id}),
        declaration["modalities"],
        cap=int(declaration["instance_tokens"]),
        seed=int(declaration["instance_seed"]),
        wsi_dim=int(bags["wsi_dim"]),
        max_abs=bags["max_abs_feature"],
    )
run_comparator_folds(  # every fold side by side (stacked runtime), each from its own fold seed
    inputs,
    declaration,
    sections,
    evaluation,
    [
        {key: getattr(out, key)[k] for key in ("model", "predictions", "masked", "train_log")}
        for k in range(len(inputs))
    ],
    method=method,
    device=device,
    selection=TrainingSettings.from_config(snakemake.params.training),
    progress=True,
    tokens=tokens,
)
