"""The claims table: each claim of the HAF paper tested on this run's own outputs, with a verdict.

One row per (claim, metric), computed from the prediction files, the Fig. 2 masked predictions and
the Stage 2 (GA) embeddings of every fold, on any cohort (docs/evaluation.md, "Claims table"):

(a) HAF beats the All-Modality Fusion MLP: pooled AUC and pooled Harrell's C, haf - fusion_mlp_all.
(b) Global alignment improves over no alignment: pooled AUC, ga - fusion_mlp_all and haf - drop.
(c) Random drop + MoFe keeps performance flat as modalities are dropped: the OLS slope of the pooled
    AUC against the test-time drop probability p (Fig. 2's masked predictions), haf's against the
    flatness margin, and haf's minus fusion_mlp_all's.
(d) Adding modalities never hurts: the share of test patients whose loss with all their modalities
    is not worse than with a reduced set, haf minus a model without MoFe (fusion_mlp_all, else ga).
(e) Alignment produces a shared geometry: within-patient cross-modality cosine and the sigma_1^2
    share of a patient's modality embeddings, after - before alignment, test parts of every fold.
(f) Detachment beats joint training: pooled AUC, X - X_nodetach (and X - X_nodetach_warm, the ablation
    warm-started from Stage 1) for each Table 2 pair that ran.

Every effect is averaged over CV repeats; its 95% CI comes from one set of patient resamples scoring
every repeat (:mod:`haf.eval.repeats`); ``p`` is the two-sided bootstrap p of ``effect == null``.
That CI holds every model's predictions fixed. Each row also carries a split-aware check: the same
effect per fold (each fold's test part, e.g. a fold's AUC of a minus b) through the corrected resampled
t-test (:mod:`haf.eval.fold_test`), which sees the variation of the split and of training too.

Verdict (:func:`verdict` of each CI, :func:`combined_verdict` of the two): ``supported`` when both CIs
lie entirely on the claimed side of the null, ``refuted`` when both lie entirely on the other side,
otherwise ``inconclusive``. The null is 0 except
for (c)'s flatness row, whose null is a slope of ``-margin`` (``evaluation.claims_flat_margin``: the
AUC lost per unit of drop probability that still counts as flat). A flat curve at chance proves
nothing, so that row is ``inconclusive`` unless haf's pooled AUC at p = 0 has a CI above 0.5.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from haf.artifacts.aligned import Aligned
from haf.eval.binary import bootstrap_indices, paired_bootstrap, pooled_by_repeat
from haf.eval.data import is_risk_only, method_predictions
from haf.eval.fold_test import corrected_fold_test
from haf.eval.geometry import patient_geometry
from haf.eval.repeats import (
    Repeats,
    bootstrap_p,
    common_patients,
    counts_of,
    percentile_ci,
    repeat_of,
)
from haf.eval.robustness import attach_outcomes
from haf.eval.scores import auc_or_nan, cindex_or_nan
from haf.methods import TABLE2_SETTINGS, table2_methods

log = logging.getLogger(__name__)

VERDICTS: tuple[str, ...] = ("supported", "refuted", "inconclusive")
CLAIM_COLUMNS: tuple[str, ...] = (
    "claim",
    "metric",
    "effect",
    "ci_low",
    "ci_high",
    "p",
    "verdict",
    "fold_effect",
    "fold_ci_low",
    "fold_ci_high",
    "fold_p",
    "n_folds",
    "bootstrap_verdict",
    "fold_verdict",
    "null",
    "direction",
    "methods",
    "n_patients",
    "n_cv_repeats",
    "note",
)
CLAIMS: dict[str, str] = {
    "a": "(a) HAF beats the All-Modality Fusion MLP",
    "b": "(b) Global alignment improves over no alignment",
    "c": "(c) Random drop + MoFe keeps performance flat as modalities are dropped",
    "d": "(d) Adding modalities never hurts",
    "e": "(e) Alignment produces a shared geometry",
    "f": "(f) Detachment beats joint training",
}
NO_MOFE: tuple[str, ...] = ("fusion_mlp_all", "ga")
"""Models without random drop + MoFe that (d) compares haf with, in order of preference."""
BCE_EPS = 1e-7


VERDICT_TOLERANCE = 1e-9
"""A CI bound within this of the null counts as touching it (round-off of identical predictions)."""


def verdict(ci_low: float, ci_high: float, null: float = 0.0, direction: str = "greater") -> str:
    """``supported`` / ``refuted`` / ``inconclusive`` from the CI's position relative to the null.

    ``direction``: the claimed side (``greater``: the effect exceeds the null; ``less``: below it).
    A CI that excludes the null by less than :data:`VERDICT_TOLERANCE`, or is undefined, is inconclusive.
    """
    if direction not in ("greater", "less"):
        raise ValueError(f"direction must be 'greater' or 'less', got {direction!r}")
    if ci_low is None or ci_high is None or np.isnan(ci_low) or np.isnan(ci_high):
        return "inconclusive"
    above, below = ci_low > null + VERDICT_TOLERANCE, ci_high < null - VERDICT_TOLERANCE
    if direction == "greater":
        return "supported" if above else "refuted" if below else "inconclusive"
    return "supported" if below else "refuted" if above else "inconclusive"


@dataclass
class ClaimRow:
    claim: str
    metric: str
    effect: float
    ci_low: float
    ci_high: float
    p: float
    verdict: str
    null: float
    direction: str
    methods: str
    n_patients: int
    n_cv_repeats: int
    note: str = ""
    fold_effect: float = float("nan")
    fold_ci_low: float = float("nan")
    fold_ci_high: float = float("nan")
    fold_p: float = float("nan")
    n_folds: int = 0
    bootstrap_verdict: str = ""
    fold_verdict: str = ""


def combined_verdict(bootstrap: str, fold: str) -> str:
    """``supported`` / ``refuted`` only when the patient bootstrap and the fold-level test agree."""
    return bootstrap if bootstrap == fold and bootstrap in ("supported", "refuted") else "inconclusive"


def with_fold_test(row: ClaimRow, effects: pd.Series, ratio: float, level: float = 0.95) -> ClaimRow:
    """``row`` with the corrected resampled t-test of its per-fold ``effects`` and the combined verdict.

    ``row.verdict`` on entry is the patient bootstrap's; on exit it is :func:`combined_verdict` of that
    and the fold-level verdict (same null and direction), so a split artifact cannot carry a verdict.
    """
    test = corrected_fold_test(effects.to_numpy(dtype=float), ratio, null=row.null, level=level)
    row.fold_effect, row.fold_ci_low, row.fold_ci_high = test.mean, test.ci_low, test.ci_high
    row.fold_p, row.n_folds = test.p, test.n_folds
    row.bootstrap_verdict = row.verdict
    row.fold_verdict = verdict(test.ci_low, test.ci_high, row.null, row.direction)
    row.verdict = combined_verdict(row.bootstrap_verdict, row.fold_verdict)
    return row


def _row(
    key: str,
    metric: str,
    effect: float,
    draws: np.ndarray,
    *,
    methods: str,
    n_patients: int,
    n_cv_repeats: int,
    null: float = 0.0,
    level: float = 0.95,
    note: str = "",
) -> ClaimRow:
    low, high, _ = percentile_ci(draws, level)
    return ClaimRow(
        CLAIMS[key],
        metric,
        float(effect),
        low,
        high,
        bootstrap_p(draws, null),
        verdict(low, high, null),
        null,
        "greater",
        methods,
        n_patients,
        n_cv_repeats,
        note,
    )


# ---------------------------------------------------------------------------------------------
# (a), (b), (f): pooled AUC and Harrell's C differences


def _paired_row(
    key: str, metric: str, result: Mapping[str, Any], a: str, b: str, n_cv_repeats: int, note: str
) -> ClaimRow:
    """A row from a paired bootstrap of ``a`` against ``b`` (null 0: ``a`` is claimed better)."""
    low, high = result["delta_ci_low"], result["delta_ci_high"]
    return ClaimRow(
        CLAIMS[key], metric, result["delta"], low, high, result["p_value"], verdict(low, high), 0.0,
        "greater", f"{a} vs {b}", int(result["n_common"]), n_cv_repeats, note,
    )  # fmt: skip


def fold_scores(rows: pd.DataFrame, metric: str) -> pd.Series:
    """fold -> one method's test-part ``metric`` within that fold (``auc``: labelled patients; ``harrell_c``:
    every test patient); NaN where undefined (one class, no event)."""
    out = {}
    for fold, part in rows[rows["part"] == "test"].groupby("fold", sort=True):
        risk = part["risk"].to_numpy(dtype=float)
        if metric == "auc":
            out[int(fold)] = auc_or_nan(part["label"].to_numpy(dtype=float), risk)
        elif metric == "harrell_c":
            out[int(fold)] = cindex_or_nan(part["time"].to_numpy(float), part["event"].to_numpy(bool), risk)
        else:
            raise ValueError(f"fold metric {metric!r}: expected auc or harrell_c")
    return pd.Series(out, dtype=float)


def fold_differences(predictions: pd.DataFrame, a: str, b: str, metric: str) -> pd.Series:
    """fold -> ``a``'s within-fold ``metric`` minus ``b``'s, on the folds where both are defined."""
    diff = fold_scores(method_predictions(predictions, a), metric) - fold_scores(
        method_predictions(predictions, b), metric
    )
    return diff.dropna()


def auc_difference(
    key: str,
    predictions: pd.DataFrame,
    a: str,
    b: str,
    *,
    rule: str,
    repeats: Repeats | None,
    n_boot: int,
    seed: int,
    ratio: float,
    level: float = 0.95,
) -> ClaimRow:
    """Repeat-averaged pooled AUC of ``a`` minus ``b`` (paired bootstrap, :func:`paired_bootstrap`), with the
    fold-level test of the within-fold AUC differences."""
    pa = pooled_by_repeat(method_predictions(predictions, a), rule, repeats)
    pb = pooled_by_repeat(method_predictions(predictions, b), rule, repeats)
    result = paired_bootstrap(pa, pb, n_boot, seed, metric="auc", level=level)
    note = f"AUC {result['auc_reference']:.3f} vs {result['auc_other']:.3f}"
    row = _paired_row(key, f"pooled AUC, {a} - {b}", result, a, b, len(pa), note)
    return with_fold_test(row, fold_differences(predictions, a, b, "auc"), ratio, level)


def cindex_difference(
    key: str,
    predictions: pd.DataFrame,
    a: str,
    b: str,
    grid: Any,
    *,
    repeats: Repeats | None,
    n_boot: int,
    seed: int,
    ratio: float,
    level: float = 0.95,
) -> ClaimRow:
    """Repeat-averaged pooled Harrell's C of ``a`` minus ``b`` (all test patients, censored ones too), with
    the fold-level test of the within-fold C differences."""
    from haf.eval.survival_tables import pooled_sets, survival_paired

    sa = pooled_sets(method_predictions(predictions, a), grid, repeats)
    sb = pooled_sets(method_predictions(predictions, b), grid, repeats)
    result = survival_paired(sa, sb, grid, n_boot, seed, metrics=("harrell_c",), level=level)["harrell_c"]
    note = f"C {result['value_reference']:.3f} vs {result['value_other']:.3f}"
    row = _paired_row(key, f"pooled Harrell's C, {a} - {b}", result, a, b, len(sa), note)
    return with_fold_test(row, fold_differences(predictions, a, b, "harrell_c"), ratio, level)


# ---------------------------------------------------------------------------------------------
# (c): slope of the pooled AUC against the test-time drop probability


@dataclass
class DropoutAUC:
    """One method's Fig. 2 masked predictions of one CV repeat, as pairwise AUC operators.

    ``pairs[k]``: (n_pos, n_neg) mean over the random masks at ``p[k]`` of the pairwise scores
    (1 if the positive patient's risk is higher, 1/2 if tied): the pooled AUC of a resample with
    multiplicities c is ``c_pos^T pairs[k] c_neg / (sum c_pos sum c_neg)``, averaged over masks.
    """

    ids: list[str]  # labelled test patients, sorted
    positive: np.ndarray  # bool, per id
    p: np.ndarray
    pairs: np.ndarray  # (P, n_pos, n_neg)


def dropout_auc(
    masked: pd.DataFrame, predictions: pd.DataFrame, method: str, repeats: Repeats | None
) -> dict[int, DropoutAUC]:
    """CV repeat -> the pairwise AUC operators of ``method``'s dropout-scenario masked predictions."""
    rows = masked[(masked["method"] == method) & (masked["scenario"] == "dropout")]
    if rows.empty:
        raise ValueError(f"{method}: no masked predictions of the dropout scenario")
    rows = attach_outcomes(rows, predictions)
    rows = rows[rows["label"].notna()].assign(cv_repeat=lambda f: repeat_of(f["fold"], repeats))
    out = {}
    for repeat, part in rows.groupby("cv_repeat", sort=True):
        ids = sorted(part["patient_id"].unique())
        labels = part.drop_duplicates("patient_id").set_index("patient_id").loc[ids, "label"].to_numpy()
        positive = labels == 1
        ps = np.sort(part["p"].unique())
        pairs = []
        for p in ps:
            at_p = part[part["p"] == p]
            wide = at_p.pivot_table(index="repeat", columns="patient_id", values="risk", aggfunc="first")
            if wide.shape[1] != len(ids) or wide.isna().any().any():
                raise ValueError(f"{method} CV repeat {repeat} p={p}: masks do not cover the same patients")
            risk = wide.loc[:, ids].to_numpy(dtype=float)  # (masks, n)
            rp, rn = risk[:, positive], risk[:, ~positive]
            diff = rp[:, :, None] - rn[:, None, :]
            pairs.append(np.where(diff == 0, 0.5, (diff > 0).astype(float)).mean(axis=0))
        out[int(repeat)] = DropoutAUC(ids, positive, ps, np.stack(pairs))
    return out


def _ols_weights(p: np.ndarray) -> np.ndarray:
    centred = p - p.mean()
    return centred / np.sum(centred**2)


def dropout_draws(
    operators: Mapping[int, DropoutAUC], ids: list[str], idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(slope, AUC at the smallest p) of each resample (``idx`` indexes ``ids``), averaged over repeats."""
    counts = counts_of(idx, len(ids))
    slopes, first = [], []
    for op in operators.values():
        where = {pid: i for i, pid in enumerate(op.ids)}
        full = np.zeros((len(counts), len(op.ids)))
        full[:, [where[pid] for pid in ids]] = counts
        cp, cn = full[:, op.positive], full[:, ~op.positive]
        with np.errstate(invalid="ignore", divide="ignore"):
            den = cp.sum(axis=1) * cn.sum(axis=1)
            slope_op = np.tensordot(_ols_weights(op.p), op.pairs, axes=1)
            slopes.append(((cp @ slope_op) * cn).sum(axis=1) / den)
            first.append(((cp @ op.pairs[0]) * cn).sum(axis=1) / den)
    return np.mean(slopes, axis=0), np.mean(first, axis=0)


def fold_slopes(masked: pd.DataFrame, predictions: pd.DataFrame, method: str) -> pd.Series:
    """fold -> OLS slope, against p, of the within-fold AUC (labelled test patients) averaged over the masks.

    The fold-level counterpart of :func:`dropout_draws`' pooled slope; folds with an undefined AUC at
    some p are left out (NaN).
    """
    rows = masked[(masked["method"] == method) & (masked["scenario"] == "dropout")]
    rows = attach_outcomes(rows, predictions)
    rows = rows[rows["label"].notna()]
    out = {}
    for fold, part in rows.groupby("fold", sort=True):
        ps = np.sort(part["p"].unique())
        auc = [
            np.mean(
                [
                    auc_or_nan(m["label"].to_numpy(float), m["risk"].to_numpy(float))
                    for _, m in part[part["p"] == p].groupby("repeat")
                ]
            )
            for p in ps
        ]
        out[int(fold)] = float(_ols_weights(ps) @ np.asarray(auc)) if len(ps) > 1 else float("nan")
    return pd.Series(out, dtype=float)


def slope_rows(
    masked: pd.DataFrame,
    predictions: pd.DataFrame,
    method: str,
    reference: str | None,
    *,
    repeats: Repeats | None,
    n_boot: int,
    seed: int,
    margin: float,
    ratio: float,
    level: float = 0.95,
) -> list[ClaimRow]:
    """(c): ``method``'s AUC slope against ``-margin``, and its slope minus ``reference``'s."""
    ops = dropout_auc(masked, predictions, method, repeats)
    ids = common_patients([pd.DataFrame({"patient_id": o.ids}) for o in ops.values()], f"{method} slope")
    ones = np.arange(len(ids))[None, :]
    idx = bootstrap_indices(len(ids), n_boot, seed)
    slope, auc0 = dropout_draws(ops, ids, idx)
    point, point_auc0 = (float(v[0]) for v in dropout_draws(ops, ids, ones))
    p_grid = ops[next(iter(ops))].p
    auc0_low, auc0_high, _ = percentile_ci(auc0, level)
    row = _row(
        "c",
        f"slope of pooled AUC per unit drop probability (p = {p_grid.min():g} ... {p_grid.max():g}), {method}",
        point,
        slope,
        methods=method,
        n_patients=len(ids),
        n_cv_repeats=len(ops),
        null=-margin,
        level=level,
        note=f"flat within margin {margin:g}; AUC at p = {p_grid.min():g}: {point_auc0:.3f} "
        f"[{auc0_low:.3f}, {auc0_high:.3f}]",
    )
    if row.verdict == "supported" and not auc0_low > 0.5:
        row.verdict = "inconclusive"
        row.note += "; no better than chance without drop, so flatness proves nothing"
    slopes = fold_slopes(masked, predictions, method)
    rows = [with_fold_test(row, slopes.dropna(), ratio, level)]
    if reference is not None:
        ref = dropout_auc(masked, predictions, reference, repeats)
        both = common_patients(
            [pd.DataFrame({"patient_id": o.ids}) for o in (*ops.values(), *ref.values())], "slope difference"
        )
        idx = bootstrap_indices(len(both), n_boot, seed)
        ones = np.arange(len(both))[None, :]
        draws = dropout_draws(ops, both, idx)[0] - dropout_draws(ref, both, idx)[0]
        effect = float(dropout_draws(ops, both, ones)[0][0] - dropout_draws(ref, both, ones)[0][0])
        rows.append(
            _row(
                "c",
                f"AUC slope, {method} - {reference}",
                effect,
                draws,
                methods=f"{method} vs {reference}",
                n_patients=len(both),
                n_cv_repeats=len(ops),
                level=level,
                note="positive: degrades less",
            )
        )
        relative = (slopes - fold_slopes(masked, predictions, reference)).dropna()
        rows[-1] = with_fold_test(rows[-1], relative, ratio, level)
    return rows


# ---------------------------------------------------------------------------------------------
# (d): all modalities not worse than fewer


def _bce(label: np.ndarray, prob: np.ndarray) -> np.ndarray:
    prob = np.clip(np.asarray(prob, dtype=float), BCE_EPS, 1 - BCE_EPS)
    return -(label * np.log(prob) + (1 - label) * np.log(1 - prob))


def not_worse_shares(
    masked: pd.DataFrame, predictions: pd.DataFrame, method: str, repeats: Repeats | None
) -> dict[int, pd.Series]:
    """CV repeat -> per labelled test patient, the share of their reduced masks with loss >= the full set's.

    Full set: the p = 0 prediction (every modality the patient has). Reduced set: a dropout mask at
    p > 0 that removed at least one modality. Loss: binary cross-entropy of ``prob``. Patients with
    no reduced mask (a single modality) are left out (logged).
    """
    rows = masked[(masked["method"] == method) & (masked["scenario"] == "dropout")]
    if rows.empty:
        raise ValueError(f"{method}: no masked predictions of the dropout scenario")
    if rows["prob"].isna().all():
        raise ValueError(f"{method}: a risk-only (Cox) method has no probability for a loss")
    rows = attach_outcomes(rows, predictions)
    rows = rows[rows["label"].notna()].assign(cv_repeat=lambda f: repeat_of(f["fold"], repeats))
    rows = rows.assign(loss=_bce(rows["label"].to_numpy(float), rows["prob"].to_numpy(float)))
    full = rows[rows["p"] == 0].set_index(["cv_repeat", "patient_id"])
    reduced = rows[rows["p"] > 0].join(
        full[["loss", "n_present"]].rename(columns={"loss": "loss_full", "n_present": "n_full"}),
        on=["cv_repeat", "patient_id"],
    )
    reduced = reduced[reduced["n_present"] < reduced["n_full"]]
    reduced = reduced.assign(not_worse=(reduced["loss_full"] <= reduced["loss"]).astype(float))
    out = {}
    for repeat, part in reduced.groupby("cv_repeat", sort=True):
        share = part.groupby("patient_id")["not_worse"].mean().sort_index()
        n_full = int((full.index.get_level_values("cv_repeat") == repeat).sum())
        if len(share) < n_full:
            log.info(
                "%s CV repeat %d: %d of %d labelled test patients never lose a modality (one modality) "
                "and are left out of (d)",
                method,
                repeat,
                n_full - len(share),
                n_full,
            )
        out[int(repeat)] = share
    return out


def never_hurts_row(
    masked: pd.DataFrame,
    predictions: pd.DataFrame,
    method: str,
    reference: str,
    *,
    repeats: Repeats | None,
    n_boot: int,
    seed: int,
    ratio: float,
    level: float = 0.95,
) -> ClaimRow:
    """(d): ``method``'s share of not-worse patients minus ``reference``'s (same masks, same patients)."""
    a = not_worse_shares(masked, predictions, method, repeats)
    b = not_worse_shares(masked, predictions, reference, repeats)
    frames = [s.rename_axis("patient_id").reset_index() for s in (*a.values(), *b.values())]
    ids = common_patients(frames, "never-hurts shares")
    idx = bootstrap_indices(len(ids), n_boot, seed)
    counts = counts_of(idx, len(ids))
    diffs = [a[r].loc[ids].to_numpy() - b[r].loc[ids].to_numpy() for r in sorted(a)]
    draws = np.mean([(counts * d).sum(axis=1) / counts.sum(axis=1) for d in diffs], axis=0)
    effect = float(np.mean([d.mean() for d in diffs]))
    share_a = float(np.mean([a[r].loc[ids].mean() for r in a]))
    share_b = float(np.mean([b[r].loc[ids].mean() for r in b]))
    test = method_predictions(predictions, method)
    test = test[test["part"] == "test"]
    test = test.assign(cv_repeat=repeat_of(test["fold"], repeats)).set_index(["cv_repeat", "patient_id"])
    per_fold = pd.concat(
        [
            pd.DataFrame({"fold": test.loc[r].loc[ids, "fold"].to_numpy(), "diff": d})
            for r, d in zip(sorted(a), diffs, strict=True)
        ]
    )
    row = _row(
        "d",
        f"share of test patients not worse with all their modalities than with fewer, {method} - {reference}",
        effect,
        draws,
        methods=f"{method} vs {reference}",
        n_patients=len(ids),
        n_cv_repeats=len(a),
        level=level,
        note=f"share {share_a:.3f} vs {share_b:.3f} (binary cross-entropy; each patient's reduced masks averaged)",
    )
    return with_fold_test(row, per_fold.groupby("fold")["diff"].mean(), ratio, level)


# ---------------------------------------------------------------------------------------------
# (e): shared geometry before vs after alignment (the per-patient numbers: haf.eval.geometry)


def geometry_rows(
    aligned: Mapping[int, Aligned],
    *,
    repeats: Repeats | None,
    n_boot: int,
    seed: int,
    ratio: float,
    level: float = 0.95,
) -> list[ClaimRow]:
    """(e): after - before of the within-patient cosine and sigma_1^2 share, test parts of every fold."""
    frames = []
    for fold, a in aligned.items():
        g = patient_geometry(a, "test")
        frames.append(g.assign(fold=int(fold)))
    geometry = pd.concat(frames, ignore_index=True)
    geometry["cv_repeat"] = repeat_of(geometry["fold"], repeats)
    per_repeat = {int(r): part.set_index("patient_id") for r, part in geometry.groupby("cv_repeat")}
    for r, part in per_repeat.items():
        if part.index.duplicated().any():
            raise ValueError(f"aligned embeddings: a patient is a test patient of two folds of CV repeat {r}")
    ids = common_patients([p.reset_index() for p in per_repeat.values()], "geometry")
    idx = bootstrap_indices(len(ids), n_boot, seed)
    counts = counts_of(idx, len(ids))
    rows = []
    for name, metric in (
        (
            "cosine",
            "within-patient cross-modality cosine (centred), after - before alignment (GA, test parts)",
        ),
        ("share", "sigma_1^2 share of a patient's modality embeddings (centred), after - before"),
    ):
        diffs = [
            (per_repeat[r].loc[ids, f"{name}_after"] - per_repeat[r].loc[ids, f"{name}_before"]).to_numpy()
            for r in sorted(per_repeat)
        ]
        draws = np.mean([(counts * d).sum(axis=1) / counts.sum(axis=1) for d in diffs], axis=0)
        means = {
            f"{stage}{suffix}": float(
                np.mean([per_repeat[r].loc[ids, f"{name}_{stage}{suffix}"].mean() for r in per_repeat])
            )
            for stage in ("before", "after")
            for suffix in ("", "_raw")
        }
        per_fold = (geometry[f"{name}_after"] - geometry[f"{name}_before"]).groupby(geometry["fold"]).mean()
        rows.append(
            _row(
                "e",
                metric,
                float(np.mean([d.mean() for d in diffs])),
                draws,
                methods="stage2/ga",
                n_patients=len(ids),
                n_cv_repeats=len(per_repeat),
                level=level,
                note=f"before {means['before']:.3f}, after {means['after']:.3f} (uncentred: "
                f"{means['before_raw']:.3f} -> {means['after_raw']:.3f})",
            )
        )
        rows[-1] = with_fold_test(rows[-1], per_fold.dropna(), ratio, level)
    return rows


# ---------------------------------------------------------------------------------------------
# the table


@dataclass
class ClaimsTable:
    table: pd.DataFrame
    left_out: list[str]


def build_claims(
    predictions: pd.DataFrame,
    masked: pd.DataFrame | None,
    aligned: Mapping[int, Aligned] | None,
    methods: Mapping[str, Mapping[str, Any]],
    *,
    grid: Any,
    repeats: Repeats | None,
    rule: str,
    n_boot: int,
    seed: int,
    flat_margin: float,
    test_train_ratio: float,
    level: float = 0.95,
) -> ClaimsTable:
    """Every claim row whose methods ran; ``left_out`` says which rows could not be computed and why.

    ``test_train_ratio``: mean test/training part size of the folds
    (:func:`haf.eval.fold_test.part_size_ratio`), the fold-level test's correlation correction.
    """
    have = set(predictions["method"].unique())
    have_masked = set() if masked is None else set(masked.loc[masked["scenario"] == "dropout", "method"])
    rows: list[ClaimRow] = []
    left_out: list[str] = []
    kw = dict(repeats=repeats, n_boot=n_boot, seed=seed, ratio=test_train_ratio, level=level)

    def need(label: str, names: list[str], pool: set[str]) -> bool:
        missing = [m for m in names if m not in pool]
        if missing:
            left_out.append(f"{label}: {', '.join(missing)} did not run")
        return not missing

    if need("(a) AUC and Harrell's C, haf - fusion_mlp_all", ["haf", "fusion_mlp_all"], have):
        rows.append(auc_difference("a", predictions, "haf", "fusion_mlp_all", rule=rule, **kw))
        rows.append(cindex_difference("a", predictions, "haf", "fusion_mlp_all", grid, **kw))
    if need("(b) AUC, ga - fusion_mlp_all", ["ga", "fusion_mlp_all"], have):
        rows.append(auc_difference("b", predictions, "ga", "fusion_mlp_all", rule=rule, **kw))
    if need("(b) AUC, haf - drop", ["haf", "drop"], have):
        rows.append(auc_difference("b", predictions, "haf", "drop", rule=rule, **kw))
    if need("(c) AUC slope of haf (Fig. 2 masked predictions)", ["haf"], have_masked):
        reference = "fusion_mlp_all" if "fusion_mlp_all" in have_masked else None
        if reference is None:
            left_out.append("(c) AUC slope, haf - fusion_mlp_all: fusion_mlp_all has no masked predictions")
        rows += slope_rows(masked, predictions, "haf", reference, margin=flat_margin, **kw)
    no_mofe = next((m for m in NO_MOFE if m in have_masked), None)
    if no_mofe is None:
        left_out.append("(d) never hurts: neither fusion_mlp_all nor ga has masked predictions")
    elif need("(d) never hurts", ["haf"], have_masked):
        if any(is_risk_only(method_predictions(predictions, m)) for m in ("haf", no_mofe)):
            left_out.append("(d) never hurts: a risk-only (Cox) method has no probability for the loss")
        else:
            rows.append(never_hurts_row(masked, predictions, "haf", no_mofe, **kw))
    if aligned:
        rows += geometry_rows(aligned, **kw)
    else:
        left_out.append("(e) shared geometry: no aligned embeddings")
    pairs = [(base, ablation) for base, _ in TABLE2_SETTINGS for ablation in table2_methods(base)]
    ran = [(a, b) for a, b in pairs if a in have and b in have]
    if not ran:
        left_out.append("(f) detachment: no Table 2 pair X / X_nodetach ran")
    for a, b in ran:
        rows.append(auc_difference("f", predictions, a, b, rule=rule, **kw))
    table = pd.DataFrame([asdict(r) for r in rows], columns=list(CLAIM_COLUMNS))
    for note in left_out:
        log.info("claims table: left out %s", note)
    return ClaimsTable(table, left_out)


CLAIMS_MD_COLUMNS = {
    "claim": "Claim",
    "metric": "Metric",
    "effect_str": "Effect",
    "ci": "95% CI",
    "p_str": "p",
    "fold_ci": "Fold-level 95% CI",
    "fold_p_str": "Fold p",
    "verdict": "Verdict",
}


def claims_display(table: pd.DataFrame) -> pd.DataFrame:
    """Display strings of the claims table."""

    def num(v: float) -> str:
        return "–" if v is None or np.isnan(v) else f"{v:+.3f}"

    return table.assign(
        effect_str=table["effect"].map(num),
        ci=[
            "–" if np.isnan(lo) or np.isnan(hi) else f"[{lo:+.3f}, {hi:+.3f}]"
            for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)
        ],
        p_str=table["p"].map(lambda p: "–" if np.isnan(p) else f"{p:.3g}"),
        fold_ci=[
            "–" if np.isnan(lo) or np.isnan(hi) else f"[{lo:+.3f}, {hi:+.3f}]"
            for lo, hi in zip(table["fold_ci_low"], table["fold_ci_high"], strict=True)
        ],
        fold_p_str=table["fold_p"].map(lambda p: "–" if np.isnan(p) else f"{p:.3g}"),
    )


def claims_notes(
    left_out: list[str], *, repeats: int, k: int, n_boot: int, flat_margin: float, synthetic: bool
) -> list[str]:
    notes = [
        f"Effects are averaged over {repeats} repeat{'s' if repeats != 1 else ''} of {k}-fold cross-validation "
        f"(pooled out-of-fold metrics per repeat); 95% CI from {n_boot} patient-level bootstrap resamples, each scoring every "
        "repeat (patient sampling only); p: two-sided bootstrap p of effect = null.",
        "Fold-level 95% CI and p: the corrected resampled t-test (Nadeau & Bengio 2003; Bouckaert & Frank "
        "2004) of the per-fold effects (each fold's test part; all repeats' folds), which also covers the "
        "variation of the split and of training that the patient bootstrap holds fixed.",
        "Verdict: supported when both CIs (bootstrap and fold-level) lie entirely on the claimed side of the "
        "null (above it), refuted when both lie entirely on the other side, otherwise inconclusive "
        "(bootstrap_verdict and fold_verdict in the CSV). Null: 0 (no difference), except "
        f"(c)'s slope of haf alone, whose null is -{flat_margin:g} (AUC lost per unit of drop probability "
        "still counted as flat; a flat curve at chance is inconclusive). (d): the null is that haf's share "
        "of patients not hurt by their extra modalities equals the model without MoFe's.",
    ]
    if left_out:
        notes.append("Left out (methods that did not run): " + "; ".join(left_out) + ".")
    if synthetic:
        notes.insert(0, "SYNTHETIC DEMO DATA: these verdicts say nothing about real patients.")
    return notes
