"""Rule tabular: every fold's tabular matrices, each transform fitted on that fold's training part (thin adapter)."""

from _haf_rule import start

from haf.artifacts.folds import read_folds
from haf.artifacts.manifest import read_manifest
from haf.artifacts.tabular import write_tabular_npz
from haf.cohort.sources import load_tabular_sources
from haf.cohort.tabular import preprocess_fold
from haf.errors import HafInputError
from haf.modalities import TABULAR
from haf.settings import TabularSettings

log = start(snakemake, "haf.tabular")
tab = TabularSettings.from_config(snakemake.params.tabular)
folds = read_folds(snakemake.input.folds)
sources = load_tabular_sources(
    snakemake.params.data_root, snakemake.params.paths, tab.blood_duplicates, tab.blood_outlier
)
manifest = read_manifest(snakemake.input.manifest).set_index("patient_id")
for m in TABULAR:  # the manifest and this rule read the same sources: presence must agree
    listed = set(manifest.index[manifest[f"has_{m}"] == 1])
    found = set(sources.tables[m].index) & set(manifest.index)
    if listed != found:
        diff = sorted(listed ^ found)
        raise HafInputError(
            snakemake.input.manifest,
            f"{m} availability differs from the sources for patients {', '.join(diff[:10])}: "
            "the data changed since the manifest was built; rerun the manifest rule",
            field=f"has_{m}",
        )
for fold, output in zip(snakemake.params.folds, snakemake.output, strict=True):
    assignment = folds.loc[folds["fold"] == fold, ["patient_id", "part"]]
    if assignment.empty:
        raise HafInputError(snakemake.input.folds, f"no rows for fold {fold}", field="fold")
    log.info(
        "fold %d: %d patients; preprocessing %r, icd_min_df %d",
        fold,
        len(assignment),
        tab.preprocessing,
        tab.icd_min_df,
    )
    arrays, _fitted, counts = preprocess_fold(sources.tables, assignment, tab.preprocessing, tab.icd_min_df)
    write_tabular_npz(output, arrays, fold)
    log.info("wrote %s: %s", output, counts)
