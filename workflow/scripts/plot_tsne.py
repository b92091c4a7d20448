"""Rule fig_tsne: Fig. 3, t-SNE of one fold's test-part modality embeddings before/after alignment."""

import pandas as pd
from _haf_rule import start

from haf.artifacts.aligned import read_aligned
from haf.eval.embeddings import stack, tsne_2d
from haf.eval.figures import plot_tsne, title_prefix
from haf.eval.tables import write_csv
from haf.settings import EvaluationSettings

log = start(snakemake, "haf.fig_tsne")
seed = EvaluationSettings.from_config(snakemake.params.evaluation).tsne_seed
aligned = read_aligned(snakemake.input.aligned)
pre, post, modality, patient = stack(aligned, "test")
before = tsne_2d(pre, seed)
after = tsne_2d(post, seed)
n_patients = len(set(patient))
write_csv(
    snakemake.output.csv,
    pd.DataFrame(
        dict(
            patient_id=patient,
            modality=modality,
            before_x=before[:, 0],
            before_y=before[:, 1],
            after_x=after[:, 0],
            after_y=after[:, 1],
        )
    ),
)
plot_tsne(
    before,
    after,
    modality,
    snakemake.output.pdf,
    snakemake.output.png,
    title=f"{title_prefix(snakemake.params.synthetic)}t-SNE of modality embeddings, fold {snakemake.params.fold} "
    f"test part ({n_patients} patients, {len(modality)} patient-modality points)",
)
log.info("t-SNE of %d points (%d test patients) with seed %d", len(modality), n_patients, seed)
