import re
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# The library lives in src/haf; make it importable here even when it is not pip-installed.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from haf.config import (  # noqa: E402
    COMPARATOR_FAMILIES,
    active_methods,
    check_data_root,
    data_path,
    folds,
)

validate(config, schema="../../config/schema.yaml")
check_data_root(config)

DATA = config["data_root"]
RES = config["results"]
LOGS = config["logs"]
FOLDS = folds(config)
METHODS = active_methods(config)
ENCODER = config["extract"]["encoder"]
TMA_INDEX = f"{RES}/features/tma/{ENCODER}/index.tsv"

CLAM_METHODS = [m for m, d in METHODS.items() if d["family"] == "clam"]
FUSION_METHODS = [m for m, d in METHODS.items() if d["family"] == "fusion"]
DETACHED_FUSION_METHODS = [m for m in FUSION_METHODS if METHODS[m]["detach"]]
JOINT_FUSION_METHODS = [m for m in FUSION_METHODS if not METHODS[m]["detach"]]
COMPARATOR_METHODS = [
    m for m, d in METHODS.items() if d["family"] in COMPARATOR_FAMILIES
]
MASKED_METHODS = FUSION_METHODS + COMPARATOR_METHODS


wildcard_constraints:
    fold=r"\d+",
    pmod="wsi|tma|wsi_tma",
    align="ga|clip",


def name_pattern(names):
    """Wildcard regex matching exactly these names (and nothing when the list is empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


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
    to show). Uses the method lists that evaluate.smk defines; called after all includes.
    """
    targets = [
        f"{RES}/tables/table1.csv",
        f"{RES}/figures/fig3_tsne.pdf",
        f"{RES}/figures/fig4_heatmap.pdf",
        f"{RES}/tables/survival_metrics.csv",
    ]
    if TABLE2_METHODS:
        targets.append(f"{RES}/tables/table2.csv")
    if FIGURE_METHODS:
        targets.append(f"{RES}/figures/fig2_dropout.pdf")
    if PARACHUTE_METHODS:
        targets.append(f"{RES}/tables/table5_degradation.csv")
    if SURVIVAL_FIGURE_METHODS:
        targets += [
            f"{RES}/figures/td_auc.pdf",
            f"{RES}/figures/calibration.pdf",
            f"{RES}/figures/km.pdf",
        ]
    return targets
