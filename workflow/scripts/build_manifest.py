"""Rule manifest: patient x modality availability and file paths (thin adapter)."""

from haf.cohort.manifest import build_manifest
from haf.io_utils import write_json, write_tsv
from haf.logs import setup_logging

log = setup_logging(snakemake.log[0], "haf.manifest")
params = snakemake.params
manifest, counts = build_manifest(
    params.data_root,
    params.paths,
    params.markers,
    wsi_dim=params.wsi_dim,
    blood_duplicates=params.tabular["blood_duplicates"],
    blood_outlier_policy=params.tabular["blood_outlier"],
)
write_tsv(snakemake.output.manifest, manifest)
write_json(snakemake.output.counts, counts)
log.info("wrote %s (%d patients) and %s", snakemake.output.manifest, len(manifest), snakemake.output.counts)
