"""Rule fig_attention: Stage 1 attention of chosen test patients (TMA cores with tile attention and the
top-k tiles, WSI patch scatter); every instance of the drawn patients in the CSV (haf.eval.attention)."""

from _haf_rule import start

from haf.eval.attention import draw_attention
from haf.eval.figures import title_prefix
from haf.eval.tables import write_csv
from haf.settings import EvaluationSettings

log = start(snakemake, "haf.fig_attention")
ev = EvaluationSettings.from_config(snakemake.params.evaluation)
files = dict(zip(snakemake.params.pmods, snakemake.input.attention, strict=True))
fold = int(snakemake.params.fold)
table = draw_attention(
    files,
    fold=fold,
    patients=ev.attention_patients,
    top_k=int(ev.attention_top_k),
    labels=dict(snakemake.params.labels),
    pdf=snakemake.output.pdf,
    png=snakemake.output.png,
    title=f"{title_prefix(snakemake.params.synthetic)}Stage 1 (CLAM) attention, fold {fold}: where each "
    "pathology model looked (colour: attention percentile within the bag; numbers: the most attended)",
)
write_csv(snakemake.output.csv, table)
log.info(
    "attention of %d (model, patient) pairs drawn", table[["pmod", "patient_id"]].drop_duplicates().shape[0]
)
