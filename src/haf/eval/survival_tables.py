"""Per-method survival evaluation of the cross-validated predictions (table and figure data).

Per fold: test predictions against that fold's training part (for IPCW).  Pooled: all folds' test
predictions together (every patient once), with the censoring distribution estimated on the whole
cohort (the union of the folds' training parts).  One time grid serves every method and fold: evenly
spaced between the 10th and 90th percentiles of the cohort's death times, clamped inside every
fold's training and test follow-up ranges; Uno's C is truncated at the end of that common window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from haf.eval.data import is_risk_only
from haf.eval.survival import (
    DAYS_PER_YEAR,
    breslow_event_probability,
    brier_at,
    calibration_bins,
    clamp_times,
    event_time_grid,
    follow_up_window,
    harrell_c,
    logrank,
    number_at_risk,
    td_auc,
    uno_c,
)

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


def survival_metrics(rows: pd.DataFrame, grid: CohortGrid) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Harrell/Uno C per fold and pooled, td-AUC per fold and pooled (long table)."""
    per_fold, curves = [], []
    for fold, frows in rows.groupby("fold", sort=True):
        test = _test(frows)
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
            )
        )
        curves.append(pd.DataFrame(dict(scope=f"fold_{int(fold)}", time_days=grid.times, auc=auc)))
    test = _test(rows)
    time, event, risk = (
        test["time"].to_numpy(float),
        test["event"].to_numpy(int),
        test["risk"].to_numpy(float),
    )
    auc, mean_auc = td_auc(*grid.everyone, time, event, risk, grid.times)
    curves.append(pd.DataFrame(dict(scope="pooled", time_days=grid.times, auc=auc)))
    folds = pd.DataFrame.from_records(per_fold)
    summary = dict(
        n=len(test),
        n_events=int(event.sum()),
        harrell_c_pooled=harrell_c(time, event, risk),
        uno_c_pooled=uno_c(*grid.everyone, time, event, risk, grid.hi),
        td_auc_mean_pooled=mean_auc,
        tau_days=grid.hi,
    )
    for metric in ("harrell_c", "uno_c", "td_auc_mean"):
        values = folds[metric].to_numpy(float)
        values = values[~np.isnan(values)]
        summary[f"{metric}_fold_mean"] = float(values.mean()) if len(values) else float("nan")
        summary[f"{metric}_fold_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return summary, folds, pd.concat(curves, ignore_index=True)


def risk_groups(rows: pd.DataFrame) -> pd.DataFrame:
    """Pooled test patients split per fold at the median validation risk: ``high`` if risk >= median."""
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
    return pd.concat(parts, ignore_index=True)


def km_summary(groups: pd.DataFrame) -> dict:
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
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Calibration bins and a per-horizon summary (Brier, mean predicted, KM observed) of one method."""
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
