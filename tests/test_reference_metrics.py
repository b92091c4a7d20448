"""Reference values for the evaluation math, computed outside the code under test.

``haf.eval.survival`` and ``haf.eval.scores`` wrap scikit-survival, so a comparison with sksurv
would test sksurv against itself: the conventions (risk sign, which pairs are comparable, which
part's censoring distribution weighs the test part, truncation at tau, the KM-weighted mean AUC)
are pinned here with hand examples whose values are worked out by explicit loops.  The bootstrap
CI and the paired test are recomputed with numpy and sklearn from the same resample indices;
masking rates are checked against their closed form within a binomial tolerance from n; the target
rules at the horizon and one day either side.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from haf.artifacts.files import write_tsv
from haf.artifacts.targets import TARGET_COLUMNS, read_targets
from haf.cohort.targets import build_targets
from haf.errors import HafInputError
from haf.eval import binary, survival
from haf.eval.masking import SCENARIOS, draw_masks, kept_labels, masked_prediction_table
from haf.eval.scores import auc_or_nan, cindex_or_nan
from haf.modalities import MODALITIES, PATHOLOGY, TABULAR


# ---------------------------------------------------------------------------------------------
# hand implementations
# ---------------------------------------------------------------------------------------------
def _km_censoring(time, event):
    """Kaplan-Meier of the censoring times: G(t) = prod_{s <= t} (1 - censored_s / at_risk_s)."""
    time = np.asarray(time, float)
    cens = ~np.asarray(event, bool)

    def g(t: float) -> float:
        out = 1.0
        for s in np.unique(time[cens]):
            if s <= t:
                out *= 1 - np.sum(cens & (time == s)) / np.sum(time >= s)
        return out

    return g


def _km_survival(time, event, t):
    """Kaplan-Meier survival S(t) of the deaths."""
    time = np.asarray(time, float)
    event = np.asarray(event, bool)
    out = 1.0
    for s in np.unique(time[event]):
        if s <= t:
            out *= 1 - np.sum(event & (time == s)) / np.sum(time >= s)
    return out


def _pair_score(ri: float, rj: float) -> float:
    return 1.0 if ri > rj else 0.5 if ri == rj else 0.0


def _harrell(time, event, risk) -> float:
    """Comparable: i died and j was still under follow-up after t_i (or censored at t_i)."""
    num = den = 0.0
    for i in range(len(time)):
        if not event[i]:
            continue
        for j in range(len(time)):
            if time[i] < time[j] or (time[i] == time[j] and not event[j] and i != j):
                num += _pair_score(risk[i], risk[j])
                den += 1
    return num / den


def _uno(train_time, train_event, time, event, risk, tau) -> float:
    """Uno et al. 2011: pairs weighted by G(t_i)^-2, G from the *training* censoring, t_i < tau."""
    g = _km_censoring(train_time, train_event)
    num = den = 0.0
    for i in range(len(time)):
        if not event[i] or time[i] >= tau:
            continue
        w = g(time[i]) ** -2
        for j in range(len(time)):
            if time[i] < time[j]:
                num += w * _pair_score(risk[i], risk[j])
                den += w
    return num / den


def _cd_auc(train_time, train_event, time, event, risk, t) -> float:
    """Cumulative/dynamic AUC(t): cases died by t (weight 1 / G(t_i)), controls still alive after t."""
    g = _km_censoring(train_time, train_event)
    num = den = 0.0
    for i in range(len(time)):
        if not (event[i] and time[i] <= t):
            continue
        for j in range(len(time)):
            if time[j] > t:
                num += _pair_score(risk[i], risk[j]) / g(time[i])
                den += 1 / g(time[i])
    return num / den


# training part: censoring early and often; test part: censoring late (so the two G differ)
TRAIN_T = np.array([5, 8, 12, 15, 21, 26, 30, 34, 41, 47, 52, 60.0])
TRAIN_E = np.array([0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0], dtype=bool)
TEST_T = np.array([6, 9, 13, 17, 19, 24, 28, 33, 38, 44, 49, 55.0])
TEST_E = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 0], dtype=bool)
# mostly higher risk for earlier death, with discordant pairs and one risk tie
TEST_RISK = np.array([2.0, 1.5, 1.7, 0.2, 1.0, 0.9, 0.9, 0.1, -0.3, 0.4, -1.0, -0.5])


# ---------------------------------------------------------------------------------------------
# Harrell's and Uno's C, td-AUC
# ---------------------------------------------------------------------------------------------
def test_harrell_c_by_hand_with_censoring_and_ties():
    expected = _harrell(TEST_T, TEST_E, TEST_RISK)
    assert expected == pytest.approx(41.5 / 50, abs=1e-12)  # 50 comparable pairs: 41 concordant, one tie
    assert survival.harrell_c(TEST_T, TEST_E, TEST_RISK) == pytest.approx(expected, abs=1e-12)
    # risk convention: higher risk = earlier death, so the negated score gives 1 - C
    assert survival.harrell_c(TEST_T, TEST_E, -TEST_RISK) == pytest.approx(1 - expected, abs=1e-12)
    # an event and a censoring at the same time form a pair (the censored one outlived the death)
    t = np.array([1.0, 2.0, 2.0, 3.0])
    e = np.array([1, 1, 0, 1], dtype=bool)
    r = np.array([3.0, 1.0, 2.0, 0.0])
    # pairs (0, 1), (0, 2), (0, 3), (1, 2) (discordant: the censored one has the higher risk), (1, 3)
    assert _harrell(t, e, r) == pytest.approx(4 / 5)
    assert cindex_or_nan(t, e, r) == pytest.approx(4 / 5, abs=1e-12)
    assert math.isnan(cindex_or_nan(t, np.zeros(4, bool), r))


def test_uno_c_weights_by_the_training_censoring_and_truncates_at_tau():
    tau = 45.0
    expected = _uno(TRAIN_T, TRAIN_E, TEST_T, TEST_E, TEST_RISK, tau)
    assert expected == pytest.approx(0.8135110348, abs=1e-9)
    got = survival.uno_c(TRAIN_T, TRAIN_E, TEST_T, TEST_E, TEST_RISK, tau)
    assert got == pytest.approx(expected, abs=1e-12)  # measured |diff| ~ 1e-16
    # the example tells the training censoring from the test part's, and tau from no truncation
    wrong_part = _uno(TEST_T, TEST_E, TEST_T, TEST_E, TEST_RISK, tau)
    no_tau = _uno(TRAIN_T, TRAIN_E, TEST_T, TEST_E, TEST_RISK, np.inf)
    assert abs(wrong_part - expected) > 1e-3 and abs(no_tau - expected) > 1e-3
    assert survival.uno_c(TRAIN_T, TRAIN_E, TEST_T, TEST_E, -TEST_RISK, tau) == pytest.approx(1 - expected)
    # no event before tau: undefined
    assert math.isnan(survival.uno_c(TRAIN_T, TRAIN_E, TEST_T, TEST_E, TEST_RISK, 5.0))


def test_td_auc_and_its_km_weighted_mean_by_hand():
    times = np.array([15.0, 30.0, 40.0])
    expected = np.array([_cd_auc(TRAIN_T, TRAIN_E, TEST_T, TEST_E, TEST_RISK, t) for t in times])
    np.testing.assert_allclose(expected, [1.0, 0.9565217391, 0.8327566321], atol=1e-9)
    s = np.array([_km_survival(TEST_T, TEST_E, t) for t in times])
    weights = -np.diff(np.r_[1.0, s])
    mean = (expected * weights).sum() / (1 - s[-1])
    auc, got_mean = survival.td_auc(TRAIN_T, TRAIN_E, TEST_T, TEST_E, TEST_RISK, times)
    np.testing.assert_allclose(auc, expected, atol=1e-12)  # measured |diff| ~ 1e-16
    assert got_mean == pytest.approx(mean, abs=1e-12)
    wrong_part = [_cd_auc(TEST_T, TEST_E, TEST_T, TEST_E, TEST_RISK, t) for t in times]
    assert np.abs(np.array(wrong_part) - expected).max() > 1e-3  # IPCW from the right part matters
    # a death after the last grid time is a control at every grid time: AUC(t) is unchanged
    late = TEST_E.copy()
    late[-1] = True
    np.testing.assert_allclose(
        survival.td_auc(TRAIN_T, TRAIN_E, TEST_T, late, TEST_RISK, times)[0], expected, atol=1e-12
    )
    # one grid time: the mean is that AUC
    one, one_mean = survival.td_auc(TRAIN_T, TRAIN_E, TEST_T, TEST_E, TEST_RISK, times[:1])
    assert one_mean == pytest.approx(expected[0]) and len(one) == 1
    empty, empty_mean = survival.td_auc(TRAIN_T, TRAIN_E, TEST_T, TEST_E, TEST_RISK, np.zeros(0))
    assert len(empty) == 0 and math.isnan(empty_mean)


def _greenwood_km(time, event, t):
    """KM S(t) with its 95% log-log CI (Greenwood variance), by hand."""
    time = np.asarray(time, float)
    event = np.asarray(event, bool)
    s, var = 1.0, 0.0
    for u in np.unique(time[event]):
        if u <= t:
            d, n = np.sum(event & (time == u)), np.sum(time >= u)
            s *= 1 - d / n
            var += d / (n * (n - d)) if n > d else np.inf
    if s in (0.0, 1.0):
        return s, s, s
    se = math.sqrt(var) / abs(math.log(s))
    return s, s ** math.exp(1.959963984540054 * se), s ** math.exp(-1.959963984540054 * se)


def test_km_event_fraction_and_curve_by_hand():
    horizon = 30.0
    s, low, high = _greenwood_km(TEST_T, TEST_E, horizon)
    got = survival.km_event_fraction(TEST_T, TEST_E, horizon)
    # P(death by t) = 1 - S(t); its CI is 1 - the survival CI, bounds swapped
    assert got == pytest.approx((1 - s, 1 - high, 1 - low), abs=1e-9)
    assert got[0] == pytest.approx(1 - (11 / 12) * (10 / 11) * (8 / 9) * (7 / 8) * (6 / 7), abs=1e-12)
    # no event by the horizon, no event at all, horizon beyond follow-up
    assert survival.km_event_fraction(TEST_T, TEST_E, 5.0) == (0.0, 0.0, 0.0)
    assert survival.km_event_fraction(TEST_T, np.zeros(12, bool), 30.0) == (0.0, 0.0, 0.0)
    assert all(math.isnan(v) for v in survival.km_event_fraction(TEST_T, TEST_E, 56.0))
    assert all(math.isnan(v) for v in survival.km_event_fraction(np.zeros(0), np.zeros(0, bool), 1.0))
    curve = survival.km_curve(TEST_T, TEST_E)
    assert curve.time[0] == 0.0 and curve.survival[0] == 1.0 and curve.low[0] == 1.0 and curve.high[0] == 1.0
    for t_i, s_i, lo_i, hi_i in zip(
        curve.time[1:], curve.survival[1:], curve.low[1:], curve.high[1:], strict=True
    ):
        ref = _greenwood_km(TEST_T, TEST_E, t_i)
        assert (s_i, lo_i, hi_i) == pytest.approx(ref, abs=1e-9), t_i
    np.testing.assert_array_equal(curve.time[1:], np.unique(TEST_T))


def test_breslow_event_probability_by_hand():
    base_risk = np.array([0.5, -0.3, 0.1, 0.8, -1.0, 0.0])
    base_time = np.array([2.0, 3.0, 3.0, 5.0, 8.0, 9.0])
    base_event = np.array([1, 1, 0, 1, 0, 1], dtype=bool)
    horizon = 6.0
    # Breslow: H0(t) = sum over death times s <= t of d_s / sum_{t_j >= s} exp(r_j)
    h0 = 0.0
    for u in (2.0, 3.0, 5.0):
        d = np.sum(base_event & (base_time == u))
        h0 += d / np.exp(base_risk[base_time >= u]).sum()
    risk = np.array([-1.0, 0.0, 2.0])
    expected = 1 - np.exp(-h0) ** np.exp(risk)
    got = survival.breslow_event_probability(base_risk, base_time, base_event, risk, horizon)
    np.testing.assert_allclose(got, expected, atol=1e-12)  # measured |diff| ~ 1e-16
    assert survival.breslow_event_probability(base_risk, base_time, np.zeros(6, bool), risk, horizon) is None
    assert survival.breslow_event_probability(base_risk, base_time, base_event, risk, 9.5) is None
    assert survival.breslow_event_probability(base_risk, base_time, base_event, risk, 9.0) is not None


def test_ipcw_brier_score_by_hand():
    horizon = 30.0
    g = _km_censoring(TRAIN_T, TRAIN_E)
    prob = 1 / (1 + np.exp(-TEST_RISK))  # predicted P(death by the horizon)
    total = 0.0
    for t_i, e_i, p_i in zip(TEST_T, TEST_E, prob, strict=True):
        if t_i <= horizon and e_i:  # died by the horizon: target survival 0, weight 1 / G(t_i)
            total += (1 - p_i) ** 2 / g(t_i)
        elif t_i > horizon:  # alive after the horizon: target 1, weight 1 / G(horizon)
            total += p_i**2 / g(horizon)
    expected = total / len(TEST_T)  # censored before the horizon: weight 0
    got = survival.brier_at(TRAIN_T, TRAIN_E, TEST_T, TEST_E, prob, horizon)
    assert got == pytest.approx(expected, abs=1e-12)
    # the example tells the training part's censoring from the test part's
    assert abs(survival.brier_at(TEST_T, TEST_E, TEST_T, TEST_E, prob, horizon) - expected) > 1e-3
    assert math.isnan(survival.brier_at(TRAIN_T, TRAIN_E, TEST_T, TEST_E, prob, 100.0))


def test_logrank_by_hand():
    group = np.array(["a", "b"] * 6)
    o_minus_e = var = 0.0
    for u in np.unique(TEST_T[TEST_E]):
        at_risk = TEST_T >= u
        n, n1 = at_risk.sum(), (at_risk & (group == "a")).sum()
        d = (TEST_E & (TEST_T == u)).sum()
        d1 = (TEST_E & (TEST_T == u) & (group == "a")).sum()
        o_minus_e += d1 - d * n1 / n
        if n > 1:
            var += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    chisq = o_minus_e**2 / var
    got_chisq, got_p = survival.logrank(TEST_T, TEST_E, group)
    assert got_chisq == pytest.approx(chisq, abs=1e-10)
    assert got_p == pytest.approx(math.erfc(math.sqrt(chisq / 2)), abs=1e-10)  # chi-square, 1 df
    assert all(math.isnan(v) for v in survival.logrank(TEST_T, TEST_E, np.array(["a"] * 12)))
    assert all(math.isnan(v) for v in survival.logrank(TEST_T, np.zeros(12, bool), group))


def test_calibration_bins_by_hand():
    predicted = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.05, 0.95, 0.35])
    bins = survival.calibration_bins(predicted, TEST_T, TEST_E, 30.0, 3)
    order = np.argsort(predicted, kind="stable")
    assert bins["bin"].tolist() == [0, 1, 2] and bins["n"].tolist() == [4, 4, 4]
    for b, rows in enumerate(np.split(order, 3)):
        row = bins.iloc[b]
        assert row["predicted_mean"] == pytest.approx(predicted[rows].mean(), abs=1e-12)
        assert row["n_events_by_horizon"] == int((TEST_E[rows] & (TEST_T[rows] <= 30.0)).sum())
        s, low, high = _greenwood_km(TEST_T[rows], TEST_E[rows], 30.0)
        assert row["observed"] == pytest.approx(1 - s, abs=1e-12)
    # ties in the prediction are split by order (rank "first"), so every bin is filled
    tied = survival.calibration_bins(np.full(12, 0.5), TEST_T, TEST_E, 30.0, 4)
    assert tied["n"].tolist() == [3, 3, 3, 3]


def test_event_time_grid_and_windows():
    time = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    event = np.array([1, 1, 1, 1, 1, 0], dtype=bool)
    # event times 10..50: the 0.1 / 0.9 quantiles (linear) are 14 and 46
    np.testing.assert_allclose(survival.event_time_grid(time, event, 5), [14, 22, 30, 38, 46])
    np.testing.assert_allclose(survival.event_time_grid(time, event, 3, (0.0, 0.5)), [10, 20, 30])
    np.testing.assert_array_equal(survival.event_time_grid(time, np.zeros(6, bool), 5), [])
    one = np.array([0, 0, 1, 0, 0, 0], dtype=bool)
    np.testing.assert_array_equal(survival.event_time_grid(time, one, 5), [30.0])
    assert survival.follow_up_window([5, 80], [10, 70]) == (10.0, 70.0)
    assert survival.follow_up_window([10, 70], [5, 80]) == (10.0, 70.0)
    # lo inclusive, hi exclusive, duplicates merged, sorted
    grid = survival.clamp_times([70, 10, 10, 40, 9.9], [(10, 70)])
    assert grid.tolist() == [10.0, 40.0]
    assert survival.surv([1, 0], [3, 4]).dtype.names is not None


def test_survival_metrics_take_plain_lists_with_integer_events():
    # the prediction files give events as 0/1 integers and times as numbers: same values as bool/float
    t, e, r = TEST_T.astype(int).tolist(), TEST_E.astype(int).tolist(), TEST_RISK.tolist()
    tt, te = TRAIN_T.astype(int).tolist(), TRAIN_E.astype(int).tolist()
    assert survival.surv(e, t)["event"].dtype == bool
    assert survival.harrell_c(t, e, r) == survival.harrell_c(TEST_T, TEST_E, TEST_RISK)
    assert survival.uno_c(tt, te, t, e, r, 45.0) == pytest.approx(
        survival.uno_c(TRAIN_T, TRAIN_E, TEST_T, TEST_E, TEST_RISK, 45.0), abs=1e-12
    )
    grid = [15, 30, 40]
    np.testing.assert_allclose(
        survival.td_auc(tt, te, t, e, r, grid)[0],
        survival.td_auc(TRAIN_T, TRAIN_E, TEST_T, TEST_E, TEST_RISK, np.array(grid, float))[0],
    )
    assert survival.km_event_fraction(t, e, 30) == survival.km_event_fraction(TEST_T, TEST_E, 30.0)
    np.testing.assert_array_equal(
        survival.km_curve(t, e).survival, survival.km_curve(TEST_T, TEST_E).survival
    )
    np.testing.assert_array_equal(
        survival.event_time_grid(t, e, 4), survival.event_time_grid(TEST_T, TEST_E, 4)
    )
    base = survival.breslow_event_probability(r, t, e, [0.0, 1.0], 30)
    np.testing.assert_allclose(
        base, survival.breslow_event_probability(TEST_RISK, TEST_T, TEST_E, [0.0, 1.0], 30.0)
    )
    assert survival.follow_up_window(tt, t) == (6.0, 55.0)
    assert survival.clamp_times(grid, [(10, 35)]).tolist() == [15.0, 30.0]


def test_survival_metrics_at_exact_boundaries(caplog):
    # a death exactly at the last grid time is a case at that time
    grid = np.array([15.0, 38.0])
    auc, _ = survival.td_auc(TRAIN_T, TRAIN_E, TEST_T, TEST_E, TEST_RISK, grid)
    np.testing.assert_allclose(auc[1], _cd_auc(TRAIN_T, TRAIN_E, TEST_T, TEST_E, TEST_RISK, 38.0), atol=1e-12)
    # KM at a death time includes that death; at the first time; at the last follow-up time (defined)
    assert survival.km_event_fraction(TEST_T, TEST_E, 24.0)[0] == pytest.approx(
        1 - _km_survival(TEST_T, TEST_E, 24.0)
    )
    assert survival.km_event_fraction(TEST_T, TEST_E, 6.0)[0] == pytest.approx(1 / 12)
    assert survival.km_event_fraction(TEST_T, TEST_E, 55.0)[0] == pytest.approx(
        1 - _km_survival(TEST_T, TEST_E, 55.0)
    )
    # calibration: deaths on the horizon day count; CI columns; an empty bin is skipped, later bins kept
    bins = survival.calibration_bins(np.arange(12.0), TEST_T, TEST_E, 24.0, 2)
    assert bins["n_events_by_horizon"].tolist() == [5, 0]
    s, low, high = _greenwood_km(TEST_T[:6], TEST_E[:6], 24.0)
    assert (bins.loc[0, "observed_ci_low"], bins.loc[0, "observed_ci_high"]) == pytest.approx(
        (1 - high, 1 - low)
    )
    two = survival.calibration_bins(np.array([0.2, 0.8]), TEST_T[:2], TEST_E[:2], 10.0, 4)
    assert two["bin"].tolist() == [0, 2]
    # windows: every one of them binds, not only the last
    assert survival.clamp_times([5, 20, 60], [(10, 50), (0, 100)]).tolist() == [20.0]
    # undefined metrics are NaN and say why in the log
    with caplog.at_level("WARNING", logger="haf.eval.survival"):
        auc, mean = survival.td_auc(TRAIN_T, TRAIN_E, TEST_T, TEST_E, TEST_RISK, np.array([30.0, 70.0]))
        brier = survival.brier_at(TRAIN_T, TRAIN_E, TEST_T, TEST_E, np.full(12, 0.5), 100.0)
    assert len(auc) == 2 and np.isnan(auc).all() and math.isnan(mean) and math.isnan(brier)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("td-AUC undefined: all times must be within follow-up time") for m in messages)
    assert any(m.startswith("Brier score at 100 days undefined: ") and "None" not in m for m in messages)
    # an event before tau but no comparable pair: NaN, not an error
    assert math.isnan(survival.uno_c(TRAIN_T, TRAIN_E, [1.0, 2.0, 3.0], [0, 0, 1], [0.1, 0.2, 0.3], 50.0))


def test_auc_or_nan_keeps_labelled_patients_only():
    label = np.array([1, 0, np.nan, 1, 0, 0])
    score = np.array([0.9, 0.2, 100.0, 0.3, 0.4, 0.1])
    # pairs (pos, neg): (0.9 > 0.2, 0.4, 0.1), (0.3 > 0.2, 0.1; < 0.4): 5 of 6
    assert auc_or_nan(label, score) == pytest.approx(5 / 6)
    assert math.isnan(auc_or_nan(np.array([1.0, 1.0, np.nan]), np.array([0.1, 0.2, 0.3])))


def test_score_helpers_at_their_edges():
    # two labelled patients, one per class: defined (1.0); missing labels may come as None
    assert auc_or_nan([1, 0], [0.9, 0.1]) == 1.0
    assert auc_or_nan([1, None, 0, 1], [0.2, 5.0, 0.4, 0.9]) == pytest.approx(0.5)
    assert math.isnan(auc_or_nan([1.0], [0.3])) and math.isnan(auc_or_nan([0, 0, 0], [0.1, 0.2, 0.3]))
    # events as 0/1 integers; a single event is enough for comparable pairs
    t = np.array([1.0, 2.0, 3.0, 4.0])
    assert cindex_or_nan(t, np.array([1, 0, 1, 0]), -t) == 1.0
    assert cindex_or_nan(t, np.array([0, 1, 0, 0]), np.array([0.0, 1.0, 0.5, 2.0])) == pytest.approx(0.5)
    # an event but no comparable pair (the only death is the last time): NaN, not an error
    assert math.isnan(
        cindex_or_nan(np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3]))
    )


# ---------------------------------------------------------------------------------------------
# bootstrap CI and paired test
# ---------------------------------------------------------------------------------------------
def _pooled(label, risk, pred=None):
    label = np.asarray(label, dtype=int)
    return pd.DataFrame(
        dict(
            patient_id=[f"p{i:03d}" for i in range(len(label))],
            fold=0,
            label=label,
            risk=np.asarray(risk, float),
            pred=(np.asarray(risk) >= 0).astype(int) if pred is None else pred,
        )
    )


def _pair_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUC from the pairs: (concordant + ties / 2) / (n_pos n_neg).

    Counted exactly (halves are exact in floating point), so two methods with the same AUC on a
    resample give a delta of exactly 0, which the paired test's ``delta <= 0`` / ``delta >= 0``
    counts depend on (sklearn's trapezoid can differ in the last bit).
    """
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return np.nan
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg)))


def _resample_metrics(pooled: pd.DataFrame, idx: np.ndarray) -> dict[str, np.ndarray]:
    """AUC, accuracy, balanced accuracy of each resample, one at a time with sklearn / numpy."""
    y, r, p = (pooled[c].to_numpy() for c in ("label", "risk", "pred"))
    out = {"auc": [], "accuracy": [], "balanced_accuracy": []}
    for row in idx:
        yb, rb, pb = y[row], r[row], p[row]
        out["auc"].append(_pair_auc(yb, rb))
        out["accuracy"].append(np.mean(yb == pb))
        sens = np.mean(pb[yb == 1] == 1) if (yb == 1).any() else np.nan
        spec = np.mean(pb[yb == 0] == 0) if (yb == 0).any() else np.nan
        out["balanced_accuracy"].append((sens + spec) / 2)
    return {k: np.array(v) for k, v in out.items()}


def test_bootstrap_ci_is_the_percentile_interval_of_the_resamples():
    rng = np.random.default_rng(11)
    label = rng.integers(0, 2, 40)
    pooled = _pooled(label, label * 0.8 + rng.normal(size=40))
    n_boot, seed = 400, 9
    ci = binary.bootstrap_ci(pooled, n_boot, seed, level=0.9)
    idx = np.random.default_rng(seed).integers(0, 40, size=(n_boot, 40))  # the documented resampling
    draws = _resample_metrics(pooled, idx)
    for metric, values in draws.items():
        valid = values[~np.isnan(values)]
        assert ci[f"{metric}_n_boot_valid"] == len(valid)
        # alpha = (1 - level) / 2 = 0.05 per side; the quantile at 2 alpha is a different number here
        assert ci[f"{metric}_ci_low"] == pytest.approx(np.quantile(valid, 0.05), abs=1e-12)
        assert ci[f"{metric}_ci_high"] == pytest.approx(np.quantile(valid, 0.95), abs=1e-12)
        assert abs(np.quantile(valid, 0.10) - np.quantile(valid, 0.05)) > 1e-3
        assert abs(np.quantile(valid, 0.90) - np.quantile(valid, 0.95)) > 1e-3
    assert ci["auc_pooled"] == pytest.approx(roc_auc_score(label, pooled["risk"]))
    assert ci["accuracy_pooled"] == pytest.approx(np.mean(label == pooled["pred"]))
    assert ci["n_pooled"] == 40 and ci["n_boot"] == n_boot


def test_bootstrap_ci_on_a_tiny_sample_counts_resamples_with_one_class():
    pooled = _pooled([1, 0, 1], [0.5, -0.2, -0.1])
    ci = binary.bootstrap_ci(pooled, 200, seed=1)
    idx = np.random.default_rng(1).integers(0, 3, size=(200, 3))
    one_class = np.array([len(np.unique(pooled["label"].to_numpy()[row])) < 2 for row in idx])
    assert one_class.any()
    assert ci["auc_n_boot_valid"] == int((~one_class).sum()) and ci["accuracy_n_boot_valid"] == 200


def test_paired_bootstrap_delta_ci_and_p_value_by_hand():
    rng = np.random.default_rng(12)
    label = rng.integers(0, 2, 30)
    a = _pooled(label, label * 0.6 + rng.normal(size=30))
    b = _pooled(label, label * 0.3 + rng.normal(size=30))
    b = b.iloc[::-1].reset_index(drop=True)  # another row order: pairing goes by patient id
    extra = _pooled([1], [0.0]).assign(patient_id="only_b")
    result = binary.paired_bootstrap(a, pd.concat([b, extra], ignore_index=True), 300, seed=4, level=0.8)
    idx = np.random.default_rng(4).integers(0, 30, size=(300, 30))
    b_sorted = b.sort_values("patient_id").reset_index(drop=True)
    delta = _resample_metrics(a, idx)["auc"] - _resample_metrics(b_sorted, idx)["auc"]
    delta = delta[~np.isnan(delta)]
    k = len(delta)
    p = min(1.0, 2 * min((np.sum(delta <= 0) + 1) / (k + 1), (np.sum(delta >= 0) + 1) / (k + 1)))
    assert 0.01 < p < 1  # the example is not at either end of the scale
    assert result["p_value"] == pytest.approx(p, abs=1e-12)
    assert result["delta_ci_low"] == pytest.approx(np.quantile(delta, 0.1), abs=1e-12)
    assert result["delta_ci_high"] == pytest.approx(np.quantile(delta, 0.9), abs=1e-12)
    point = roc_auc_score(label, a["risk"]) - roc_auc_score(label, b_sorted["risk"])
    assert result["delta"] == pytest.approx(point, abs=1e-12)
    assert result["auc_reference"] == pytest.approx(roc_auc_score(label, a["risk"]), abs=1e-12)
    assert result["n_common"] == 30 and result["n_only_other"] == 1 and result["n_only_reference"] == 0
    assert result["n_boot_valid"] == k


def test_paired_bootstrap_p_value_floor_is_one_over_b_plus_one():
    # the reference beats the other on every resample: p = 2 / (B + 1), the smallest value it can take
    label = np.array([0, 1] * 10)
    a = _pooled(label, label + 0.01 * np.arange(20))
    b = _pooled(label, -label + 0.01 * np.arange(20))
    result = binary.paired_bootstrap(a, b, 99, seed=0)
    assert result["p_value"] == pytest.approx(2 / 100)
    with pytest.raises(ValueError, match="label"):
        binary.paired_bootstrap(a, b.assign(label=1 - label), 10, seed=0)


# ---------------------------------------------------------------------------------------------
# masking rates
# ---------------------------------------------------------------------------------------------
def _tolerance(rate: float, n: int) -> float:
    """Five binomial standard errors: a false alarm has probability ~6e-7."""
    return 5 * math.sqrt(rate * (1 - rate) / n)


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_dropout_masking_rate_matches_the_closed_form(p):
    # k observed modalities: one is kept if not dropped (1 - p) or if all k were dropped and it is
    # the one given back (p^k / k)
    n_patients, repeats = 600, 20
    present = np.zeros((n_patients, 7), dtype=bool)
    present[:200] = True  # k = 7
    present[200:400, [0, 3]] = True  # k = 2
    present[400:, 5] = True  # k = 1: never left without a modality
    masks = draw_masks(present, p, repeats, "dropout", seed=3, fold=1)
    assert not (masks & ~present).any()
    for rows, k in ((slice(0, 200), 7), (slice(200, 400), 2), (slice(400, 600), 1)):
        kept = masks[:, rows][:, :, present[rows][0]]
        rate = (1 - p) + p**k / k
        n = kept.size
        assert abs(kept.mean() - rate) <= _tolerance(rate, n), (k, kept.mean(), rate)
    assert masks.any(axis=2).all()


def _group_cohort() -> tuple[np.ndarray, dict[str, slice]]:
    """Presence patterns a group scenario treats differently (rows: 400 all seven, 400 wsi + clin, 200
    pathology only, 200 tabular only)."""
    present = np.zeros((1200, 7), dtype=bool)
    present[:400] = True
    present[400:800, [0, 3]] = True  # one modality of each group
    present[800:1000, [0, 1]] = True  # pathology only
    present[1000:, 2:] = True  # tabular only
    rows = {"all": slice(0, 400), "one_each": slice(400, 800), "path_only": slice(800, 1000),
            "tab_only": slice(1000, 1200)}  # fmt: skip
    return present, rows


@pytest.mark.parametrize("p", [0.05, 0.15, 0.30])
@pytest.mark.parametrize("scenario", ["pathology", "tabular"])
def test_group_scenarios_drop_the_whole_group_at_rate_p(scenario, p):
    # closed form: a patient with the group and something outside it loses the whole group with
    # probability p; one with nothing outside it never loses it; the rest is never touched
    present, rows = _group_cohort()
    repeats = 30
    masks = draw_masks(present, p, repeats, scenario, seed=5, fold=0)
    group = np.array([m in (PATHOLOGY if scenario == "pathology" else TABULAR) for m in MODALITIES])
    assert not (masks & ~present).any()
    np.testing.assert_array_equal(
        masks[:, :, ~group], np.broadcast_to(present[:, ~group], masks[:, :, ~group].shape)
    )
    kept_group = masks[:, :, group].any(axis=2)
    # all or nothing: a patient keeps every observed modality of the group or none of them
    observed = present[:, group]
    np.testing.assert_array_equal(masks[:, :, group], kept_group[:, :, None] & observed[None])
    alone = "path_only" if scenario == "pathology" else "tab_only"
    other = "tab_only" if scenario == "pathology" else "path_only"
    assert kept_group[:, rows[alone]].all()  # nothing else to keep: never masked
    np.testing.assert_array_equal(
        masks[:, rows[other]], np.broadcast_to(present[rows[other]], masks[:, rows[other]].shape)
    )
    for name in ("all", "one_each"):
        lost = ~kept_group[:, rows[name]]
        assert abs(lost.mean() - p) <= _tolerance(p, lost.size), (name, lost.mean(), p)
    # the per-modality reading (each modality of the group dropped on its own) loses the whole
    # pathology group with probability p^2 only: far outside this tolerance
    if scenario == "pathology":
        assert abs(p**2 - p) > 2 * _tolerance(p, repeats * 400)


@pytest.mark.parametrize("p", [0.05, 0.15, 0.30])
def test_mixed_drops_either_group_never_both_at_the_closed_form_rate(p):
    # both groups drawn independently at p; a patient drawn to lose both gets one back (uniformly):
    # P(lose pathology only) = p (1 - p) + p^2 / 2 = P(lose tabular only); P(keep both) = (1 - p)^2
    present, rows = _group_cohort()
    masks = draw_masks(present, p, 30, "mixed", seed=9, fold=3)
    path = np.array([m in PATHOLOGY for m in MODALITIES])
    for name in ("all", "one_each"):
        m = masks[:, rows[name]]
        has_path, has_tab = m[:, :, path].any(axis=2), m[:, :, ~path].any(axis=2)
        assert (has_path | has_tab).all()
        np.testing.assert_array_equal(
            m[:, :, path], has_path[:, :, None] & present[rows[name]][None][:, :, path]
        )
        np.testing.assert_array_equal(
            m[:, :, ~path], has_tab[:, :, None] & present[rows[name]][None][:, :, ~path]
        )
        one = p * (1 - p) + p**2 / 2
        for lost, rate in ((~has_path, one), (~has_tab, one), (has_path & has_tab, (1 - p) ** 2)):
            assert abs(lost.mean() - rate) <= _tolerance(rate, lost.size), (name, lost.mean(), rate)
    for name in ("path_only", "tab_only"):  # one group only: dropping it would leave nothing
        np.testing.assert_array_equal(
            masks[:, rows[name]], np.broadcast_to(present[rows[name]], masks[:, rows[name]].shape)
        )


def test_masks_depend_on_fold_scenario_and_p_not_on_the_call():
    present = np.ones((50, 7), dtype=bool)
    a = draw_masks(present, 0.5, 3, "dropout", seed=1, fold=0)
    assert np.array_equal(a, draw_masks(present, 0.5, 3, "dropout", seed=1, fold=0))
    for other in (
        draw_masks(present, 0.5, 3, "dropout", seed=2, fold=0),
        draw_masks(present, 0.5, 3, "dropout", seed=1, fold=1),
        draw_masks(present, 0.5, 3, "mixed", seed=1, fold=0),
        draw_masks(present, 0.5001, 3, "dropout", seed=1, fold=0),
    ):
        assert not np.array_equal(a, other)


def test_mask_draws_follow_the_documented_seed_and_rule():
    # a hand example: "mixed", p = 0.3, seed 35, fold 0, four patients with all seven modalities.
    # The stream default_rng(SeedSequence([35, 0, 3 (mixed), 3000])) gives, per (patient, group) in the
    # order (pathology, tabular): (0.1739, 0.8127), (0.8081, 0.9567), (0.9424, 0.0367), (0.1112, 0.2796),
    # then choice(2) = 1. So: patient 0 loses pathology, 1 keeps all, 2 loses tabular, 3 draws both
    # and gets the tabular group (dropped group 1) back.
    rng = np.random.default_rng(np.random.SeedSequence([35, 0, list(SCENARIOS).index("mixed"), 3000]))
    np.testing.assert_allclose(
        rng.random((4, 2)),
        [[0.1739, 0.8127], [0.8081, 0.9567], [0.9424, 0.0367], [0.1112, 0.2796]],
        atol=1e-4,
    )
    present = np.ones((4, 7), dtype=bool)
    masks = draw_masks(present, 0.3, 1, "mixed", seed=35, fold=0)
    tab = "cell,clin,path,blood,icd"
    assert kept_labels(masks[0]).tolist() == [tab, "wsi,tma," + tab, "wsi,tma", tab]
    # a 0/1 integer presence matrix means the same
    np.testing.assert_array_equal(draw_masks(present.astype(int), 0.3, 1, "mixed", seed=35, fold=0), masks)
    # a group is dropped whole even when only part of it is observed: wsi + clin + icd, pathology lost
    partial = np.zeros((4, 7), dtype=bool)
    partial[:, [0, 3, 6]] = True
    assert kept_labels(draw_masks(partial, 0.3, 1, "mixed", seed=35, fold=0)[0]).tolist() == [
        "clin,icd", "wsi,clin,icd", "wsi", "clin,icd"
    ]  # fmt: skip


def test_dropout_masks_are_those_of_the_per_modality_rule():
    # Fig. 2's scenario keeps its former draws: one uniform per (patient, modality), dropped where < p
    # among the observed ones, one rng.choice among the dropped modalities for a patient left empty
    present = np.ones((5, 7), dtype=bool)
    present[0, 1:] = False
    p = 0.8
    masks = draw_masks(present, p, 1, "dropout", seed=4, fold=1)
    rng = np.random.default_rng(np.random.SeedSequence([4, 1, list(SCENARIOS).index("dropout"), 8000]))
    drop = (rng.random(present.shape) < p) & present
    first = present & ~drop
    for i in np.flatnonzero(~first.any(axis=1)):
        first[i, rng.choice(np.flatnonzero(drop[i]))] = True
    np.testing.assert_array_equal(masks[0], first)


def test_a_pathology_mask_by_hand():
    # "pathology", p = 0.5, seed 0, fold 0: the stream gives one uniform per patient,
    # 0.2505, 0.7964, 0.2030, 0.1390; patient 0 (all seven) loses wsi and tma, patient 1 keeps them,
    # patient 2 (wsi + tma only) has nothing else and keeps them, patient 3 (tma + icd) loses tma
    rng = np.random.default_rng(np.random.SeedSequence([0, 0, list(SCENARIOS).index("pathology"), 5000]))
    np.testing.assert_allclose(rng.random((4, 1))[:, 0], [0.2505, 0.7964, 0.2030, 0.1390], atol=1e-4)
    present = np.zeros((4, 7), dtype=bool)
    present[:2] = True
    present[2, [0, 1]] = True
    present[3, [1, 6]] = True
    masks = draw_masks(present, 0.5, 1, "pathology", seed=0, fold=0)[0]
    assert kept_labels(masks).tolist() == [
        "cell,clin,path,blood,icd", "wsi,tma,cell,clin,path,blood,icd", "wsi,tma", "icd"
    ]  # fmt: skip


def test_mask_inputs_are_checked_with_clear_errors():
    present = np.ones((3, 7), dtype=bool)
    with pytest.raises(
        ValueError, match="unknown masking scenario 'radiology'; expected one of dropout, pathology"
    ):
        draw_masks(present, 0.1, 1, "radiology", seed=0, fold=0)
    for p in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"drop probability must be in \[0, 1\), got {p}"):
            draw_masks(present, p, 1, "dropout", seed=0, fold=0)
    with pytest.raises(ValueError, match=r"present must have shape \(n, 7\), got \(3, 6\)"):
        draw_masks(present[:, :6], 0.1, 1, "dropout", seed=0, fold=0)
    with pytest.raises(ValueError, match=r"present must have shape \(n, 7\), got \(7,\)"):
        draw_masks(present[0], 0.1, 1, "dropout", seed=0, fold=0)
    one_empty = present.copy()
    one_empty[1] = False
    with pytest.raises(ValueError, match="^a patient with no observed modality cannot be masked$"):
        draw_masks(one_empty, 0.1, 1, "dropout", seed=0, fold=0)


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("with_prob", [False, True])
def test_masked_prediction_table_columns_and_prob(batched, with_prob):
    present = np.ones((4, 7), dtype=bool)

    def predict(mask):
        risk = mask.sum(axis=1).astype(float)
        return risk, (risk / 10 if with_prob else None)

    table = masked_prediction_table(
        predict, present, ["a", "b", "c", "d"], method="m", fold=3, seed=1,
        protocols={"dropout": [0.0, 0.5]}, n_repeats=2, batched=batched,
    )  # fmt: skip
    assert table.columns.tolist() == [
        "method", "fold", "scenario", "p", "repeat", "patient_id", "n_present", "kept", "risk", "prob"
    ]  # fmt: skip
    assert table.index.tolist() == list(range(12))
    assert (table["method"] == "m").all() and (table["fold"] == 3).all()
    assert table["repeat"].tolist() == [0] * 4 + [0] * 4 + [1] * 4
    assert table["patient_id"].tolist() == ["a", "b", "c", "d"] * 3
    assert table["prob"].dtype == float
    # kept names the modalities of each row's mask, in slot order, as many as n_present
    assert (table["kept"].str.count(",") + 1 == table["n_present"]).all()
    assert (table.loc[table["p"] == 0, "kept"] == ",".join(MODALITIES)).all()
    if with_prob:
        np.testing.assert_allclose(table["prob"], table["risk"] / 10)
    else:
        assert table["prob"].isna().all()


# ---------------------------------------------------------------------------------------------
# target rules at their boundaries
# ---------------------------------------------------------------------------------------------
def _clinical(rows):
    return pd.DataFrame(
        rows,
        columns=["patient_id", "survival_status", "days_to_last_information", "survival_status_with_cause"],
    ).set_index("patient_id")


BOUNDARY = _clinical(
    [
        ("d1824", "deceased", 1824, "deceased tumor specific"),
        ("d1825", "deceased", 1825, "deceased tumor specific"),
        ("d1826", "deceased", 1826, "deceased tumor specific"),
        ("a1824", "living", 1824, None),
        ("a1825", "living", 1825, None),
        ("a1826", "living", 1826, None),
        ("d1", "deceased", 1, "deceased not tumor specific"),  # 0 days: excluded (bad input)
        ("a1", "living", 1, None),
    ]
)


def test_horizon_rule_at_the_horizon_and_one_day_either_side():
    targets, counts = build_targets(BOUNDARY, list(BOUNDARY.index), "horizon", 1825)
    got = dict(zip(targets["patient_id"], targets["label"], strict=True))
    reason = dict(zip(targets["patient_id"], targets["label_reason"], strict=True))
    # death on the horizon day counts as within the horizon; one day later does not
    assert got["d1824"] == 1 and got["d1825"] == 1 and got["d1826"] == 0
    assert reason["d1826"] == "death_after_horizon" and reason["d1825"] == "death_within_horizon"
    # alive with follow-up exactly the horizon is known alive at the horizon; one day short is censored
    assert math.isnan(got["a1824"]) and got["a1825"] == 0 and got["a1826"] == 0
    assert reason["a1824"] == "censored_before_horizon" and reason["a1825"] == "alive_at_horizon"
    assert got["d1"] == 1 and math.isnan(got["a1"])
    assert counts["labelled"] == 6 and counts["positives"] == 3 and counts["no_label"] == 2
    assert targets["event"].tolist() == [1, 1, 1, 0, 0, 0, 1, 0]
    assert targets["time"].tolist() == [1824, 1825, 1826, 1824, 1825, 1826, 1, 1]
    # another horizon moves the boundary with it
    shorter, _ = build_targets(BOUNDARY, ["d1824", "a1824"], "horizon", 1823)
    assert shorter["label"].tolist() == [0, 0]


def test_status_rules_ignore_the_horizon_and_drop_non_tumour_deaths():
    status, _ = build_targets(BOUNDARY, list(BOUNDARY.index), "status", 1825)
    assert status["label"].tolist() == [1, 1, 1, 0, 0, 0, 1, 0]
    specific, counts = build_targets(BOUNDARY, list(BOUNDARY.index), "status_tumor_specific", 1825)
    assert specific["label"].tolist()[:6] == [1, 1, 1, 0, 0, 0]
    assert math.isnan(specific["label"].iloc[6]) and specific["label_reason"].iloc[6] == "non_tumour_death"
    assert counts["no_label"] == 1 and "horizon_days" not in counts


def test_target_defaults_counts_and_log(caplog):
    cohort = ["d1826", "nobody", "a1825", "d1825", "d1", "a1824", "a1", "d1824", "a1826"]
    with caplog.at_level("INFO", logger="haf.cohort.targets"):
        targets, counts = build_targets(BOUNDARY, cohort)  # defaults: the 5-year horizon rule
    assert targets.columns.tolist() == list(TARGET_COLUMNS)
    assert targets["patient_id"].tolist() == [
        c for c in cohort if c != "nobody"
    ]  # an unknown id skips only itself
    assert targets["label"].tolist()[:1] == [0.0]  # d1826: death one day after 1825 days
    assert counts == {
        "rule": "horizon",
        "cohort": 9,
        "horizon_days": 1825,
        "excluded_no_clinical_record": 1,
        "excluded_no_survival_status": 0,
        "excluded_no_follow_up_time": 0,
        "excluded_zero_follow_up_time": 0,
        "n_patients": 8,
        "events": 4,
        "label_reasons": {
            "alive_at_horizon": 2,
            "censored_before_horizon": 2,
            "death_after_horizon": 1,
            "death_within_horizon": 3,
        },
        "labelled": 6,
        "positives": 3,
        "no_label": 2,
    }
    messages = [r.getMessage() for r in caplog.records]
    assert "1 patients excluded from targets (no clinical record): nobody" in messages
    assert (
        "targets (rule horizon, horizon 1825 days): 8 patients, 4 events; binary label for 6 (3 positive, 50.0 %), none for 2"
        in messages
    )
    assert "  label_reason death_within_horizon       3" in messages
    caplog.clear()
    many = [f"x{i:02d}" for i in range(21)]
    with caplog.at_level("INFO", logger="haf.cohort.targets"):
        _, status = build_targets(BOUNDARY, ["d1", *many], "status")
    assert (
        "21 patients excluded from targets (no clinical record): " + ", ".join(many[:20]) + " ..."
        in caplog.text
    )
    assert (
        "targets (rule status): 1 patients, 1 events; binary label for 1 (1 positive, 100.0 %), none for 0"
        in (caplog.text)
    )
    assert status["rule"] == "status" and status["cohort"] == 22
    caplog.clear()
    with caplog.at_level("INFO", logger="haf.cohort.targets"):
        build_targets(BOUNDARY, many[:20], "status")
    assert ", ".join(many[:20]) + "\n" in caplog.text + "\n" and " ..." not in caplog.text


def test_target_errors_name_the_source_and_field():
    with pytest.raises(
        ValueError, match=r"target.rule must be one of \('horizon', 'status', 'status_tumor_specific'\)"
    ):
        build_targets(BOUNDARY, ["d1"], "os")
    bad = BOUNDARY.copy()
    bad.loc["a1", "days_to_last_information"] = -5
    with pytest.raises(
        HafInputError,
        match=r"clinical_data.json, patient a1, field 'days_to_last_information': negative follow-up time -5",
    ):
        build_targets(bad, ["a1"])


def test_targets_round_trip_types(tmp_path):
    clinical = BOUNDARY.rename(index=lambda pid: f"{list(BOUNDARY.index).index(pid):03d}")
    targets, _ = build_targets(clinical, list(clinical.index))
    write_tsv(tmp_path / "targets.tsv", targets)
    back = read_targets(tmp_path / "targets.tsv")
    assert back.columns.tolist() == list(TARGET_COLUMNS)
    assert back["time"].dtype == float and back["event"].dtype.kind == "i" and back["label"].dtype == float
    pd.testing.assert_frame_equal(back, targets.assign(time=targets["time"].astype(float)), check_dtype=False)
    with pytest.raises(HafInputError, match="cannot read targets table"):
        read_targets(tmp_path / "missing.tsv")
