"""Rule manifest: patient x modality availability and file paths (thin adapter)."""

from _haf_rule import start

from haf.artifacts.manifest import write_manifest
from haf.cohort.manifest import build_manifest
from haf.settings import TabularSettings

log = start(snakemake, "haf.manifest")
params = snakemake.params
manifest, counts = build_manifest(
    params.data_root,
    params.paths,
    params.markers,
    wsi_dim=params.wsi_dim,
    blood_duplicates=TabularSettings.from_config(params.tabular).blood_duplicates,
    blood_outlier_policy=TabularSettings.from_config(params.tabular).blood_outlier,
)
write_manifest(snakemake.output.manifest, manifest, snakemake.output.counts, counts)
log.info("wrote %s (%d patients) and %s", snakemake.output.manifest, len(manifest), snakemake.output.counts)
