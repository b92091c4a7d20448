"""Rule ``sksurv``: fit one classical survival baseline (CoxPH / CoxNet, scikit-survival) on every fold's
training part and write each fold's four outputs."""

from _haf_rule import start

log = start(snakemake, "haf.sksurv")

from haf.artifacts.fold_inputs import FoldInputs  # noqa: E402
from haf.methods import METHOD_FAMILIES, resolve  # noqa: E402
from haf.runtime.device import set_torch_threads  # noqa: E402
from haf.settings import EvaluationSettings, SksurvSettings  # noqa: E402

set_torch_threads(snakemake.threads)
method = snakemake.wildcards.method
declaration = snakemake.params.declaration
fit = resolve(METHOD_FAMILIES[declaration["family"]].fit)
inputs = [FoldInputs.load(path) for path in snakemake.input.fold_inputs]
for inp, path in zip(inputs, snakemake.input.fold_inputs, strict=True):
    log.info("%s fold %d: %d patients from %s", method, inp.fold, inp.n, path)
out = snakemake.output
fit(
    inputs,
    declaration,
    SksurvSettings.from_config(snakemake.params.sksurv),
    EvaluationSettings.from_config(snakemake.params.evaluation),
    [
        {key: getattr(out, key)[k] for key in ("model", "predictions", "masked", "train_log")}
        for k in range(len(inputs))
    ],
    method=method,
)
