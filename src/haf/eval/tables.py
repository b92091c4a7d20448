"""Tables 1 and 2 of the HAF paper and the writers for CSV, Markdown and LaTeX.

Table 1 groups (as in the paper, with one group added for time-to-event models):

* Pathology-only baselines: family ``clam``.
* Fusion models and HAF variants: family ``fusion`` trained with detachment and the binary loss.
* Comparable multimodal methods: the comparator families trained with the binary loss.
* Time-to-event (Cox) models: every method trained with the Cox loss (``haf_cox``, ``parachute``).
  Their accuracy rests on a cut of a risk score (median validation risk under the fixed rule), not on
  a calibrated probability, so they are kept apart from the binary classifiers.

No-detach ablations are not in Table 1; Table 2 shows them beside their detached counterparts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from haf.artifacts.files import atomic_path
from haf.eval.binary import binary_metrics, bootstrap_ci, fold_metrics, paired_bootstrap, pooled_by_repeat
from haf.eval.data import method_predictions
from haf.eval.repeats import CV_REPEAT, Repeats, summarise_repeats, with_repeat, within_repeats
from haf.methods import TABLE2_SETTINGS, TABLE2_VARIANTS, is_joint, table2_methods

log = logging.getLogger(__name__)

GROUPS: tuple[str, ...] = (
    "Pathology-only baselines",
    "Fusion models and HAF variants",
    "Comparable multimodal methods",
    "Time-to-event (Cox) models",
)
FOLD_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "majority_accuracy", "auc")


def table1_group(decl: dict[str, Any]) -> str | None:
    """The Table 1 group of a method declaration; None for no-detach ablations (Table 2 only)."""
    if decl["task_loss"] == "cox":
        return GROUPS[3]
    if decl["family"] == "clam":
        return GROUPS[0]
    if decl["family"] == "fusion":
        return None if is_joint(decl) else GROUPS[1]
    return GROUPS[2]


def fmt_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``0.712 ± 0.087``; a dash for a missing value, the mean alone when the std is undefined."""
    if mean is None or np.isnan(mean):
        return "–"
    if std is None or np.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_ci(point: float, low: float, high: float, digits: int = 3) -> str:
    if point is None or np.isnan(point):
        return "–"
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _repeat_counts(per_fold: pd.DataFrame, column: str) -> int:
    """A per-fold count summed within each CV repeat; the repeats' mean (each repeat tests every patient once)."""
    sums = per_fold.groupby(CV_REPEAT)[column].sum()
    if sums.nunique() > 1:
        log.warning("%s differs between CV repeats (%s): the table gives the mean", column, dict(sums))
    return int(round(float(sums.mean())))


def method_summary(
    rows: pd.DataFrame,
    rule: str,
    n_boot: int,
    seed: int,
    repeats: Repeats | None = None,
    *,
    task_loss: str = "bce",
    min_val_patients: int | None = None,
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Fold metrics, their aggregation over folds and CV repeats, and pooled bootstrap CIs of one method.

    Returns the summary, every fold's metrics (with ``cv_repeat``) and one row per repeat (fold mean and
    SD within the repeat, its pooled metrics). With ``min_val_patients`` every fold also gets its usable
    validation patients (``n_val_usable``, :func:`haf.eval.epochs.prediction_val_counts`) and the flag
    ``small_val``; the summary counts the flagged folds (``small_val_folds``).
    """
    per_fold = with_repeat(fold_metrics(rows, rule), repeats)
    flags: dict[str, int] = {}
    if min_val_patients is not None:
        from haf.eval.epochs import prediction_val_counts, small_val_flags

        counts = prediction_val_counts(rows, per_fold["fold"].tolist(), task_loss)
        per_fold["n_val_usable"] = counts["n_val_usable"].to_numpy()
        per_fold["small_val"] = small_val_flags(counts, min_val_patients).to_numpy()
        flags["small_val_folds"] = int(per_fold["small_val"].sum())
    pooled = pooled_by_repeat(rows, rule, repeats)
    summary = dict(
        n_folds=len(per_fold),
        n_test=_repeat_counts(per_fold, "n_test"),
        n_labelled=_repeat_counts(per_fold, "n_labelled"),
        n_label_positive=_repeat_counts(per_fold, "n_label_positive"),
        n_events=_repeat_counts(per_fold, "n_events"),
        **summarise_repeats(per_fold, FOLD_METRICS),
        **bootstrap_ci(pooled, n_boot, seed),
        threshold_rule=per_fold["threshold_rule"].iloc[0] if rule == "fixed" else rule,
        threshold_note="; ".join(sorted(set(per_fold["threshold_note"]))),
        **flags,
    )
    per_repeat = within_repeats(per_fold, FOLD_METRICS)
    for metric in ("accuracy", "balanced_accuracy", "auc"):
        per_repeat[f"{metric}_pooled"] = [_point_metric(pooled[r], metric) for r in per_repeat[CV_REPEAT]]
    per_repeat["n_labelled"] = [len(pooled[r]) for r in per_repeat[CV_REPEAT]]
    return summary, per_fold, per_repeat


def _point_metric(pooled: pd.DataFrame, metric: str) -> float:
    return binary_metrics(
        pooled["label"].to_numpy(dtype=float),
        pooled["risk"].to_numpy(dtype=float),
        pooled["pred"].to_numpy(int),
    )[metric]


@dataclass
class Table1:
    table: pd.DataFrame
    per_fold: pd.DataFrame
    tests: pd.DataFrame
    excluded: list[str] = field(default_factory=list)
    per_repeat: pd.DataFrame = field(default_factory=pd.DataFrame)


TESTS_COLUMNS: tuple[str, ...] = (
    "reference",
    "method",
    "label",
    "metric",
    "n_common",
    "auc_reference",
    "auc_other",
    "delta",
    "delta_ci_low",
    "delta_ci_high",
    "p_value",
)


def build_table1(
    predictions: pd.DataFrame,
    methods: dict[str, dict[str, Any]],
    *,
    rule: str,
    n_boot: int,
    seed: int,
    reference: str = "haf",
    repeats: Repeats | None = None,
    min_val_patients: int | None = None,
) -> Table1:
    """Table 1 rows (grouped), every fold's metrics, and paired tests of ``reference`` vs the others.

    ``repeats`` (fold -> CV repeat, from folds.tsv; None = one repeat): numbers aggregated over repeats
    as in :mod:`haf.eval.repeats`. ``min_val_patients`` (``training.min_val_patients``): flag the folds
    whose validation part had fewer usable patients (``small_val`` per fold, ``small_val_folds`` per
    method; :mod:`haf.eval.epochs`).
    """
    rows, folds, per_repeat, pooled = [], [], [], {}
    excluded = []
    for name, decl in methods.items():
        group = table1_group(decl)
        if group is None:
            excluded.append(name)
            log.info("%s: no-detach ablation, shown in Table 2 only", name)
            continue
        mrows = method_predictions(predictions, name)
        summary, per_fold, repeat_rows = method_summary(
            mrows,
            rule,
            n_boot,
            seed,
            repeats,
            task_loss=decl.get("task_loss", "bce"),
            min_val_patients=min_val_patients,
        )
        rows.append(dict(group=group, method=name, label=decl["label"], **summary))
        folds.append(per_fold.assign(group=group, label=decl["label"]))
        per_repeat.append(repeat_rows.assign(method=name, label=decl["label"]))
        pooled[name] = pooled_by_repeat(mrows, rule, repeats)
    table = pd.DataFrame.from_records(rows)
    table["group_order"] = table["group"].map({g: i for i, g in enumerate(GROUPS)})
    table = table.sort_values("group_order", kind="stable").drop(columns="group_order")
    table = table.reset_index(drop=True)
    for metric in ("accuracy", "balanced_accuracy", "majority_accuracy", "auc"):
        table[metric] = [
            fmt_mean_std(m, s) for m, s in zip(table[f"{metric}_mean"], table[f"{metric}_std"], strict=True)
        ]
    for metric in ("accuracy", "auc"):
        table[f"{metric}_ci"] = [
            fmt_ci(p, lo, hi)
            for p, lo, hi in zip(
                table[f"{metric}_pooled"], table[f"{metric}_ci_low"], table[f"{metric}_ci_high"], strict=True
            )
        ]
    tests = []
    if reference in pooled:
        for name in table["method"]:
            if name == reference:
                continue
            result = paired_bootstrap(pooled[reference], pooled[name], n_boot, seed, metric="auc")
            tests.append(
                dict(
                    reference=reference,
                    method=name,
                    label=methods[name]["label"],
                    metric="auc",
                    **result,
                )
            )
    else:
        log.warning("reference method %r is not among the Table 1 methods: no paired tests", reference)
    tests_frame = pd.DataFrame.from_records(tests, columns=None if tests else list(TESTS_COLUMNS))
    repeat_frame = pd.concat(per_repeat, ignore_index=True) if per_repeat else pd.DataFrame()
    return Table1(table, pd.concat(folds, ignore_index=True), tests_frame, excluded, repeat_frame)


def build_table2(
    predictions: pd.DataFrame,
    methods: dict[str, dict[str, Any]],
    *,
    rule: str,
    repeats: Repeats | None = None,
) -> pd.DataFrame:
    """Table 2: each setting with detachment (X) and without, accuracy and AUC.

    Two no-detach variants (:data:`haf.methods.TABLE2_VARIANTS`): ``X_nodetach`` (CLAM encoders from
    scratch, columns ``*_nodetach``) and ``X_nodetach_warm`` (warm-started from the fold's Stage 1 models,
    columns ``*_nodetach_warm``).  A setting is shown when X and at least one variant ran; a variant that
    did not run has an empty method and a dash.  Fold mean and SD within each CV repeat, averaged over
    repeats (:func:`haf.eval.repeats.summarise_repeats`).
    """
    records = []
    for base, setting in TABLE2_SETTINGS:
        variants = dict(zip([s for s, _ in TABLE2_VARIANTS], table2_methods(base), strict=True))
        ran = {suffix: name for suffix, name in variants.items() if name in methods}
        if base not in methods or not ran:
            log.info(
                "Table 2: %s skipped (needs %s and one of %s)", setting, base, ", ".join(variants.values())
            )
            continue
        record: dict[str, Any] = dict(setting=setting, method_detach=base)
        for suffix, name in variants.items():
            record[f"method_{suffix}"] = name if name in ran.values() else ""
        for suffix, name in (("detach", base), *variants.items()):
            if name not in methods:
                log.info("Table 2: %s has no %s column (%s did not run)", setting, suffix, name)
                for metric in ("accuracy", "auc"):
                    for stat in ("mean", "std", "sd_all_folds"):
                        record[f"{metric}_{suffix}_{stat}"] = np.nan
                    record[f"{metric}_{suffix}"] = fmt_mean_std(np.nan, np.nan)
                record[f"n_folds_{suffix}"] = 0
                record[f"n_cv_repeats_{suffix}"] = 0
                continue
            per_fold = with_repeat(fold_metrics(method_predictions(predictions, name), rule), repeats)
            stats = summarise_repeats(per_fold, ("accuracy", "auc"))
            for metric in ("accuracy", "auc"):
                record[f"{metric}_{suffix}_mean"] = stats[f"{metric}_mean"]
                record[f"{metric}_{suffix}_std"] = stats[f"{metric}_std"]
                record[f"{metric}_{suffix}_sd_all_folds"] = stats[f"{metric}_sd_all_folds"]
                record[f"{metric}_{suffix}"] = fmt_mean_std(stats[f"{metric}_mean"], stats[f"{metric}_std"])
            record[f"n_folds_{suffix}"] = len(per_fold)
            record[f"n_cv_repeats_{suffix}"] = int(per_fold[CV_REPEAT].nunique())
        records.append(record)
    if not records:
        raise ValueError(
            "Table 2 needs at least one pair: a detached method and one of its ablations (X_nodetach or "
            "X_nodetach_warm) for one of fusion_mlp_all, ga, drop, haf in run_methods"
        )
    return pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------------------------------
# Markdown and LaTeX writers (no tabulate/jinja2 in the eval env: plain string building)
# --------------------------------------------------------------------------------------------------
_LATEX_SPECIAL = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return out.replace("±", r"$\pm$").replace("–", "--").replace("→", r"$\rightarrow$")


def _md_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def markdown_table(
    frame: pd.DataFrame,
    columns: dict[str, str],
    *,
    title: str,
    notes: list[str],
    group: str | None = None,
) -> str:
    """A Markdown table with a title line, optional group rows (bold) and notes below."""
    heads = list(columns.values())
    lines = [f"**{title}**", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    current = None
    for _, row in frame.iterrows():
        if group is not None and row[group] != current:
            current = row[group]
            lines.append("| " + f"*{_md_escape(current)}*" + " |" * len(heads))
        lines.append("| " + " | ".join(_md_escape(row[c]) for c in columns) + " |")
    lines.append("")
    lines.extend(notes)
    return "\n".join(lines) + "\n"


def latex_table(
    frame: pd.DataFrame,
    columns: dict[str, str],
    *,
    caption: str,
    label: str,
    notes: list[str],
    group: str | None = None,
) -> str:
    """A booktabs LaTeX table (``\\usepackage{booktabs}``) with group rows and notes."""
    n = len(columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{l" + "c" * (n - 1) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in columns.values()) + r" \\",
        r"\midrule",
    ]
    current = None
    for _, row in frame.iterrows():
        if group is not None and row[group] != current:
            if current is not None:
                lines.append(r"\midrule")
            current = row[group]
            lines.append(rf"\multicolumn{{{n}}}{{l}}{{\textit{{{latex_escape(current)}}}}} \\")
        lines.append(" & ".join(latex_escape(row[c]) for c in columns) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines.append(r"\par\smallskip{\footnotesize " + " ".join(latex_escape(x) for x in notes) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path, ".csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def synthetic_prefix(synthetic: bool) -> str:
    return "SYNTHETIC demo data: " if synthetic else ""


def threshold_sentence(rule: str) -> str:
    if rule == "fixed":
        return (
            "Accuracy at probability 0.5 (risk-only Cox methods: cut at the fold's median validation risk)."
        )
    return (
        "Accuracy at the cut maximising balanced accuracy on each fold's validation part "
        "(chosen without the test part)."
    )


TABLE1_COLUMNS = {
    "label": "Method",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced acc.",
    "majority_accuracy": "Majority acc.",
    "auc": "AUC",
    "auc_ci": "Pooled AUC [95% CI]",
    "n_labelled": "n",
}


def small_val_display(
    table: pd.DataFrame, columns: dict[str, str], min_val_patients: int | None
) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    """Table 1's Markdown/LaTeX frame and columns with the small-validation flag, and its footnote.

    Adds ``small_val`` ("2 †" = two folds flagged) when the table has ``small_val_folds``
    (:func:`build_table1` with ``min_val_patients``); otherwise returns its inputs and no note.
    """
    if min_val_patients is None or "small_val_folds" not in table:
        return table, columns, []
    from haf.eval.epochs import small_val_note

    shown = table.assign(small_val=[f"{int(n)} †" if n else "0" for n in table["small_val_folds"]])
    flagged = [
        f"{label} ({int(n)} of {int(k)} folds)"
        for label, n, k in zip(table["label"], table["small_val_folds"], table["n_folds"], strict=True)
        if n
    ]
    return shown, {**columns, "small_val": "Small val. folds"}, [small_val_note(min_val_patients, flagged)]


TABLE2_COLUMNS = {
    "setting": "Setting",
    "metric": "Metric",
    "with": "w (with detach)",
    **{f"without_{suffix}": label for suffix, label in TABLE2_VARIANTS},
}
"""Table 2's Markdown/LaTeX columns: the detached method, then each no-detach variant (labelled)."""


def table2_columns(table2: pd.DataFrame) -> dict[str, str]:
    """:data:`TABLE2_COLUMNS` without the variants no setting of this table ran (a run with only the
    from-scratch ablations keeps the paper's three columns)."""
    ran = [s for s, _ in TABLE2_VARIANTS if (table2.get(f"method_{s}", pd.Series(dtype=str)) != "").any()]
    return {k: v for k, v in TABLE2_COLUMNS.items() if not k.startswith("without_") or k[8:] in ran}


def cv_sentence(repeats: int, k: int) -> str:
    """How fold metrics were aggregated, naming R and K (every table's first note)."""
    if repeats <= 1:
        return f"{k}-fold cross-validation (1 repeat): mean ± sample SD over the {k} test folds."
    return (
        f"{repeats} repeats of {k}-fold cross-validation: mean ± sample SD over each repeat's {k} test folds, "
        f"averaged over the {repeats} repeats (the SD over all {repeats * k} folds is `*_sd_all_folds` in the CSV)."
    )


def pooled_sentence(repeats: int, n_boot: int, what: str = "Pooled AUC") -> str:
    """How pooled metrics and their bootstrap CIs were computed."""
    if repeats <= 1:
        return (
            f"{what}: all folds' out-of-fold test predictions together, 95% CI by {n_boot} patient-level "
            "bootstrap resamples."
        )
    return (
        f"{what}: each repeat's out-of-fold test predictions together (every patient once per repeat), "
        f"averaged over the {repeats} repeats; 95% CI by {n_boot} patient-level bootstrap resamples, each "
        "scoring every repeat and averaging (the CI reflects patient sampling; the spread over repeats is "
        "`*_pooled_repeat_sd` in the CSV)."
    )


def table1_notes(rule: str, k: int, n_boot: int, synthetic: bool, repeats: int = 1) -> list[str]:
    notes = [
        f"{cv_sentence(repeats, k)} {threshold_sentence(rule)}",
        "Majority acc.: share of the fold's labelled test patients in its larger class (a constant "
        "predictor's best accuracy); balanced acc.: mean of sensitivity and specificity.",
        f"{pooled_sentence(repeats, n_boot)} n: test patients with a binary label, pooled over folds"
        + (" (per repeat)." if repeats > 1 else "."),
    ]
    if synthetic:
        notes.insert(0, "SYNTHETIC DEMO DATA: these numbers say nothing about real patients.")
    return notes


def table2_long(table2: pd.DataFrame) -> pd.DataFrame:
    """Paper layout: two rows (Accuracy, AUC) per setting; one column per no-detach variant."""
    rows = []
    for _, r in table2.iterrows():
        for metric, name in (("accuracy", "Accuracy"), ("auc", "AUC")):
            row = {"setting": r["setting"], "metric": name, "with": r[f"{metric}_detach"]}
            for suffix, _ in TABLE2_VARIANTS:
                row[f"without_{suffix}"] = r.get(f"{metric}_{suffix}", fmt_mean_std(np.nan, np.nan))
            rows.append(row)
    return pd.DataFrame.from_records(rows)


def table2_notes() -> list[str]:
    """What the two no-detach columns are (the Markdown/LaTeX notes and the report caption say the same)."""
    return [
        "w: trained with detachment (Stage 1 CLAM, then Stage 2 alignment, then Stage 3 fusion, each "
        "frozen before the next).",
        "w/o, from scratch (X_nodetach): all stages trained jointly (Eq. 12), the CLAM encoders from a "
        "fresh seeded init, under Stage 3's schedule only.",
        "w/o, warm (Stage 1) (X_nodetach_warm): the same joint training, the CLAM encoders starting from "
        "the fold's Stage 1 models; after Stage 1 it gets what the detached fusion step gets: stage3 "
        "max_epochs, early-stopping and LR-plateau patience, optimiser, batch and the training.selection "
        "rule on the validation score of the fused prediction. Projectors start fresh (no Stage 2 warm "
        "start) in both no-detach variants.",
    ]


# --------------------------------------------------------------------------------------------------
# PARACHUTE Table 5
# --------------------------------------------------------------------------------------------------
METRIC_NAMES = {"cindex": "C-index (Harrell)", "auc": "AUC", "accuracy": "Accuracy"}


def build_table5(
    agg: pd.DataFrame, p_values: list[float], metrics: tuple[str, ...] = ("cindex", "auc")
) -> pd.DataFrame:
    """Table 5 rows for each metric (see :func:`haf.eval.robustness.degradation_table`)."""
    from haf.eval.robustness import degradation_table

    return pd.concat([degradation_table(agg, m, p_values) for m in metrics], ignore_index=True)


ONE_MODEL = "one model at every p"
PER_P_MODELS = "a model per p (trained at p_miss = p)"


def table5_rows(
    agg: pd.DataFrame,
    groups: dict[str, dict[float, str]],
    p_values: list[float],
    labels: dict[str, str],
) -> pd.DataFrame:
    """The aggregated rows Table 5 shows, with ``label`` and ``training``.

    Every method's own rows (one model evaluated at every p) except those of per-p models, which
    appear through their base's per-p block (:func:`haf.eval.robustness.per_p_protocol`), placed
    right after the base's rows; the base's label says "one model at every p", the block's "a model
    per p" (PARACHUTE's protocol).
    """
    from haf.eval.robustness import per_p_protocol

    members = {m for group in groups.values() for m in group.values()}
    per_p = per_p_protocol(agg, groups, p_values)
    own = agg[~agg["method"].isin(members)].assign(training=ONE_MODEL, trained_method=lambda f: f["method"])
    out, placed = [], set()
    for method in dict.fromkeys(own["method"]):
        rows = own[own["method"] == method]
        if method in groups:
            out.append(rows.assign(label=f"{labels.get(method, method)} — {ONE_MODEL}"))
            out.append(per_p_block(per_p, method, labels))
            placed.add(method)
        else:
            out.append(rows.assign(label=labels.get(method, method)))
    out += [per_p_block(per_p, base, labels) for base in groups if base not in placed]
    return pd.concat(out, ignore_index=True)


def per_p_block(per_p: pd.DataFrame, base: str, labels: dict[str, str]) -> pd.DataFrame:
    """The per-p rows of one base method, labelled."""
    from haf.eval.robustness import PER_P

    rows = per_p[per_p["method"] == f"{base}{PER_P}"]
    return rows.assign(label=f"{labels.get(base, base)} — {PER_P_MODELS}", training=PER_P_MODELS)


def _signed(value: float) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:+.3f}"


def format_table5(table5: pd.DataFrame, p_values: list[float]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Display frame and column headings: averages, Delta(a -> b) and Speed(a -> b) per 10%."""
    from itertools import combinations

    from haf.eval.robustness import percent_label

    ps = sorted(float(p) for p in p_values)
    display = pd.DataFrame({"label": table5["label"], "metric_name": table5["metric"].map(METRIC_NAMES)})
    columns = {"label": "Method"}
    for p in ps:
        key = f"avg_{percent_label(p)}"
        display[key] = table5[key].map(lambda v: "–" if np.isnan(v) else f"{v:.3f}")
        columns[key] = f"Avg {percent_label(p)}%"
    pairs = [f"{percent_label(a)}_{percent_label(b)}" for a, b in combinations(ps, 2)]
    for kind, head in (("delta", "Δ"), ("slope", "Speed")):
        for pair in pairs:
            a, b = pair.split("_")
            display[f"{kind}_{pair}"] = table5[f"{kind}_{pair}"].map(_signed)
            columns[f"{kind}_{pair}"] = f"{head}({a}→{b})"
    return display, columns


def table5_notes(p_values: list[float], synthetic: bool, repeats: int = 1, k: int | None = None) -> list[str]:
    notes = [
        "Avg p%: the metric averaged over the three missing-modality scenarios (pathology group missing, "
        "tabular group missing, mixed) at drop probability p. Δ(a→b) = Avg b% − Avg a%; "
        "Speed = Δ per 10 percentage points of missingness (Δ / ((b − a) / 10)). Negative = degradation.",
    ]
    if k is not None:
        notes.insert(0, f"{cv_sentence(repeats, k)} Each fold's value is the mean over its random masks.")
    if synthetic:
        notes.insert(0, "SYNTHETIC DEMO DATA: these numbers say nothing about real patients.")
    return notes


# --------------------------------------------------------------------------------------------------
# Survival table
# --------------------------------------------------------------------------------------------------
SURVIVAL_COLUMNS = {
    "label": "Method",
    "harrell": "Harrell's C (pooled) [95% CI]",
    "harrell_folds": "Harrell's C (folds)",
    "uno": "Uno's C (pooled) [95% CI]",
    "uno_folds": "Uno's C (folds)",
    "td_auc": "Mean AUC(t) [95% CI]",
    "ibs": "Integrated Brier [95% CI]",
    "km": "Log-rank p",
    "n": "n / deaths",
}


def _num(value: float, digits: int = 3) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def _pooled_ci(table: pd.DataFrame, metric: str) -> list[str]:
    """``point [low, high]`` of a pooled survival metric (the point alone when there is no CI column)."""
    if f"{metric}_ci_low" not in table:
        return list(table[f"{metric}_pooled"].map(_num))
    return [
        fmt_ci(p, lo, hi)
        for p, lo, hi in zip(
            table[f"{metric}_pooled"], table[f"{metric}_ci_low"], table[f"{metric}_ci_high"], strict=True
        )
    ]


def format_survival_table(table: pd.DataFrame) -> pd.DataFrame:
    """Display strings of the survival table."""
    return pd.DataFrame(
        dict(
            label=table["label"],
            harrell=_pooled_ci(table, "harrell_c"),
            harrell_folds=[
                fmt_mean_std(m, s)
                for m, s in zip(table["harrell_c_fold_mean"], table["harrell_c_fold_std"], strict=True)
            ],
            uno=_pooled_ci(table, "uno_c"),
            uno_folds=[
                fmt_mean_std(m, s)
                for m, s in zip(table["uno_c_fold_mean"], table["uno_c_fold_std"], strict=True)
            ],
            td_auc=_pooled_ci(table, "td_auc_mean"),
            ibs=_pooled_ci(table, "ibs") if "ibs_pooled" in table else "–",
            km=table["logrank_p"].map(lambda p: "–" if np.isnan(p) else f"{p:.3g}"),
            n=[f"{n} / {e}" for n, e in zip(table["n"], table["n_events"], strict=True)],
        )
    )


def survival_notes(
    grid: Any, k: int, synthetic: bool, repeats: int = 1, n_boot: int | None = None
) -> list[str]:
    notes = [
        cv_sentence(repeats, k),
        "C-index: probability that of two comparable patients the one who died earlier had the higher "
        "predicted risk (0.5 = chance). Pooled: all out-of-fold test predictions together"
        + (f" within each repeat, averaged over the {repeats} repeats" if repeats > 1 else "")
        + "; folds: mean ± SD "
        f"over {k} folds. Uno's C weights pairs by inverse probability of censoring (censoring estimated on "
        f"the training part; pooled: the whole cohort) and is truncated at tau = {grid.hi:.0f} days.",
        f"Mean AUC(t): cumulative/dynamic AUC averaged over {len(grid.times)} times between "
        f"{grid.times.min() if len(grid.times) else float('nan'):.0f} and "
        f"{grid.times.max() if len(grid.times) else float('nan'):.0f} days (inside every fold's training and "
        "test follow-up). Log-rank p: high vs low predicted risk, split at each fold's median validation risk"
        + (f" (median over the {repeats} repeats)." if repeats > 1 else "."),
        "Integrated Brier: IPCW Brier score integrated over the same time grid (lower is better; censoring "
        "from the training part, pooled: the whole cohort), for time-to-event (Cox) methods, whose survival "
        "curve is S0(t)^exp(risk) with a Breslow baseline S0 from the fold's validation part; binary methods "
        "predict only P(death by the label horizon) and have none (–).",
    ]
    if n_boot is not None:
        notes.append(
            f"95% CI: {n_boot} patient-level bootstrap resamples"
            + (", each scoring every repeat and averaging (patient sampling only)" if repeats > 1 else "")
            + "; paired tests against the reference method: survival_tests.csv."
        )
    if synthetic:
        notes.insert(0, "SYNTHETIC DEMO DATA: these numbers say nothing about real patients.")
    return notes
