"""Survival metrics of the out-of-fold risk scores, all computed with scikit-survival.

* Harrell's C (``concordance_index_censored``) and Uno's C (``concordance_index_ipcw``, censoring
  distribution from the training part, truncated at ``tau``).  ``risk``: higher = earlier death.
* Cumulative/dynamic AUC(t) (``cumulative_dynamic_auc``, IPCW from the training part) on a time grid.
* Calibration at fixed horizons: predicted P(death by t) against the Kaplan-Meier event fraction
  (``kaplan_meier_estimator``) per bin of predicted risk, and the IPCW Brier score (``brier_score``).
  Binary methods give P(death by t) only at the label horizon; risk-only (Cox) methods get a Breslow
  baseline hazard (``BreslowEstimator``) fitted on a part of the fold that the test part never sees
  (the training part if the prediction file holds it, otherwise the validation part).
* Kaplan-Meier curves of predicted high/low risk groups and the log-rank test (``compare_survival``).
* Integrated Brier score (``integrated_brier_score``) of predicted survival curves on the td-AUC grid:
  risk-only (Cox) methods, S(t | x) = S0(t) ** exp(risk) with a Breslow S0 as for calibration.

Time grids and horizons are clamped inside both the training and the test follow-up ranges
(``lo <= t < hi`` with ``lo`` the later of the two minima and ``hi`` the earlier of the two maxima):
outside them the IPCW weights are undefined (the censoring survival reaches zero after the last
training time) and the test part cannot tell cases from controls.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DAYS_PER_YEAR = 365.25


def surv(event: np.ndarray, time: np.ndarray) -> np.ndarray:
    """scikit-survival's structured array (event bool, time float)."""
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event, dtype=bool), time=np.asarray(time, dtype=float))


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C; > 0.5 when higher risk goes with earlier death.  NaN without a comparable pair."""
    from haf.eval.scores import cindex_or_nan

    return cindex_or_nan(time, event, risk)


def uno_c(
    train_time: np.ndarray,
    train_event: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    tau: float,
) -> float:
    """Uno's IPCW C-index truncated at ``tau`` (censoring from the training data); NaN if undefined."""
    from sksurv.metrics import concordance_index_ipcw

    event = np.asarray(event, dtype=bool)
    if not (event & (np.asarray(time) < tau)).any():
        return float("nan")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(
                concordance_index_ipcw(
                    surv(train_event, train_time), surv(event, time), np.asarray(risk, float), tau=tau
                )[0]
            )
    except (ValueError, ZeroDivisionError):
        return float("nan")


def follow_up_window(train_time: np.ndarray, test_time: np.ndarray) -> tuple[float, float]:
    """``(lo, hi)``: the times inside both follow-up ranges are ``lo <= t < hi``."""
    train_time = np.asarray(train_time, dtype=float)
    test_time = np.asarray(test_time, dtype=float)
    return (
        float(max(train_time.min(), test_time.min())),
        float(min(train_time.max(), test_time.max())),
    )


def clamp_times(times: np.ndarray, windows: list[tuple[float, float]]) -> np.ndarray:
    """The times that lie inside every window (``lo <= t < hi``), sorted and unique."""
    times = np.unique(np.asarray(times, dtype=float))
    keep = np.ones(len(times), dtype=bool)
    for lo, hi in windows:
        keep &= (times >= lo) & (times < hi)
    return times[keep]


def event_time_grid(
    time: np.ndarray, event: np.ndarray, n_points: int, quantiles: tuple[float, float] = (0.1, 0.9)
) -> np.ndarray:
    """``n_points`` evenly spaced times between two quantiles of the observed event times."""
    event_times = np.asarray(time, dtype=float)[np.asarray(event, dtype=bool)]
    if len(event_times) == 0:
        return np.zeros(0)
    lo, hi = np.quantile(event_times, quantiles)
    return np.linspace(lo, hi, n_points) if hi > lo else np.array([lo])


def td_auc(
    train_time: np.ndarray,
    train_event: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    times: np.ndarray,
) -> tuple[np.ndarray, float]:
    """Cumulative/dynamic AUC at ``times`` (already clamped) and its KM-weighted mean over them.

    Test deaths after the last grid time are passed as censored: AUC(t) for t on the grid does not
    depend on them (they are controls either way), and their IPCW weight could otherwise hit a
    censoring survival of zero beyond the training follow-up.
    """
    from sksurv.metrics import cumulative_dynamic_auc

    times = np.asarray(times, dtype=float)
    if len(times) == 0:
        return np.zeros(0), float("nan")
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool) & (time <= times.max())
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")
        try:
            auc, mean_auc = cumulative_dynamic_auc(
                surv(train_event, train_time), surv(event, time), np.asarray(risk, float), times
            )
        except ValueError as exc:
            log.warning("td-AUC undefined: %s", exc)
            return np.full(len(times), np.nan), float("nan")
    return np.asarray(auc, dtype=float), float(mean_auc)


def breslow_event_probability(
    base_risk: np.ndarray,
    base_time: np.ndarray,
    base_event: np.ndarray,
    risk: np.ndarray,
    horizon: float,
) -> np.ndarray | None:
    """P(death by ``horizon``) = 1 - S0(horizon) ** exp(risk), S0 by Breslow on the base part.

    None when the base part has no death or its follow-up ends before the horizon.
    """
    from sksurv.linear_model.coxph import BreslowEstimator

    base_time = np.asarray(base_time, dtype=float)
    base_event = np.asarray(base_event, dtype=bool)
    if not base_event.any() or horizon > base_time.max():
        return None
    estimator = BreslowEstimator().fit(np.asarray(base_risk, float), base_event, base_time)
    s0 = float(np.atleast_1d(estimator.baseline_survival_(np.array([horizon])))[0])
    return 1.0 - np.power(s0, np.exp(np.asarray(risk, dtype=float)))


def km_event_fraction(time: np.ndarray, event: np.ndarray, horizon: float) -> tuple[float, float, float]:
    """Kaplan-Meier P(death by horizon) with its 95% log-log CI; NaN beyond the group's follow-up."""
    from sksurv.nonparametric import kaplan_meier_estimator

    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool)
    if len(time) == 0 or horizon > time.max():
        return float("nan"), float("nan"), float("nan")
    if not event.any():
        return 0.0, 0.0, 0.0
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")
        t, s, ci = kaplan_meier_estimator(event, time, conf_type="log-log")
    i = np.searchsorted(t, horizon, side="right") - 1
    if i < 0:
        return 0.0, 0.0, 0.0
    return float(1 - s[i]), float(1 - ci[1][i]), float(1 - ci[0][i])


def calibration_bins(
    predicted: np.ndarray, time: np.ndarray, event: np.ndarray, horizon: float, n_bins: int
) -> pd.DataFrame:
    """Quantile bins of predicted P(death by horizon): n, mean predicted, KM observed fraction and CI."""
    predicted = np.asarray(predicted, dtype=float)
    ranks = pd.Series(predicted).rank(method="first").to_numpy()
    bins = np.minimum((ranks - 1) * n_bins // len(predicted), n_bins - 1).astype(int)
    records = []
    for b in range(n_bins):
        sel = bins == b
        if not sel.any():
            continue
        obs, low, high = km_event_fraction(np.asarray(time)[sel], np.asarray(event)[sel], horizon)
        records.append(
            dict(
                bin=b,
                n=int(sel.sum()),
                n_events_by_horizon=int((np.asarray(event)[sel] & (np.asarray(time)[sel] <= horizon)).sum()),
                predicted_mean=float(predicted[sel].mean()),
                observed=obs,
                observed_ci_low=low,
                observed_ci_high=high,
            )
        )
    return pd.DataFrame.from_records(records)


def brier_at(
    train_time: np.ndarray,
    train_event: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    predicted_event_prob: np.ndarray,
    horizon: float,
) -> float:
    """IPCW Brier score at one horizon (scikit-survival) of predicted P(death by horizon)."""
    from sksurv.metrics import brier_score

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, score = brier_score(
                surv(train_event, train_time),
                surv(event, time),
                1.0 - np.asarray(predicted_event_prob, dtype=float),
                [horizon],
            )
    except ValueError as exc:
        log.warning("Brier score at %g days undefined: %s", horizon, exc)
        return float("nan")
    return float(score[0])


def breslow_survival(
    base_risk: np.ndarray,
    base_time: np.ndarray,
    base_event: np.ndarray,
    risk: np.ndarray,
    times: np.ndarray,
) -> np.ndarray | None:
    """(n, T) predicted S(t | x) = S0(t) ** exp(risk) at ``times``, S0 by Breslow on the base part.

    None when the base part has no death or its follow-up ends before the last time (S0 is not
    estimated there).
    """
    from sksurv.linear_model.coxph import BreslowEstimator

    base_time = np.asarray(base_time, dtype=float)
    base_event = np.asarray(base_event, dtype=bool)
    times = np.asarray(times, dtype=float)
    if not base_event.any() or len(times) == 0 or times.max() > base_time.max():
        return None
    estimator = BreslowEstimator().fit(np.asarray(base_risk, float), base_event, base_time)
    s0 = np.asarray(estimator.baseline_survival_(times), dtype=float)
    return np.power(s0[None, :], np.exp(np.asarray(risk, dtype=float))[:, None])


def integrated_brier(
    train_time: np.ndarray,
    train_event: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    survival: np.ndarray,
    times: np.ndarray,
) -> float:
    """scikit-survival's ``integrated_brier_score`` of predicted S(t | x) ((n, T)) on the grid ``times``.

    Censoring from the training data; test times beyond the grid are clamped to the training
    follow-up and their later deaths count as censored (:func:`haf.eval.survival_boot.clamp_follow_up`:
    the score on the grid does not change, and the censoring survival stays defined). NaN when
    undefined (fewer than two grid times, the grid outside the test follow-up).
    """
    from sksurv.metrics import integrated_brier_score

    from haf.eval.survival_boot import clamp_follow_up

    times = np.asarray(times, dtype=float)
    if len(times) < 2 or survival is None or not np.isfinite(survival).all():
        return float("nan")
    t, e = clamp_follow_up(time, event, times, float(np.max(train_time)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(
                integrated_brier_score(surv(train_event, train_time), surv(e, t), np.asarray(survival), times)
            )
    except ValueError as exc:
        log.warning("integrated Brier score undefined: %s", exc)
        return float("nan")


@dataclass
class KMCurve:
    time: np.ndarray
    survival: np.ndarray
    low: np.ndarray
    high: np.ndarray


def km_curve(time: np.ndarray, event: np.ndarray) -> KMCurve:
    """Kaplan-Meier survival curve with 95% log-log confidence band (starts at time 0, S = 1)."""
    from sksurv.nonparametric import kaplan_meier_estimator

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")
        t, s, ci = kaplan_meier_estimator(
            np.asarray(event, dtype=bool), np.asarray(time, dtype=float), conf_type="log-log"
        )
    return KMCurve(np.r_[0.0, t], np.r_[1.0, s], np.r_[1.0, ci[0]], np.r_[1.0, ci[1]])


def number_at_risk(time: np.ndarray, event: np.ndarray, at: np.ndarray) -> dict[str, np.ndarray]:
    """The number-at-risk row of a Kaplan-Meier plot: at each time in ``at``, who is still followed.

    ``at_risk``: patients with ``time >= t`` (still under observation just before ``t``, so a death or a
    censoring exactly at ``t`` still counts as at risk, the convention of the KM estimator's risk set);
    ``events_before`` / ``censored_before``: deaths / censorings with ``time < t``. The three add up to
    the group size at every ``t``.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event).astype(bool)
    at = np.asarray(at, dtype=float)
    before = time[None, :] < at[:, None]
    return {
        "at_risk": (~before).sum(axis=1),
        "events_before": (before & event[None, :]).sum(axis=1),
        "censored_before": (before & ~event[None, :]).sum(axis=1),
    }


def censor_marks(curve: KMCurve, time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(times, survival) of the censored patients on a KM step curve, for censor ticks."""
    time = np.asarray(time, dtype=float)
    censored = np.sort(time[~np.asarray(event).astype(bool)])
    idx = np.searchsorted(curve.time, censored, side="right") - 1
    return censored, curve.survival[np.clip(idx, 0, len(curve.survival) - 1)]


def logrank(time: np.ndarray, event: np.ndarray, group: np.ndarray) -> tuple[float, float]:
    """Log-rank chi-square and p-value between groups; NaN when fewer than two groups or no death."""
    from sksurv.compare import compare_survival

    group = np.asarray(group)
    if len(np.unique(group)) < 2 or not np.asarray(event, dtype=bool).any():
        return float("nan"), float("nan")
    chisq, p = compare_survival(surv(event, time), group)
    return float(chisq), float(p)
