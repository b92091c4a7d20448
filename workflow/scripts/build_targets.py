"""Rule targets: binary label by config target.rule, and (time, event) (thin adapter)."""

from pathlib import Path

from _haf_rule import start

from haf.artifacts.manifest import read_manifest
from haf.artifacts.targets import write_targets
from haf.cohort.targets import build_targets
from haf.io.clinical import read_clinical
from haf.settings import TargetSettings

log = start(snakemake, "haf.targets")
params = snakemake.params
target = TargetSettings.from_config(params.target)
clinical_path = Path(params.data_root) / params.paths["clinical"]
manifest = read_manifest(snakemake.input.manifest)
targets, counts = build_targets(
    read_clinical(clinical_path),
    manifest["patient_id"].tolist(),
    rule=target.rule,
    horizon_days=target.horizon_days,
    source=clinical_path,
)
write_targets(snakemake.output[0], targets)
log.info("wrote %s: %s", snakemake.output[0], counts)
