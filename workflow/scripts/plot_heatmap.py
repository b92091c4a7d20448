"""Rule fig_heatmap: Fig. 4, one test patient's modality embeddings before and after alignment."""

import pandas as pd
from _haf_rule import start

from haf.artifacts.aligned import read_aligned
from haf.eval.embeddings import mean_pairwise_correlation, patient_matrix, representative_patient
from haf.eval.figures import plot_heatmap, title_prefix
from haf.eval.tables import write_csv

log = start(snakemake, "haf.fig_heatmap")
aligned = read_aligned(snakemake.input.aligned)
patient = representative_patient(aligned, "test")
pre, post, modalities = patient_matrix(aligned, patient)
r_pre, r_post = mean_pairwise_correlation(pre), mean_pairwise_correlation(post)
rows = []
for stage, matrix in (("before", pre), ("after", post)):
    for i, m in enumerate(modalities):
        rows += [dict(stage=stage, modality=m, dim=d, value=float(v)) for d, v in enumerate(matrix[i])]
write_csv(snakemake.output.csv, pd.DataFrame(rows))
plot_heatmap(
    pre,
    post,
    modalities,
    snakemake.output.pdf,
    snakemake.output.png,
    title=f"{title_prefix(snakemake.params.synthetic)}Patient {patient} (fold {snakemake.params.fold} test part, "
    f"{len(modalities)} modalities)",
    subtitles=(
        f"Before alignment (mean correlation between modalities r = {r_pre:.2f})",
        f"After global alignment (r = {r_post:.2f})",
    ),
)
log.info(
    "patient %s: %d modalities, mean inter-modality r %.3f before, %.3f after",
    patient,
    len(modalities),
    r_pre,
    r_post,
)
