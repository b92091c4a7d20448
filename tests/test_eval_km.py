"""Kaplan-Meier number-at-risk row and censor ticks, on a hand example and against scikit-survival."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from haf.eval import survival
from haf.eval.survival import DAYS_PER_YEAR, censor_marks, km_curve, number_at_risk
from haf.eval.survival_tables import at_risk_years, km_at_risk

# Seven patients: deaths at 2, 3, 5, 10; censored at 3 (tied with a death), 7, 7.
TIME = np.array([2, 3, 3, 5, 7, 7, 10], dtype=float)
EVENT = np.array([1, 0, 1, 1, 0, 0, 1])


def test_number_at_risk_on_a_hand_example():
    table = number_at_risk(TIME, EVENT, np.array([0, 3, 5, 7, 11], dtype=float))
    # at t: followed up to at least t; deaths / censorings strictly before t (worked out by hand)
    assert table["at_risk"].tolist() == [7, 6, 4, 3, 0]
    assert table["events_before"].tolist() == [0, 1, 2, 3, 4]
    assert table["censored_before"].tolist() == [0, 0, 1, 1, 3]
    total = table["at_risk"] + table["events_before"] + table["censored_before"]
    assert (total == len(TIME)).all()


def test_number_at_risk_equals_the_risk_sets_behind_scikit_survivals_estimate():
    """KM: S(t_j) / S(t_j-1) = 1 - d_j / n_j, so sksurv's curve gives the risk set n_j at each death time."""
    from sksurv.nonparametric import kaplan_meier_estimator

    rng = np.random.default_rng(4)
    time = rng.integers(1, 60, size=80).astype(float)
    event = rng.random(80) < 0.6
    t, s = kaplan_meier_estimator(event, time)
    prev = np.r_[1.0, s[:-1]]
    deaths = np.array([(event & (time == tj)).sum() for tj in t])
    keep = (deaths > 0) & (s > 0)
    n_from_sksurv = deaths[keep] / (1 - s[keep] / prev[keep])
    np.testing.assert_allclose(number_at_risk(time, event, t[keep])["at_risk"], n_from_sksurv, rtol=1e-9)


def test_censor_ticks_sit_on_the_curve():
    curve = km_curve(TIME, EVENT)
    times, heights = censor_marks(curve, TIME, EVENT)
    assert times.tolist() == [3, 7, 7]
    # KM by hand: S(2) = 6/7, S(3) = 6/7 * 5/6 = 5/7, S(5) = 5/7 * 3/4 = 15/28, flat to 10
    np.testing.assert_allclose(heights, [5 / 7, 15 / 28, 15 / 28])


def test_at_risk_years_and_the_per_group_table():
    groups = pd.DataFrame(
        {
            "group": ["high"] * 4 + ["low"] * 3,
            "time": np.array([0.5, 1.5, 2.5, 6.5, 1.2, 3.0, 4.0]) * DAYS_PER_YEAR,
            "event": [1, 1, 0, 1, 0, 1, 0],
        }
    )
    years = at_risk_years({"m": groups})
    assert years.tolist() == [0, 1, 2, 3, 4, 5, 6]
    long = groups.assign(time=groups["time"] * 3)  # 19.5 years: steps of ceil(19 / 6) = 4 years
    assert at_risk_years({"m": long}).tolist() == [0, 4, 8, 12, 16]
    table = km_at_risk(groups, np.array([0.0, 1.0, 3.0, 6.0]))
    high = table[table["group"] == "high"]
    low = table[table["group"] == "low"]
    assert high["at_risk"].tolist() == [4, 3, 1, 1] and high["events_before"].tolist() == [0, 1, 2, 2]
    assert high["censored_before"].tolist() == [0, 0, 1, 1]
    assert low["at_risk"].tolist() == [3, 3, 2, 0] and low["censored_before"].tolist() == [0, 0, 1, 2]
    np.testing.assert_allclose(table["time"], table["years"] * DAYS_PER_YEAR)


def test_plot_km_draws_at_risk_rows(tmp_path):
    pytest.importorskip("matplotlib")
    from haf.eval.figures import plot_km

    rng = np.random.default_rng(0)
    n = 30
    groups = {
        "haf": pd.DataFrame(
            {
                "group": np.where(np.arange(n) < n // 2, "high", "low"),
                "time": rng.uniform(30, 6 * DAYS_PER_YEAR, n),
                "event": (rng.random(n) < 0.5).astype(int),
            }
        )
    }
    pdf, png = tmp_path / "km.pdf", tmp_path / "km.png"
    plot_km(groups, {"haf": {"logrank_p": survival.logrank(
        groups["haf"]["time"], groups["haf"]["event"], groups["haf"]["group"])[1]}},
        {"haf": "HAF"}, pdf, png, title="t")  # fmt: skip
    assert pdf.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
