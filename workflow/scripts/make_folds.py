"""Rule folds: the split file, written once, read by every method (thin adapter)."""

from pathlib import Path

from haf.artifacts.folds import write_folds
from haf.artifacts.targets import read_targets
from haf.cohort.folds import make_folds
from haf.io.splits import SPLIT_FILES, read_split
from haf.logs import setup_logging

log = setup_logging(snakemake.log[0], "haf.folds")
cv = snakemake.params.cv
targets = read_targets(snakemake.input.targets)
split = split_path = None
if cv["scheme"] != "kfold":
    split_path = (
        Path(snakemake.params.data_root) / snakemake.params.paths["splits"] / SPLIT_FILES[cv["scheme"]]
    )
    split = read_split(split_path)
    log.info("official split %s: %d patients", split_path, len(split))
folds, counts = make_folds(
    targets,
    scheme=cv["scheme"],
    k=cv["k"],
    seed=cv["seed"],
    val_fraction=cv["val_fraction"],
    split=split,
    split_source=split_path or "split",
)
write_folds(snakemake.output[0], folds)
log.info("wrote %s: %d rows, %d folds", snakemake.output[0], len(folds), folds["fold"].nunique())
