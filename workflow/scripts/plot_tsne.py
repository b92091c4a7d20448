"""Rule fig_tsne: Fig. 3, t-SNE of one fold's test-part modality embeddings before/after alignment,
with the geometry numbers of the claims table's row (e) as its caption (haf.eval.geometry)."""

from _haf_rule import start

from haf.artifacts.aligned import read_aligned
from haf.eval.figures import fig3_tsne, title_prefix
from haf.eval.tables import write_csv
from haf.settings import EvaluationSettings

log = start(snakemake, "haf.fig_tsne")
seed = EvaluationSettings.from_config(snakemake.params.evaluation).tsne_seed
aligned = read_aligned(snakemake.input.aligned)
fold = int(snakemake.params.fold)
test_present = aligned.present[aligned.part == "test"]
title = (
    f"{title_prefix(snakemake.params.synthetic)}t-SNE of modality embeddings, fold {fold} test part "
    f"({int(test_present.any(axis=1).sum())} patients, {int(test_present.sum())} patient-modality points)"
)
points, geometry, caption = fig3_tsne(
    aligned, fold=fold, seed=seed, title=title, pdf=snakemake.output.pdf, png=snakemake.output.png
)
write_csv(snakemake.output.csv, points)
write_csv(snakemake.output.geometry, geometry)
log.info(
    "t-SNE of %d points (%d test patients) with seed %d", len(points), points["patient_id"].nunique(), seed
)
log.info("geometry: %s", caption.replace("\n", " "))
