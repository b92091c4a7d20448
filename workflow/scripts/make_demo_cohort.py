"""Rule demo_cohort: write the SYNTHETIC demo cohort in the HANCOCK layout (thin adapter)."""

from pathlib import Path

from _haf_rule import start

from haf.demo import SUMMARY_NAME, generate_demo_cohort
from haf.errors import HafConfigError
from haf.settings import DemoSettings

log = start(snakemake, "haf.demo")
demo = DemoSettings.from_config(snakemake.params.demo)
output = Path(snakemake.output[0])
if output.name != SUMMARY_NAME:
    raise HafConfigError(f"rule demo_cohort must write <data_root>/{SUMMARY_NAME}, got {output}")
if not demo.enabled:
    raise HafConfigError(
        "demo.enabled is false: data_root is meant to be a real HANCOCK download, so the synthetic "
        "demo cohort is not written there. Set demo.enabled: true to generate it."
    )
log.info("SYNTHETIC data: generating the embedded demo cohort (not real patients)")
generate_demo_cohort(
    output.parent,
    n_patients=demo.n_patients,
    seed=demo.seed,
    signal=demo.signal,
    wsi_bag_size=list(demo.wsi_bag_size),
    core_px=demo.core_px,
    markers=snakemake.params.markers,
    paths=snakemake.params.paths,
    control=demo.control,
)
