"""Rule ``extract_tma``: TMA core images -> one h5 bag of tile embeddings per patient, and the index."""

from _haf_rule import start

log = start(snakemake, "haf.extract_tma")

from haf.extract.extraction import extract_tma_features  # noqa: E402
from haf.runtime.device import resolve_device  # noqa: E402
from haf.settings import ExtractSettings  # noqa: E402

device = resolve_device(snakemake.params.device)
log.info("extract_tma on %s with %d thread(s)", device, snakemake.threads)
extract_tma_features(
    manifest=snakemake.input.manifest,
    index_path=snakemake.output.index,
    h5_dir=snakemake.params.h5_dir,
    section=ExtractSettings.from_config(snakemake.params.extract),
    device=device,
    threads=snakemake.threads,
    progress=True,
)
