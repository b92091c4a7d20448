"""Survival uncertainty: the vectorised resampler equals scikit-survival on the same resamples (duplicates
and ties included), the integrated Brier score by hand, bootstrap CIs and paired tests, reference choice.

Tolerances: the resampler and scikit-survival agreed to 3e-16 on these examples (measured); 1e-12 leaves
room for other BLAS builds while any wrong pair, weight or time would move a value by far more.
"""

from __future__ import annotations

import numpy as np
import pytest
from fakes.config import declare, load_config
from fakes.evaluation import write_fake_results

from haf.eval import survival as sv
from haf.eval import survival_tables as st
from haf.eval.data import load_predictions, read_cohort_survival
from haf.eval.repeats import counts_of, read_repeats
from haf.eval.survival_boot import SurvivalScorer

TOL = 1e-12


def _data(seed=0, n=80):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    death = rng.exponential(2000 * np.exp(-0.7 * z))
    censor = rng.uniform(200, 4000, n)
    time = np.maximum(np.minimum(death, censor).round(-1), 10)  # rounded: tied times
    event = (death <= censor).astype(int)
    risk = np.round(z + rng.normal(size=n), 1)  # rounded: tied risks
    train_time = np.r_[rng.exponential(2500, 200).round() + 1, time.max() + 30]
    train_event = np.r_[(rng.random(200) < 0.4).astype(int), 0]
    times = np.linspace(np.quantile(time[event == 1], 0.1), np.quantile(time[event == 1], 0.8), 7)
    surv_prob = np.exp(-np.exp(risk)[:, None] * times[None, :] / 3000)
    return time, event, risk, train_time, train_event, times, surv_prob


def test_resampler_equals_scikit_survival_on_the_same_resamples():
    time, event, risk, tt, te, times, surv_prob = _data()
    tau = times.max() + 40
    scorer = SurvivalScorer(tt, te, time, event, risk, times, tau, survival=surv_prob)
    idx = np.random.default_rng(1).integers(0, len(time), size=(12, len(time)))
    draws = scorer.score(counts_of(idx, len(time)))
    for b, i in enumerate(idx):
        assert draws["harrell_c"][b] == pytest.approx(sv.harrell_c(time[i], event[i], risk[i]), abs=TOL)
        assert draws["uno_c"][b] == pytest.approx(sv.uno_c(tt, te, time[i], event[i], risk[i], tau), abs=TOL)
        assert draws["td_auc_mean"][b] == pytest.approx(
            sv.td_auc(tt, te, time[i], event[i], risk[i], times)[1], abs=TOL
        )
        ibs = sv.integrated_brier(tt, te, time[i], event[i], surv_prob[i], times)
        assert draws["ibs"][b] == pytest.approx(ibs, abs=TOL)
    point = scorer.score(np.ones((1, len(time))))
    assert point["harrell_c"][0] == pytest.approx(sv.harrell_c(time, event, risk), abs=TOL)
    curve = scorer.td_auc(np.ones((1, len(time))))[0]
    assert np.allclose(curve, sv.td_auc(tt, te, time, event, risk, times)[0], atol=TOL)


def test_resamples_scikit_survival_cannot_score_are_nan():
    time, event, risk, tt, te, times, surv_prob = _data(seed=2, n=30)
    scorer = SurvivalScorer(tt, te, time, event, risk, times, times.max() + 1, survival=surv_prob)
    censored = np.flatnonzero(event == 0)
    counts = np.zeros((3, len(time)))
    counts[0, censored] = 1  # no death: no comparable pair
    counts[1, np.argsort(time)[:5]] = 1  # follow-up ends before the grid does
    counts[2] = 1
    draws = scorer.score(counts)
    assert np.isnan(draws["harrell_c"][0]) and np.isnan(draws["uno_c"][0])
    assert np.isnan(sv.harrell_c(time[censored], event[censored], risk[censored]))
    assert np.isnan(draws["td_auc_mean"][1]) and np.isnan(draws["ibs"][1])
    assert np.isfinite([draws[m][2] for m in draws]).all()


def test_integrated_brier_score_by_hand():
    # no censoring in the training data: G = 1 and the Brier score is the plain squared error
    train_time, train_event = np.array([50.0, 400.0, 500.0]), np.array([1, 1, 1])
    time = np.array([100.0, 250.0, 300.0, 450.0])
    event = np.array([1, 1, 0, 0])
    times = np.array([150.0, 200.0, 350.0])
    s = np.array([[0.5, 0.4, 0.3], [0.9, 0.8, 0.6], [0.9, 0.9, 0.9], [0.7, 0.6, 0.5]])
    # t=150: patient 1 died (case: S^2), the others alive (controls: (1-S)^2)
    bs = [
        (0.5**2 + 0.1**2 + 0.1**2 + 0.3**2) / 4,
        (0.4**2 + 0.2**2 + 0.1**2 + 0.4**2) / 4,
        (0.3**2 + 0.6**2 + 0.0 + 0.5**2) / 4,  # t=350: patient 3 censored at 300, neither case nor control
    ]
    expected = (0.5 * (bs[0] + bs[1]) * 50 + 0.5 * (bs[1] + bs[2]) * 150) / 200
    assert sv.integrated_brier(train_time, train_event, time, event, s, times) == pytest.approx(
        expected, abs=TOL
    )
    # a test time beyond the training follow-up is clamped: the same score, no error
    later = time.copy()
    later[3] = 900.0
    assert sv.integrated_brier(train_time, train_event, later, event, s, times) == pytest.approx(
        expected, abs=TOL
    )
    assert np.isnan(sv.integrated_brier(train_time, train_event, time, event, s[:, :1], times[:1]))


def test_breslow_survival_is_the_baseline_to_the_power_exp_risk():
    base_risk, base_time, base_event = (
        np.array([0.0, 0.0, 0.0]),
        np.array([10.0, 20.0, 30.0]),
        np.array([1, 1, 0]),
    )
    s = sv.breslow_survival(
        base_risk, base_time, base_event, np.array([0.0, np.log(2)]), np.array([15.0, 25.0])
    )
    # Breslow with zero risks: H0(15) = 1/3, H0(25) = 1/3 + 1/2
    s0 = np.exp(-np.array([1 / 3, 1 / 3 + 1 / 2]))
    assert np.allclose(s, [s0, s0**2], atol=TOL)
    assert sv.breslow_survival(base_risk, base_time, base_event, np.zeros(2), np.array([40.0])) is None


METHODS = declare(
    {
        "haf": dict(family="fusion", align="ga", drop=True),
        "haf_copy": dict(family="fusion", align="ga", drop=True),
        "haf_cox": dict(family="fusion", align="ga", drop=True, task_loss="cox"),
        "weak_cox": dict(family="parachute", task_loss="cox"),
    }
)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("surv")
    ev = load_config({"evaluation": {"dropout_p": [0.0], "repeats": 1}})["evaluation"]
    write_fake_results(
        root,
        METHODS,
        n=160,
        k=2,
        repeats=2,
        evaluation=ev,
        with_masked=False,
        strengths={"haf": 2.0, "haf_cox": 0.8, "weak_cox": 0.0},  # haf_cox: the log hazard ratio of the fakes
        copies={"haf_copy": "haf"},
    )
    preds = load_predictions(
        [root / "methods" / m / f"fold_{f}" / "predictions.tsv" for m in METHODS for f in range(4)]
    )
    repeats = read_repeats(root / "cohort" / "folds.tsv")
    grid = st.cohort_grid(
        read_cohort_survival(root / "cohort" / "folds.tsv", root / "cohort" / "targets.tsv"), 6
    )
    sets = {m: st.pooled_sets(preds[preds["method"] == m], grid, repeats) for m in METHODS}
    return preds, repeats, grid, sets


def test_survival_ci_brackets_the_repeat_averaged_point_and_paired_tests_know_the_answer(fake):
    preds, repeats, grid, sets = fake
    summary, _, _ = st.survival_metrics(preds[preds["method"] == "haf_cox"], grid, repeats)
    ci = st.survival_ci(sets["haf_cox"], grid, 200, seed=3)
    for metric in ("harrell_c", "uno_c", "td_auc_mean", "ibs"):
        assert ci[f"{metric}_ci_low"] < summary[f"{metric}_pooled"] < ci[f"{metric}_ci_high"], metric
    assert summary["ibs_status"].startswith("Breslow baseline on the val part")
    same = st.survival_paired(sets["haf"], sets["haf_copy"], grid, 100, seed=3)
    for metric in ("harrell_c", "uno_c", "td_auc_mean"):
        assert same[metric]["delta"] == 0 and same[metric]["p_value"] == 1
        assert same[metric]["delta_ci_low"] == same[metric]["delta_ci_high"] == 0
    better = st.survival_paired(sets["haf_cox"], sets["weak_cox"], grid, 200, seed=3)
    assert better["harrell_c"]["delta_ci_low"] > 0 and better["harrell_c"]["p_value"] < 0.02
    assert better["ibs"]["delta_ci_high"] < 0  # a real signal has the lower (better) Brier score
    binary, _, _ = st.survival_metrics(preds[preds["method"] == "haf"], grid, repeats)
    assert np.isnan(binary["ibs_pooled"]) and binary["ibs_status"] == "binary method: no survival curve"


def test_reference_of_each_survival_metric():
    methods = {"haf": {}, "parachute": {}, "haf_cox": {}}
    cox = {"haf": False, "parachute": True, "haf_cox": True}
    refs = st.survival_references(methods, "haf", cox)
    assert refs == {"harrell_c": "haf", "uno_c": "haf", "td_auc_mean": "haf", "ibs": "haf_cox"}
    assert st.survival_references({"haf": {}, "parachute": {}}, "haf", cox)["ibs"] == "parachute"
    assert st.survival_references({"parachute": {}, "haf_cox": {}}, "haf", cox)["harrell_c"] == "parachute"
    assert st.survival_references(methods, "parachute", cox)["ibs"] == "parachute"
    assert st.survival_references({"haf": {}}, "haf", cox)["ibs"] is None
