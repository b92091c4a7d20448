"""Per-method survival evaluation of the cross-validated predictions (table and figure data).

Per fold: test predictions against that fold's training part (for IPCW).  Pooled: all folds' test
predictions together (every patient once), with the censoring distribution estimated on the whole
cohort (the union of the folds' training parts).  One time grid serves every method and fold: evenly
spaced between the 10th and 90th percentiles of the cohort's death times, clamped inside every
fold's training and test follow-up ranges; Uno's C is truncated at the end of that common window.

Repeated cross-validation (:mod:`haf.eval.repeats`): per-fold metrics are averaged within each CV
repeat, then over repeats; pooled metrics are computed per repeat (each patient once) and averaged.
Bootstrap CIs and paired tests resample patients once for all repeats (:func:`survival_ci`,
:func:`survival_tests`), scored by :class:`haf.eval.survival_boot.SurvivalScorer`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from haf.eval.binary import bootstrap_indices
from haf.eval.data import is_risk_only
from haf.eval.repeats import (
    CV_REPEAT,
    Repeats,
    bootstrap_p,
    by_repeat,
    common_patients,
    counts_of,
    over_repeats,
    percentile_ci,
    summarise_repeats,
    with_repeat,
)
from haf.eval.survival import (
    DAYS_PER_YEAR,
    breslow_event_probability,
    breslow_survival,
    brier_at,
    calibration_bins,
    clamp_times,
    event_time_grid,
    follow_up_window,
    harrell_c,
    integrated_brier,
    logrank,
    number_at_risk,
    td_auc,
    uno_c,
)
from haf.eval.survival_boot import SURVIVAL_METRICS, SurvivalScorer

log = logging.getLogger(__name__)


@dataclass
class CohortGrid:
    """What depends only on the folds: the common window, the time grid, the IPCW training data."""

    times: np.ndarray  # td-AUC grid (days)
    lo: float
    hi: float  # Uno's tau: end of the common window
    windows: dict[int, tuple[float, float]]
    train: dict[int, tuple[np.ndarray, np.ndarray]]  # fold -> (time, event) of its training part
    everyone: tuple[np.ndarray, np.ndarray]  # the cohort (time, event), for pooled IPCW


def cohort_grid(cohort: pd.DataFrame, n_points: int) -> CohortGrid:
    """Build the common grid from ``read_cohort_survival`` output."""
    windows, train = {}, {}
    for fold, rows in cohort.groupby("fold", sort=True):
        tr = rows[rows["part"] == "train"]
        te = rows[rows["part"] == "test"]
        if tr.empty or te.empty:
            raise ValueError(f"fold {fold} has no training or no test patient in folds.tsv")
        windows[int(fold)] = follow_up_window(tr["time"], te["time"])
        train[int(fold)] = (tr["time"].to_numpy(float), tr["event"].to_numpy(int))
    patients = cohort.drop_duplicates("patient_id")
    lo = max(w[0] for w in windows.values())
    hi = min(w[1] for w in windows.values())
    raw = event_time_grid(patients["time"], patients["event"], n_points)
    times = clamp_times(raw, list(windows.values()))
    if len(times) < len(raw):
        log.info(
            "time grid: %d of %d points kept inside every fold's train and test follow-up [%.0f, %.0f) days",
            len(times),
            len(raw),
            lo,
            hi,
        )
    if len(times) == 0:
        log.warning("time grid is empty after clamping to [%.0f, %.0f) days: no td-AUC", lo, hi)
    return CohortGrid(
        times,
        lo,
        hi,
        windows,
        train,
        (patients["time"].to_numpy(float), patients["event"].to_numpy(int)),
    )


def _test(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["part"] == "test"]


def survival_curves(rows: pd.DataFrame, grid: CohortGrid) -> tuple[pd.DataFrame, np.ndarray | None, str]:
    """Every test row's predicted S(t | x) on the grid, for the integrated Brier score.

    Risk-only (Cox) methods: S0(t) ** exp(risk), S0 by Breslow on the fold's training part if the
    prediction file holds it, else its validation part (as for calibration); a fold whose base part
    has no death or ends before the last grid time gets NaN rows (logged). Binary methods predict
    P(death by the label horizon) only, no survival curve: None. Returns (test rows, (n, T) or None,
    how it was obtained).
    """
    test = _test(rows)
    if not is_risk_only(rows):
        return test, None, "binary method: no survival curve"
    if len(grid.times) < 2:
        return test, None, "fewer than two grid times"
    base_part = "train" if (rows["part"] == "train").any() else "val"
    curves = np.full((len(test), len(grid.times)), np.nan)
    skipped = []
    for fold, frows in rows.groupby("fold", sort=True):
        base = frows[frows["part"] == base_part]
        sel = (test["fold"] == fold).to_numpy()
        s = breslow_survival(base["risk"], base["time"], base["event"], test.loc[sel, "risk"], grid.times)
        if s is None:
            skipped.append(int(fold))
            continue
        curves[sel] = s
    how = f"Breslow baseline on the {base_part} part"
    if skipped:
        log.warning(
            "%s: Breslow baseline undefined on the grid in fold(s) %s (no death or follow-up shorter than "
            "%.0f days in the %s part): no integrated Brier score where they are needed",
            rows["method"].iloc[0],
            skipped,
            grid.times.max(),
            base_part,
        )
        how += f" (undefined in folds {skipped})"
    return test, curves, how


@dataclass
class PooledSet:
    """One CV repeat's pooled test patients of one method (sorted by patient id)."""

    patient_id: np.ndarray
    time: np.ndarray
    event: np.ndarray
    risk: np.ndarray
    survival: np.ndarray | None  # (n, T) predicted S(t | x) on the grid, or None


def pooled_sets(rows: pd.DataFrame, grid: CohortGrid, repeats: Repeats | None = None) -> dict[int, PooledSet]:
    """CV repeat -> its pooled test patients (each once), with their survival curves where defined."""
    test, curves, _ = survival_curves(rows, grid)
    test = with_repeat(test, repeats).reset_index(drop=True)
    out = {}
    for repeat, part in test.groupby(CV_REPEAT, sort=True):
        if part["patient_id"].duplicated().any():
            pid = part.loc[part["patient_id"].duplicated(), "patient_id"].iloc[0]
            raise ValueError(
                f"{rows['method'].iloc[0]}: patient {pid} is a test patient of two folds of CV repeat {repeat}"
            )
        part = part.sort_values("patient_id")
        pos = part.index.to_numpy()
        out[int(repeat)] = PooledSet(
            part["patient_id"].to_numpy(),
            part["time"].to_numpy(float),
            part["event"].to_numpy(int),
            part["risk"].to_numpy(float),
            None if curves is None else curves[pos],
        )
    return out


def _pooled_point(ps: PooledSet, grid: CohortGrid) -> tuple[dict[str, float], np.ndarray]:
    auc, mean_auc = td_auc(*grid.everyone, ps.time, ps.event, ps.risk, grid.times)
    ibs = (
        integrated_brier(*grid.everyone, ps.time, ps.event, ps.survival, grid.times)
        if ps.survival is not None
        else float("nan")
    )
    return (
        dict(
            harrell_c=harrell_c(ps.time, ps.event, ps.risk),
            uno_c=uno_c(*grid.everyone, ps.time, ps.event, ps.risk, grid.hi),
            td_auc_mean=mean_auc,
            ibs=ibs,
        ),
        auc,
    )


def survival_metrics(
    rows: pd.DataFrame, grid: CohortGrid, repeats: Repeats | None = None
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Harrell/Uno C, td-AUC and the integrated Brier score per fold and pooled (long td-AUC table).

    Pooled values are computed in each CV repeat and averaged over repeats (``*_pooled``; with more
    than one repeat also their ``_repeat_sd``, min and max); fold values are averaged within each
    repeat, then over repeats (``*_fold_mean``, ``*_fold_std``; ``*_fold_sd_all_folds``). Curves:
    ``fold_k`` per fold, ``repeat_r`` pooled per repeat (with more than one repeat), ``pooled`` the mean
    over repeats of the repeats' pooled curves.
    """
    test_all, curves_all, ibs_how = survival_curves(rows, grid)
    per_fold, curves = [], []
    for fold in sorted(rows["fold"].unique()):
        sel = (test_all["fold"] == fold).to_numpy()
        test = test_all[sel]
        time, event, risk = (
            test["time"].to_numpy(float),
            test["event"].to_numpy(int),
            test["risk"].to_numpy(float),
        )
        train_time, train_event = grid.train[int(fold)]
        auc, mean_auc = td_auc(train_time, train_event, time, event, risk, grid.times)
        per_fold.append(
            dict(
                fold=int(fold),
                n_test=len(test),
                n_events=int(event.sum()),
                harrell_c=harrell_c(time, event, risk),
                uno_c=uno_c(train_time, train_event, time, event, risk, grid.hi),
                td_auc_mean=mean_auc,
                ibs=float("nan")
                if curves_all is None
                else integrated_brier(train_time, train_event, time, event, curves_all[sel], grid.times),
            )
        )
        curves.append(pd.DataFrame(dict(scope=f"fold_{int(fold)}", time_days=grid.times, auc=auc)))
    folds = with_repeat(pd.DataFrame.from_records(per_fold), repeats)
    tagged = with_repeat(test_all, repeats)
    sets = {}
    points, repeat_curves = {}, {}
    for repeat in sorted(tagged[CV_REPEAT].unique()):
        sel = (tagged[CV_REPEAT] == repeat).to_numpy()
        part = test_all[sel]  # the prediction files' row order (point estimates as without repeats)
        ps = PooledSet(
            part["patient_id"].to_numpy(),
            part["time"].to_numpy(float),
            part["event"].to_numpy(int),
            part["risk"].to_numpy(float),
            None if curves_all is None else curves_all[sel],
        )
        repeat = int(repeat)
        sets[repeat] = ps
        points[repeat], repeat_curves[repeat] = _pooled_point(ps, grid)
    if len(sets) > 1:
        for repeat, auc in repeat_curves.items():
            curves.append(pd.DataFrame(dict(scope=f"repeat_{repeat}", time_days=grid.times, auc=auc)))
    mean_curve = np.mean(np.vstack([repeat_curves[r] for r in sorted(repeat_curves)]), axis=0)
    curves.append(pd.DataFrame(dict(scope="pooled", time_days=grid.times, auc=mean_curve)))
    several = len(sets) > 1
    summary: dict = dict(
        n=int(round(np.mean([len(ps.time) for ps in sets.values()]))),
        n_events=int(round(np.mean([int(ps.event.sum()) for ps in sets.values()]))),
    )
    if several:
        summary["n_cv_repeats"] = len(sets)
    for metric in ("harrell_c", "uno_c", "td_auc_mean", "ibs"):
        spread = over_repeats({r: p[metric] for r, p in points.items()}, f"{metric}_pooled")
        summary.update(spread if several else {f"{metric}_pooled": spread[f"{metric}_pooled"]})
    summary["tau_days"] = grid.hi
    stats = summarise_repeats(folds, ("harrell_c", "uno_c", "td_auc_mean", "ibs"))
    for metric in ("harrell_c", "uno_c", "td_auc_mean", "ibs"):
        summary[f"{metric}_fold_mean"] = stats[f"{metric}_mean"]
        summary[f"{metric}_fold_std"] = stats[f"{metric}_std"]
        summary[f"{metric}_fold_sd_all_folds"] = stats[f"{metric}_sd_all_folds"]
    summary["ibs_status"] = ibs_how
    return summary, folds, pd.concat(curves, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# bootstrap CIs and paired tests (patients resampled once for every CV repeat)


def _positions(ps: PooledSet, ids: list[str]) -> np.ndarray:
    where = {pid: i for i, pid in enumerate(ps.patient_id)}
    return np.array([where[pid] for pid in ids], dtype=int)


def repeat_survival_draws(
    sets: dict[int, PooledSet],
    grid: CohortGrid,
    ids: list[str],
    idx: np.ndarray,
    metrics: tuple[str, ...] = SURVIVAL_METRICS,
) -> dict[str, np.ndarray]:
    """Each resample's metrics (``idx`` indexes ``ids``) in every CV repeat, averaged over repeats."""
    counts = counts_of(idx, len(ids))
    per_repeat = []
    for ps in sets.values():
        pos = _positions(ps, ids)
        scorer = SurvivalScorer(
            *grid.everyone,
            ps.time[pos],
            ps.event[pos],
            ps.risk[pos],
            grid.times,
            grid.hi,
            survival=None if ps.survival is None else ps.survival[pos],
        )
        per_repeat.append(scorer.score(counts, metrics))
    return {m: np.mean([d[m] for d in per_repeat], axis=0) for m in metrics}


def survival_ci(
    sets: dict[int, PooledSet],
    grid: CohortGrid,
    n_boot: int,
    seed: int,
    level: float = 0.95,
    metrics: tuple[str, ...] = SURVIVAL_METRICS,
) -> dict[str, float]:
    """Percentile CIs of the repeat-averaged pooled metrics by patient resampling.

    ``bootstrap_indices(n, n_boot, seed)`` over the patients of every repeat (sorted ids), the same
    resamples for every method (so the CIs and the paired tests agree).
    """
    ids = common_patients(
        [pd.DataFrame({"patient_id": ps.patient_id}) for ps in sets.values()], "survival CI"
    )
    draws = repeat_survival_draws(sets, grid, ids, bootstrap_indices(len(ids), n_boot, seed), metrics)
    out: dict[str, float] = {"n_boot": n_boot}
    for metric in metrics:
        low, high, valid = percentile_ci(draws[metric], level)
        out[f"{metric}_ci_low"], out[f"{metric}_ci_high"], out[f"{metric}_n_boot_valid"] = low, high, valid
    return out


def survival_paired(
    reference: dict[int, PooledSet],
    other: dict[int, PooledSet],
    grid: CohortGrid,
    n_boot: int,
    seed: int,
    metrics: tuple[str, ...] = SURVIVAL_METRICS,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Paired bootstrap of ``metric(reference) - metric(other)`` (repeat-averaged) per metric.

    The patients both methods have in every repeat; the same resamples score both. p: two-sided, the
    rule of :func:`haf.eval.binary.paired_bootstrap`. Each metric's result: n_common, the two
    repeat-averaged values on the common patients, delta, its CI, p and the valid resamples.
    """
    if sorted(reference) != sorted(other):
        raise ValueError(
            f"the two methods cover different CV repeats ({sorted(reference)} vs {sorted(other)})"
        )
    frames = [pd.DataFrame({"patient_id": ps.patient_id}) for ps in (*reference.values(), *other.values())]
    ids = common_patients(frames, "survival paired test")
    idx = bootstrap_indices(len(ids), n_boot, seed)
    ones = np.zeros((1, len(ids)), dtype=int) + np.arange(len(ids))[None, :]
    da = repeat_survival_draws(reference, grid, ids, idx, metrics)
    db = repeat_survival_draws(other, grid, ids, idx, metrics)
    pa = repeat_survival_draws(reference, grid, ids, ones, metrics)
    pb = repeat_survival_draws(other, grid, ids, ones, metrics)
    out = {}
    for metric in metrics:
        delta = da[metric] - db[metric]
        low, high, valid = percentile_ci(delta, level)
        out[metric] = dict(
            n_common=len(ids),
            value_reference=float(pa[metric][0]),
            value_other=float(pb[metric][0]),
            delta=float(pa[metric][0] - pb[metric][0]),
            delta_ci_low=low,
            delta_ci_high=high,
            p_value=bootstrap_p(delta),
            n_boot_valid=valid,
        )
    return out


def survival_references(
    methods: dict[str, dict], reference: str, risk_only: dict[str, bool]
) -> dict[str, str | None]:
    """The reference method of each survival metric's paired tests.

    C-indices and td-AUC: ``reference`` (``evaluation.reference_method``) if it runs, else the first Cox
    method. Integrated Brier score (defined for Cox methods only, which predict a survival curve):
    ``reference`` if it is a Cox method, else ``haf_cox``, else the first Cox method; None when no
    method qualifies.
    """
    cox = [m for m in methods if risk_only.get(m)]
    ranking = reference if reference in methods else (cox[0] if cox else None)
    if reference in cox:
        brier = reference
    elif "haf_cox" in cox:
        brier = "haf_cox"
    else:
        brier = cox[0] if cox else None
    return {"harrell_c": ranking, "uno_c": ranking, "td_auc_mean": ranking, "ibs": brier}


def risk_groups(rows: pd.DataFrame, repeats: Repeats | None = None) -> pd.DataFrame:
    """Pooled test patients split per fold at the median validation risk: ``high`` if risk >= median.

    With ``cv_repeat`` (each patient once per CV repeat).
    """
    parts = []
    for fold, frows in rows.groupby("fold", sort=True):
        val = frows[frows["part"] == "val"]
        if val.empty:
            raise ValueError(
                f"{rows['method'].iloc[0]} fold {fold}: no validation predictions for the median"
            )
        cut = float(np.median(val["risk"]))
        test = _test(frows)
        parts.append(
            test[["patient_id", "fold", "time", "event", "risk"]].assign(
                cut=cut, group=np.where(test["risk"].to_numpy(float) >= cut, "high", "low")
            )
        )
    return with_repeat(pd.concat(parts, ignore_index=True), repeats)


def km_summary(groups: pd.DataFrame) -> dict:
    """Group sizes, deaths and the log-rank test of one set of risk groups.

    With several CV repeats (``cv_repeat``): per repeat, then the mean group sizes and deaths and the
    median chi-square and p over repeats (``logrank_p_repeats``: every repeat's p).
    """
    if CV_REPEAT in groups and groups[CV_REPEAT].nunique() > 1:
        per = [_km_one(g) for _, g in groups.groupby(CV_REPEAT, sort=True)]
        out = {
            k: int(round(np.mean([p[k] for p in per])))
            for k in ("n_high", "n_low", "events_high", "events_low")
        }
        out["logrank_chisq"] = float(np.median([p["logrank_chisq"] for p in per]))
        out["logrank_p"] = float(np.median([p["logrank_p"] for p in per]))
        out["logrank_p_repeats"] = ";".join(f"{p['logrank_p']:.4g}" for p in per)
        return out
    return _km_one(groups)


def _km_one(groups: pd.DataFrame) -> dict:
    chisq, p = logrank(groups["time"], groups["event"], groups["group"])
    high = groups["group"] == "high"
    return dict(
        n_high=int(high.sum()),
        n_low=int((~high).sum()),
        events_high=int(groups.loc[high, "event"].sum()),
        events_low=int(groups.loc[~high, "event"].sum()),
        logrank_chisq=chisq,
        logrank_p=p,
    )


def at_risk_years(groups: dict[str, pd.DataFrame], max_ticks: int = 7) -> np.ndarray:
    """Whole-year times for the number-at-risk row, shared by all panels: 0 .. the longest follow-up."""
    longest = max((float(g["time"].max()) for g in groups.values() if len(g)), default=0.0) / DAYS_PER_YEAR
    step = max(1, int(np.ceil(np.floor(longest) / (max_ticks - 1)))) if longest >= 1 else 1
    return np.arange(0, np.floor(longest) + 1, step, dtype=float)


def km_at_risk(groups: pd.DataFrame, years: np.ndarray) -> pd.DataFrame:
    """Number at risk (and deaths/censorings so far) of each risk group at ``years`` (Kaplan-Meier table)."""
    parts = []
    for name in ("high", "low"):
        sel = groups["group"] == name
        if not sel.any():
            continue
        table = number_at_risk(
            groups.loc[sel, "time"].to_numpy(float),
            groups.loc[sel, "event"].to_numpy(int),
            years * DAYS_PER_YEAR,
        )
        parts.append(pd.DataFrame({"group": name, "years": years, "time": years * DAYS_PER_YEAR, **table}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def predicted_event_probability(
    rows: pd.DataFrame, horizon: float, label_horizon: float | None
) -> tuple[pd.DataFrame | None, str]:
    """Test patients' predicted P(death by horizon), pooled over folds, and how it was obtained.

    Binary methods: their probability, only when ``horizon`` is the label horizon.  Risk-only methods:
    Breslow baseline on the fold's training part if present in the predictions, else its validation
    part.  Returns (None, reason) when undefined.
    """
    if not is_risk_only(rows):
        if label_horizon is None or not np.isclose(horizon, label_horizon):
            return None, "binary probability is P(death by the label horizon) only"
        test = _test(rows)
        return test[["patient_id", "fold", "time", "event"]].assign(
            predicted=test["prob"].to_numpy(float)
        ), "binary probability"
    parts, skipped = [], []
    base_part = "train" if (rows["part"] == "train").any() else "val"
    for fold, frows in rows.groupby("fold", sort=True):
        base = frows[frows["part"] == base_part]
        test = _test(frows)
        prob = breslow_event_probability(
            base["risk"], base["time"], base["event"], test["risk"].to_numpy(float), horizon
        )
        if prob is None:
            skipped.append(int(fold))
            continue
        parts.append(test[["patient_id", "fold", "time", "event"]].assign(predicted=prob))
    if skipped:
        log.warning(
            "%s: Breslow baseline undefined at %g days in fold(s) %s (no death or follow-up too short in the %s part)",
            rows["method"].iloc[0],
            horizon,
            skipped,
            base_part,
        )
    if not parts:
        return None, f"Breslow baseline undefined in every fold's {base_part} part"
    return pd.concat(parts, ignore_index=True), f"Breslow baseline on the {base_part} part" + (
        f" (folds {skipped} skipped)" if skipped else ""
    )


def calibration_table(
    rows: pd.DataFrame,
    grid: CohortGrid,
    horizons: list[float],
    n_bins: int,
    label_horizon: float | None,
    repeats: Repeats | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Calibration bins and a per-horizon summary (Brier, mean predicted, KM observed) of one method.

    With several CV repeats: computed per repeat (each patient once), then every bin's numbers and
    every horizon's Brier score averaged over the repeats (``n_cv_repeats``: how many had the bin).
    """
    parts = by_repeat(rows, repeats)
    if len(parts) == 1:
        return _calibration_one(rows, grid, horizons, n_bins, label_horizon)
    bins, summaries = [], []
    for repeat, part in parts.items():
        b, summary = _calibration_one(part, grid, horizons, n_bins, label_horizon)
        bins.append(b.assign(**{CV_REPEAT: repeat}) if len(b) else b)
        summaries.append(summary.assign(**{CV_REPEAT: repeat}))
    bins_frame = (
        pd.concat([b for b in bins if len(b)], ignore_index=True)
        if any(len(b) for b in bins)
        else pd.DataFrame()
    )
    if len(bins_frame):
        numbers = [
            "n",
            "n_events_by_horizon",
            "predicted_mean",
            "observed",
            "observed_ci_low",
            "observed_ci_high",
        ]
        bins_frame = (
            bins_frame.groupby(["method", "horizon_days", "bin"], sort=True)
            .agg(**{c: (c, "mean") for c in numbers}, n_cv_repeats=(CV_REPEAT, "nunique"))
            .reset_index()
        )
    summary = pd.concat(summaries, ignore_index=True)
    agg = {"status": ("status", lambda v: "; ".join(dict.fromkeys(map(str, v))))}
    for c in ("n", "predicted_mean", "brier"):
        if c in summary:
            agg[c] = (c, "mean")
    summary = summary.groupby(["method", "horizon_days"], sort=False).agg(**agg).reset_index()
    summary["n_cv_repeats"] = len(parts)
    return bins_frame, summary


def _calibration_one(
    rows: pd.DataFrame,
    grid: CohortGrid,
    horizons: list[float],
    n_bins: int,
    label_horizon: float | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    bins, summary = [], []
    method = rows["method"].iloc[0]
    for horizon in horizons:
        inside = len(clamp_times([horizon], list(grid.windows.values()))) == 1
        if not inside:
            summary.append(
                dict(method=method, horizon_days=horizon, status="outside the common follow-up window")
            )
            continue
        pred, how = predicted_event_probability(rows, horizon, label_horizon)
        if pred is None:
            summary.append(dict(method=method, horizon_days=horizon, status=f"not defined: {how}"))
            continue
        b = calibration_bins(
            pred["predicted"].to_numpy(float),
            pred["time"].to_numpy(float),
            pred["event"].to_numpy(bool),
            horizon,
            n_bins,
        )
        bins.append(b.assign(method=method, horizon_days=horizon))
        summary.append(
            dict(
                method=method,
                horizon_days=horizon,
                status=how,
                n=len(pred),
                predicted_mean=float(pred["predicted"].mean()),
                brier=brier_at(
                    *grid.everyone,
                    pred["time"].to_numpy(float),
                    pred["event"].to_numpy(int),
                    pred["predicted"].to_numpy(float),
                    horizon,
                ),
            )
        )
    bins_frame = pd.concat(bins, ignore_index=True) if bins else pd.DataFrame()
    return bins_frame, pd.DataFrame.from_records(summary)
