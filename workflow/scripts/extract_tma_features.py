"""Rule ``extract_tma``: TMA core images -> one h5 bag of tile embeddings per patient, and the index.

With ``extract.precomputed`` set, the bags come from features made elsewhere (TRIDENT/CLAM h5 or .pt,
:mod:`haf.extract.precomputed`) instead: same outputs, no encoder run.
"""

from _haf_rule import start

log = start(snakemake, "haf.extract_tma")

from haf.extract.extraction import extract_tma_features  # noqa: E402
from haf.extract.precomputed import import_precomputed  # noqa: E402
from haf.runtime.device import resolve_device  # noqa: E402
from haf.settings import ExtractSettings  # noqa: E402

section = ExtractSettings.from_config(snakemake.params.extract)
if section.precomputed["dir"]:
    import_precomputed(
        manifest=snakemake.input.manifest,
        index_path=snakemake.output.index,
        h5_dir=snakemake.params.h5_dir,
        section=section,
        tma_maps=snakemake.params.tma_maps,
    )
else:
    device = resolve_device(snakemake.params.device)
    log.info("extract_tma on %s with %d thread(s)", device, snakemake.threads)
    extract_tma_features(
        manifest=snakemake.input.manifest,
        index_path=snakemake.output.index,
        h5_dir=snakemake.params.h5_dir,
        section=section,
        device=device,
        threads=snakemake.threads,
        progress=True,
    )
