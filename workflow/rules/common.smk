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
from haf.config import check_data_root, data_path, pathology_available  # noqa: E402
from haf.methods import (  # noqa: E402
    active_methods,
    evaluation_methods,
    is_joint,
    is_warm_joint,
    methods_of_kind,
    pathology_needed,
    stage1_models,
    uses_instance_tokens,
)
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
SKSURV_METHODS = methods_of_kind(METHODS, "sksurv")  # classical baselines (rule sksurv)
# Stage 2 runs for the alignments the running fusion methods declare (registry: haf.alignment.losses),
# and for GA, whose embeddings Fig. 3-4 show
FIGURE_ALIGNMENT = "ga"
ALIGNMENTS = sorted(
    {METHODS[m]["align"] for m in FUSION_METHODS} - {"none"} | {FIGURE_ALIGNMENT}
)
# Which pathology modalities the run needs (the running methods declare their modalities) and the
# cohort has (a real download without the TMA core archive, or without the WSI encodings, still runs
# every method that can do without them: the modality is absent for every patient).
PATHOLOGY_AVAILABLE = pathology_available(config)
PATHOLOGY_NEEDED = pathology_needed(METHODS, PATHOLOGY_AVAILABLE)
STAGE1_MODELS = stage1_models(METHODS, PATHOLOGY_NEEDED)
for _m in ("wsi", "tma"):
    if _m not in PATHOLOGY_AVAILABLE:
        print(
            f"HAF-flow: the cohort has no {_m} data (paths in config): {_m} is absent for every patient; "
            "methods that use it run without it",
            file=sys.stderr,
        )
# the method lists of every table and figure (haf.methods.evaluation_methods)
EVAL_METHODS = evaluation_methods(METHODS, config["evaluation"])
MASKED_METHODS = EVAL_METHODS["masked"]


def name_pattern(names):
    """Wildcard regex matching exactly these names (and nothing when the list is empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


wildcard_constraints:
    fold=r"\d+",
    pmod=name_pattern(STAGE1_MODELS),
    align=name_pattern(ALIGNMENTS),


_INVENTORIES = {}


def raw_inventory(source, names_only=False):
    """Path of a raw source's input inventory (docs/cohort.md "Reruns").

    One small TSV per source under results/cohort/inputs/ (files, sizes, mtimes; ``names_only``:
    paths), so a rule reruns exactly when a raw file it reads changed. The first call lists every
    source and rewrites the inventories whose text changed, all before Snakemake looks at any of them
    (it caches the folder's listing).
    """
    if not _INVENTORIES:
        from haf.cohort.inventory import NAME_SOURCES, SOURCES, update_inventory

        for src, names in [(s, False) for s in SOURCES] + [
            (s, True) for s in NAME_SOURCES
        ]:
            _INVENTORIES[(src, names)] = str(
                update_inventory(
                    RES,
                    DATA,
                    config["paths"],
                    src,
                    markers=config["extract"]["markers"],
                    scheme=config["cv"]["scheme"],
                    names_only=names,
                )
            )
    return _INVENTORIES[(source, names_only)]


def raw_inputs(*sources, demo=True):
    """Input function: the inventories of these raw sources (``name.names`` = the names-only one).

    With demo.enabled the raw files are the demo rule's output: its completion record stands for all
    of them (``demo=False``: nothing, for rules that see the demo data only through the manifest).
    """

    def inputs(wildcards):
        if config["demo"]["enabled"]:
            return [f"{DATA}/demo_cohort.json"] if demo else []
        return [
            raw_inventory(s.removesuffix(".names"), names_only=s.endswith(".names"))
            for s in sources
        ]

    return inputs


TABULAR_SOURCES = ("clinical", "pathological", "blood", "icd", "cell_density")
MANIFEST_SOURCES = TABULAR_SOURCES + ("tma_maps", "tma_cores.names", "wsi_h5.names")


def stage1_raw_inputs(wildcards):
    """Stage 1 reads the WSI h5 bags themselves (wsi, wsi_tma); TMA bags come from extract_tma's index."""
    if wildcards.pmod in ("wsi", "wsi_tma"):
        return raw_inputs("wsi_h5", demo=False)(wildcards)
    return []


def fusion_inputs(wildcards):
    """Detached fusion methods read every fold's inputs, plus the frozen Stage 2 projectors if they align."""
    align = METHODS[wildcards.method]["align"]
    inputs = {"fold_inputs": per_fold(f"{RES}/fold_inputs/fold_{{fold}}.npz")}
    if align != "none":
        inputs["projectors"] = per_fold(
            f"{RES}/stage2/{align}/fold_{{fold}}/projectors.pt"
        )
    return inputs


def joint_inputs(wildcards):
    """No-detach methods read every fold's inputs and the bags (manifest, TMA index); a warm-started one
    (init: stage1) also each fold's Stage 1 model of its pathology modalities (stage1_wsi, stage1_tma).
    """
    decl = METHODS[wildcards.method]
    inputs = {
        "fold_inputs": per_fold(f"{RES}/fold_inputs/fold_{{fold}}.npz"),
        "manifest": f"{RES}/cohort/manifest.tsv",
        "tma_index": tma_index_input(wildcards),
    }
    if is_warm_joint(decl):
        for pm in PATHOLOGY_NEEDED:
            if pm in decl["modalities"]:
                inputs[f"stage1_{pm}"] = per_fold(
                    f"{RES}/stage1/{pm}/fold_{{fold}}/model.pt"
                )
    return inputs


def comparator_inputs(wildcards):
    """Comparators read every fold's inputs; a token-level one (tokens: instance) also the bags (manifest,
    TMA index) its instance tokens come from."""
    inputs = {"fold_inputs": per_fold(f"{RES}/fold_inputs/fold_{{fold}}.npz")}
    if uses_instance_tokens(METHODS[wildcards.method]):
        inputs["manifest"] = f"{RES}/cohort/manifest.tsv"
        inputs["tma_index"] = tma_index_input(wildcards)
    return inputs


def comparator_bag_params(wildcards):
    """What reading the bags takes (token-level comparators only; empty for the others)."""
    if not uses_instance_tokens(METHODS[wildcards.method]):
        return {}
    return {
        "wsi_dim": config["stage1"]["wsi_dim"],
        "max_abs_feature": config["stage1"]["max_abs_feature"],
        "available": PATHOLOGY_NEEDED,
    }


def per_fold(template):
    """One path per fold of this run: ``{fold}`` filled in, other wildcards kept (``{method}``, ...).

    Training rules train every fold of a method in one job (stacked: haf.runtime.stacked), so they
    declare each fold's files; asking for one fold's file runs the method's job.
    """
    return [template.replace("{fold}", str(k)) for k in FOLDS]


def per_fold_report(template, labels, **kwargs):
    """per_fold() with each fold's file flagged for the report (``report(...)``), its fold a label."""
    paths = []
    for k, path in zip(FOLDS, per_fold(template)):
        paths.append(report(path, labels={**labels, "fold": str(k)}, **kwargs))
    return paths


def fold_embeddings(wildcards=None):
    """The Stage 1 embeddings the fold inputs take: those of the pathology modalities the run needs."""
    return {
        m: per_fold(f"{RES}/stage1/{m}/fold_{{fold}}/embeddings.npz")
        for m in PATHOLOGY_NEEDED
    }


def tma_index_input(wildcards):
    """The TMA feature index, for the jobs that read TMA bags."""
    pmod = getattr(wildcards, "pmod", None)
    if pmod is not None:
        return (
            [TMA_INDEX]
            if pmod in ("tma", "wsi_tma") and "tma" in PATHOLOGY_NEEDED
            else []
        )
    method = METHODS[wildcards.method]
    return (
        [TMA_INDEX]
        if "tma" in method["modalities"] and "tma" in PATHOLOGY_NEEDED
        else []
    )


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
        f"{RES}/tables/claims.csv",  # rows whose methods do not run are left out (named in claims.md)
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
    if ATTENTION_MODELS:
        targets.append(f"{RES}/figures/attention.pdf")
    targets += [
        f"{RES}/metrics.json",
        f"{RES}/tables/benchmarks.csv",
        f"{RES}/tables/selected_epochs.csv",
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
# fig_attention draws the Stage 1 attention of these pathology models (wsi_tma's is written, not drawn)
ATTENTION_MODELS = [m for m in ("tma", "wsi") if m in STAGE1_MODELS]


def pathology_labels(pmods):
    """Display names of Stage 1 models: the label of the CLAM method that trains one, else e.g. TMA-CLAM."""
    labels = {m: f"{m.upper().replace('_', '+')}-CLAM" for m in pmods}
    for decl in METHODS.values():
        if decl["family"] == "clam" and decl["pathology_model"] in labels:
            labels[decl["pathology_model"]] = decl["label"]
    return labels


def benchmark_jobs():
    """The jobs with a ``benchmark:`` directive this run makes, one dict each (job, rule, benchmark TSV,
    output: one file the job writes, which the benchmarks rule depends on so that it runs after it).
    """
    first = FOLDS[0]
    jobs = []
    # extraction makes the TMA bags of Stage 1 (tma, wsi_tma) and of the joint methods
    if "tma" in PATHOLOGY_NEEDED:
        jobs.append(("extract_tma", "extract_tma", "extract_tma", TMA_INDEX))
    for pmod in STAGE1_MODELS:
        out = f"{stage1_dir(pmod, first)}/train_log.tsv"
        jobs.append((f"stage1 {pmod}", "stage1", f"stage1_{pmod}", out))
    for align in ALIGNMENTS:
        out = f"{RES}/stage2/{align}/fold_{first}/train_log.tsv"
        jobs.append((f"align {align}", "align", f"align_{align}", out))
    for method in FUSION_METHODS + COMPARATOR_METHODS + SKSURV_METHODS:
        kind = (
            "comparator"
            if method in COMPARATOR_METHODS
            else (
                "sksurv"
                if method in SKSURV_METHODS
                else "fusion_joint" if method in JOINT_FUSION_METHODS else "fusion"
            )
        )
        jobs.append(
            (method, kind, method, f"{method_dir(method, first)}/train_log.tsv")
        )
    return [
        {
            "job": j,
            "rule": r,
            "benchmark": f"{LOGS}/benchmarks/{name}.tsv",
            "output": out,
        }
        for j, r, name, out in jobs
    ]


def selected_epoch_models():
    """Every model of the run that keeps one epoch (for selected_epochs), one dict each: its name, label,
    stage, task loss, folds, per-fold train logs, and what its validation patients are counted from
    (predictions; Stage 2: aligned.npz). The sksurv baselines fit no epochs and are named separately.
    """
    models = []
    labels = pathology_labels(STAGE1_MODELS)
    for pmod in STAGE1_MODELS:
        d = f"{RES}/stage1/{pmod}/fold_{{fold}}"
        models.append(
            dict(
                name=f"stage1/{pmod}",
                label=labels[pmod],
                stage="Stage 1 (CLAM)",
                task_loss="bce",
                logs=per_fold(f"{d}/train_log.tsv"),
                counts=per_fold(f"{d}/predictions.tsv"),
            )
        )
    for align in ALIGNMENTS:
        d = f"{RES}/stage2/{align}/fold_{{fold}}"
        models.append(
            dict(
                name=f"stage2/{align}",
                label=f"{align.upper()} alignment",
                stage="Stage 2 (alignment)",
                task_loss=None,
                logs=per_fold(f"{d}/train_log.tsv"),
                counts=per_fold(f"{d}/aligned.npz"),
            )
        )
    for method in FUSION_METHODS + COMPARATOR_METHODS:
        stage = (
            "comparator"
            if method in COMPARATOR_METHODS
            else ("Stage 3, no detach" if method in JOINT_FUSION_METHODS else "Stage 3")
        )
        models.append(
            dict(
                name=method,
                label=METHODS[method]["label"],
                stage=stage,
                task_loss=METHODS[method]["task_loss"],
                logs=per_fold(f"{method_dir(method, '{fold}')}/train_log.tsv"),
                counts=per_fold(f"{method_dir(method, '{fold}')}/predictions.tsv"),
            )
        )
    for model in models:
        model["folds"] = list(FOLDS)
    return models


def eval_params(shows=None, **extra):
    """Params of the table and figure rules (evaluate.smk), built in one place.

    ``shows`` (a key of EVAL_METHODS) adds the declarations of the methods the output shows; every
    one also gets the evaluation section, the SYNTHETIC flag and the fold count.
    """
    params = dict(evaluation=EVAL, synthetic=SYNTHETIC, k=len(FOLDS), **extra)
    if shows is not None:
        params["methods"] = {m: METHODS[m] for m in EVAL_METHODS[shows]}
    return params
