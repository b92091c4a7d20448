import re
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# The library lives in src/haf of this checkout (two folders up from this file, which also holds when
# the workflow is used as a Snakemake module from another folder); put it first so that another
# clone's installed haf can never be the one imported here.
sys.path.insert(0, str(Path(workflow.current_basedir).parents[1] / "src"))

from haf.cohort.folds import fold_ids  # noqa: E402
from haf.config import check_data_root, data_path  # noqa: E402
from haf.methods import (
    active_methods,
    evaluation_methods,
    is_joint,
    methods_of_kind,
)  # noqa: E402
from haf.modalities import PATHOLOGY_MODELS  # noqa: E402
from haf.settings import CVSettings  # noqa: E402

validate(config, schema="../../config/schema.yaml")
check_data_root(config)

DATA = config["data_root"]
RES = config["results"]
LOGS = config["logs"]
FOLDS = fold_ids(CVSettings.from_config(config["cv"]))
METHODS = active_methods(config)
ENCODER = config["extract"]["encoder"]
TMA_INDEX = f"{RES}/features/tma/{ENCODER}/index.tsv"

CLAM_METHODS = methods_of_kind(METHODS, "clam")
FUSION_METHODS = methods_of_kind(METHODS, "fusion")
DETACHED_FUSION_METHODS = [m for m in FUSION_METHODS if not is_joint(METHODS[m])]
JOINT_FUSION_METHODS = [m for m in FUSION_METHODS if is_joint(METHODS[m])]
COMPARATOR_METHODS = methods_of_kind(METHODS, "comparator")
# Stage 2 runs for the alignments the running fusion methods declare (registry: haf.alignment.losses),
# and for GA, whose embeddings Fig. 3-4 show
FIGURE_ALIGNMENT = "ga"
ALIGNMENTS = sorted(
    {METHODS[m]["align"] for m in FUSION_METHODS} - {"none"} | {FIGURE_ALIGNMENT}
)
# the method lists of every table and figure (haf.methods.evaluation_methods)
EVAL_METHODS = evaluation_methods(METHODS, config["evaluation"])
MASKED_METHODS = EVAL_METHODS["masked"]


def name_pattern(names):
    """Wildcard regex matching exactly these names (and nothing when the list is empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


wildcard_constraints:
    fold=r"\d+",
    pmod=name_pattern(PATHOLOGY_MODELS),
    align=name_pattern(ALIGNMENTS),


def raw_inputs(wildcards=None):
    """Raw cohort files the cohort rules read: the demo's completion record, or the real files."""
    if config["demo"]["enabled"]:
        return [f"{DATA}/demo_cohort.json"]
    return [str(data_path(config, key)) for key in ("clinical", "pathological")]


def fusion_inputs(wildcards):
    """Detached fusion methods read the fold inputs, plus the frozen Stage 2 projectors if they align."""
    align = METHODS[wildcards.method]["align"]
    inputs = {"fold_inputs": f"{RES}/fold_inputs/fold_{wildcards.fold}.npz"}
    if align != "none":
        inputs["projectors"] = (
            f"{RES}/stage2/{align}/fold_{wildcards.fold}/projectors.pt"
        )
    return inputs


def stage1_dir(pmod, fold):
    return f"{RES}/stage1/{pmod}/fold_{fold}"


def method_dir(method, fold):
    return f"{RES}/methods/{method}/fold_{fold}"


def prediction_file(method, fold):
    """Where a method's per-fold predictions (common format) live."""
    decl = METHODS[method]
    if decl["family"] == "clam":
        return f"{stage1_dir(decl['pathology_model'], fold)}/predictions.tsv"
    return f"{method_dir(method, fold)}/predictions.tsv"


def prediction_files(methods):
    return [prediction_file(m, f) for m in methods for f in FOLDS]


def masked_files(methods):
    return [f"{method_dir(m, f)}/masked.tsv.gz" for m in methods for f in FOLDS]


def all_targets():
    """Every table and figure of the evaluation (rules in evaluate.smk), for `rule all`.

    A table or figure whose methods are not in run_methods is left out (its rule would have nothing
    to show).
    """
    targets = [
        f"{RES}/tables/table1.csv",
        f"{RES}/figures/fig3_tsne.pdf",
        f"{RES}/figures/fig4_heatmap.pdf",
        f"{RES}/tables/survival_metrics.csv",
    ]
    if EVAL_METHODS["table2"]:
        targets.append(f"{RES}/tables/table2.csv")
    if EVAL_METHODS["figure"]:
        targets.append(f"{RES}/figures/fig2_dropout.pdf")
    if EVAL_METHODS["parachute"]:
        targets.append(f"{RES}/tables/table5_degradation.csv")
    if EVAL_METHODS["survival_figures"]:
        targets += [
            f"{RES}/figures/td_auc.pdf",
            f"{RES}/figures/calibration.pdf",
            f"{RES}/figures/km.pdf",
        ]
    return targets


# ---- evaluation (evaluate.smk): what every table and figure needs
EVAL = config["evaluation"]
SYNTHETIC = config["demo"]["enabled"]
TSNE_FOLD = EVAL["tsne_fold"]
if TSNE_FOLD not in FOLDS:
    raise ValueError(
        f"evaluation.tsne_fold: {TSNE_FOLD} is not a fold of this run (folds: {FOLDS})"
    )
ALIGNED = f"{RES}/stage2/{FIGURE_ALIGNMENT}/fold_{TSNE_FOLD}/aligned.npz"
COHORT = dict(folds=f"{RES}/cohort/folds.tsv", targets=f"{RES}/cohort/targets.tsv")


def eval_params(shows=None, **extra):
    """Params of the table and figure rules (evaluate.smk), built in one place.

    ``shows`` (a key of EVAL_METHODS) adds the declarations of the methods the output shows; every
    one also gets the evaluation section, the SYNTHETIC flag and the fold count.
    """
    params = dict(evaluation=EVAL, synthetic=SYNTHETIC, k=len(FOLDS), **extra)
    if shows is not None:
        params["methods"] = {m: METHODS[m] for m in EVAL_METHODS[shows]}
    return params
