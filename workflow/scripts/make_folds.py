"""Rule folds: the split file, written once, read by every method (thin adapter)."""

from pathlib import Path

from _haf_rule import start

from haf.artifacts.folds import write_folds
from haf.artifacts.targets import read_targets
from haf.cohort.folds import fold_scheme, make_folds
from haf.io.splits import read_split
from haf.settings import CVSettings

log = start(snakemake, "haf.folds")
cv = CVSettings.from_config(snakemake.params.cv)
targets = read_targets(snakemake.input.targets)
split = split_path = None
scheme = fold_scheme(cv.scheme)
if scheme.split_file is not None:
    split_path = Path(snakemake.params.data_root) / snakemake.params.paths["splits"] / scheme.split_file
    split = read_split(split_path)
    log.info("official split %s: %d patients", split_path, len(split))
folds, counts = make_folds(targets, cv, split=split, split_source=split_path or "split")
write_folds(snakemake.output[0], folds)
log.info("wrote %s: %d rows, %d folds", snakemake.output[0], len(folds), folds["fold"].nunique())
