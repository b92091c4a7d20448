"""Survival metrics of many patient resamples at once: Harrell's C, Uno's C, the integrated td-AUC and
the integrated Brier score, for the bootstrap CIs and paired tests of the survival table and claims.

A resample is a vector of patient multiplicities (``counts``, one row per resample).  Every metric
here is a weighted sum over patient pairs (C-indices, AUC(t)) or over patients (Brier score), so the
metric of a resample is a quadratic (or linear) form in its counts: one matrix product scores a
thousand resamples.  The values equal scikit-survival's on the index-resampled data, duplicates
included (``tests/test_survival_uncertainty.py`` recomputes resamples with scikit-survival), with the
same conventions as :mod:`haf.eval.survival`:

* Harrell (``concordance_index_censored``): a pair (i, j) is comparable when i died and
  ``t_j > t_i`` or j was censored at ``t_i``; risks within ``tied_tol`` count 1/2.
* Uno (``concordance_index_ipcw``): the same pairs weighted by ``1 / G(t_i)^2`` for deaths before
  ``tau`` (0 otherwise), ``G`` the Kaplan-Meier censoring survival of the training data.
* td-AUC (``cumulative_dynamic_auc``): at each grid time t, cases (death by t, weight ``1 / G(t_i)``)
  against controls (alive after t); deaths after the last grid time count as censored; the summary is
  the Kaplan-Meier-weighted mean over the grid (the test data's KM, recomputed per resample).
* Integrated Brier score (``integrated_brier_score``): IPCW Brier score at every grid time,
  trapezoid-integrated and divided by the grid's span.  Times after the grid are clamped (they are
  controls at every grid time either way) so that ``G`` stays defined.

A resample for which scikit-survival would raise (no death, no comparable pair, grid outside the
resample's follow-up) scores NaN and is not counted as valid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

SURVIVAL_METRICS: tuple[str, ...] = ("harrell_c", "uno_c", "td_auc_mean", "ibs")
"""The survival table's bootstrapped metrics (``ibs``: lower is better; the others: higher)."""


def _censoring(train_time: np.ndarray, train_event: np.ndarray):
    from sksurv.nonparametric import CensoringDistributionEstimator

    from haf.eval.survival import surv

    return CensoringDistributionEstimator().fit(surv(train_event, train_time))


def clamp_follow_up(
    time: np.ndarray, event: np.ndarray, times: np.ndarray, train_max: float
) -> tuple[np.ndarray, np.ndarray]:
    """Test (time, event) as the Brier score and td-AUC see them on a grid ending at ``times.max()``.

    Deaths after the last grid time become censored and times are clamped to the training follow-up
    (``train_max``, which exceeds every grid time): a patient beyond the grid is a control at every
    grid time whatever the exact time, and the censoring survival stays defined.
    """
    time = np.asarray(time, dtype=float)
    last = float(np.max(times)) if len(times) else np.inf
    return np.minimum(time, train_max), np.asarray(event, dtype=bool) & (time <= last)


def pair_scores(risk: np.ndarray, tied_tol: float = 1e-8) -> np.ndarray:
    """``S[i, j]`` = 1 if risk_i > risk_j (beyond ``tied_tol``), 1/2 if within it, else 0."""
    risk = np.asarray(risk, dtype=float)
    diff = risk[:, None] - risk[None, :]
    return np.where(np.abs(diff) <= tied_tol, 0.5, (diff > 0).astype(float))


@dataclass
class SurvivalScorer:
    """One pooled set of test patients (one method, one CV repeat), scored for many resamples.

    ``survival``: predicted S(t | x) of every patient at every grid time, (n, T), for the Brier score
    (None: no integrated Brier score).  ``train_time/event``: the data the censoring distribution is
    estimated on.
    """

    train_time: np.ndarray
    train_event: np.ndarray
    time: np.ndarray
    event: np.ndarray
    risk: np.ndarray
    times: np.ndarray
    tau: float
    survival: np.ndarray | None = None
    tied_tol: float = 1e-8

    def __post_init__(self) -> None:
        self.time = np.asarray(self.time, dtype=float)
        self.event = np.asarray(self.event, dtype=bool)
        self.risk = np.asarray(self.risk, dtype=float)
        self.times = np.unique(np.asarray(self.times, dtype=float))
        t, e = self.time, self.event
        self._s = pair_scores(self.risk, self.tied_tol)
        comparable = e[:, None] & ((t[None, :] > t[:, None]) | ((t[None, :] == t[:, None]) & ~e[None, :]))
        self._comparable = comparable.astype(float)
        self._concordant = self._comparable * self._s
        self._cens = _censoring(self.train_time, self.train_event)
        self._uno_w = self._uno_weights()

    # ---- weights from the censoring distribution
    def _uno_weights(self) -> np.ndarray:
        from haf.eval.survival import surv

        before = self.time < self.tau
        w = np.zeros(len(self.time))
        if not (self.event & before).any():
            return np.full(len(self.time), np.nan)
        try:
            ipcw = self._cens.predict_ipcw(surv(self.event[before], self.time[before]))
        except ValueError:
            return np.full(len(self.time), np.nan)
        w[before] = ipcw**2
        return w

    # ---- metrics
    def score(self, counts: np.ndarray, metrics: tuple[str, ...] = SURVIVAL_METRICS) -> dict[str, np.ndarray]:
        """Each metric for each row of ``counts`` ((B, n) patient multiplicities)."""
        counts = np.atleast_2d(np.asarray(counts, dtype=float))
        out: dict[str, np.ndarray] = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            if "harrell_c" in metrics or "uno_c" in metrics:
                y_conc = counts @ self._concordant.T
                y_comp = counts @ self._comparable.T
                if "harrell_c" in metrics:
                    den = (counts * y_comp).sum(axis=1)
                    out["harrell_c"] = np.where(den > 0, (counts * y_conc).sum(axis=1) / den, np.nan)
                if "uno_c" in metrics:
                    cw = counts * self._uno_w
                    den = (cw * y_comp).sum(axis=1)
                    out["uno_c"] = np.where(den > 0, (cw * y_conc).sum(axis=1) / den, np.nan)
            if "td_auc_mean" in metrics:
                out["td_auc_mean"] = self._td_auc_mean(counts)
            if "ibs" in metrics:
                out["ibs"] = self._ibs(counts)
        return out

    def _grid_valid(self, counts: np.ndarray) -> np.ndarray:
        """Resamples whose follow-up covers the grid (scikit-survival's check of ``times``)."""
        drawn = counts > 0
        t_min = np.where(drawn, self.time, np.inf).min(axis=1)
        t_max = np.where(drawn, self.time, -np.inf).max(axis=1)
        return (self.times.min() >= t_min) & (self.times.max() < t_max)

    def td_auc(self, counts: np.ndarray) -> np.ndarray:
        """(B, T) cumulative/dynamic AUC at the grid times."""
        times = self.times
        event = self.event & (self.time <= times.max())
        ipcw = np.zeros(len(self.time))
        if event.any():
            from haf.eval.survival import surv

            ipcw = self._cens.predict_ipcw(surv(event, self.time))
        cases = np.flatnonzero(event)
        s_cases = self._s[cases]  # (n_cases, n)
        weighted = counts[:, cases] * ipcw[cases]
        auc = np.full((counts.shape[0], len(times)), np.nan)
        for k, t in enumerate(times):
            control = (self.time > t).astype(float)
            case = (self.time[cases] <= t).astype(float)
            num = ((counts * control) @ s_cases.T * weighted * case).sum(axis=1)
            den = (weighted * case).sum(axis=1) * (counts * control).sum(axis=1)
            auc[:, k] = num / den
        return auc

    def _km(self, counts: np.ndarray) -> np.ndarray:
        """(B, T) Kaplan-Meier survival of each resample's test data at the grid times."""
        event = self.event & (self.time <= self.times.max())
        u = np.unique(self.time[self.time <= self.times.max()])
        deaths = counts @ ((self.time[:, None] == u[None, :]) & event[:, None]).astype(float)
        at_risk = counts @ (self.time[:, None] >= u[None, :]).astype(float)
        factor = np.where(at_risk > 0, 1.0 - deaths / np.where(at_risk > 0, at_risk, 1.0), 1.0)
        s_u = np.cumprod(factor, axis=1)
        pos = np.searchsorted(u, self.times, side="right") - 1
        s = np.ones((counts.shape[0], len(self.times)))
        s[:, pos >= 0] = s_u[:, pos[pos >= 0]]
        return s

    def _td_auc_mean(self, counts: np.ndarray) -> np.ndarray:
        if len(self.times) == 0:
            return np.full(counts.shape[0], np.nan)
        auc = self.td_auc(counts)
        if len(self.times) == 1:
            mean = auc[:, 0]
        else:
            s = self._km(counts)
            d = -np.diff(np.c_[np.ones(len(s)), s], axis=1)
            mean = (auc * d).sum(axis=1) / (1.0 - s[:, -1])
        return np.where(self._grid_valid(counts), mean, np.nan)

    def _ibs(self, counts: np.ndarray) -> np.ndarray:
        if self.survival is None or len(self.times) < 2:
            return np.full(counts.shape[0], np.nan)
        time, event = clamp_follow_up(self.time, self.event, self.times, float(np.max(self.train_time)))
        g_t = self._cens.predict_proba(self.times)
        g_y = self._cens.predict_proba(time)
        g_t = np.where(g_t == 0, np.inf, g_t)
        g_y = np.where(g_y == 0, np.inf, g_y)
        est = np.asarray(self.survival, dtype=float)
        case = (time[:, None] <= self.times[None, :]) & event[:, None]
        control = time[:, None] > self.times[None, :]
        per_patient = np.square(est) * case / g_y[:, None] + np.square(1.0 - est) * control / g_t[None, :]
        brier = counts @ per_patient / counts.sum(axis=1, keepdims=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ibs = np.trapezoid(brier, self.times, axis=1) / (self.times[-1] - self.times[0])
        time_valid = self._grid_valid_times(counts, time)
        return np.where(time_valid, ibs, np.nan)

    def _grid_valid_times(self, counts: np.ndarray, time: np.ndarray) -> np.ndarray:
        drawn = counts > 0
        t_min = np.where(drawn, time, np.inf).min(axis=1)
        t_max = np.where(drawn, time, -np.inf).max(axis=1)
        return (self.times.min() >= t_min) & (self.times.max() < t_max)
