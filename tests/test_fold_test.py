"""The split-aware fold-level test of the claims table (haf.eval.fold_test): the corrected resampled
t-test pinned by hand and by scipy, and a split artifact that the patient bootstrap alone would call
an effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from haf.eval.claims import auc_difference, combined_verdict
from haf.eval.fold_test import corrected_fold_test, part_size_ratio


def test_corrected_t_by_hand():
    # effects 0.1, 0.3, 0.2, 0.0: mean 0.15, sample variance 0.05 / 3; ratio 0.25:
    # se = sqrt((1/4 + 1/4) * 0.05/3) = sqrt(1/120); t = 0.15 * sqrt(120) = 1.643168; df 3
    out = corrected_fold_test([0.1, 0.3, 0.2, 0.0], 0.25)
    se = np.sqrt(1 / 120)
    t_crit = 3.182446305284263  # t_{0.975, 3} (tables)
    assert out.mean == pytest.approx(0.15, abs=1e-15)
    assert out.ci_low == pytest.approx(0.15 - t_crit * se, abs=1e-12)
    assert out.ci_high == pytest.approx(0.15 + t_crit * se, abs=1e-12)
    assert out.p == pytest.approx(2 * stats.t.sf(0.15 * np.sqrt(120), 3), rel=1e-12)
    assert 0.19 < out.p < 0.20 and out.n_folds == 4


def test_without_the_correction_it_is_the_one_sample_t_test():
    rng = np.random.default_rng(4)
    effects = rng.normal(0.05, 0.1, size=12)
    ours = corrected_fold_test(effects, 0.0, null=0.01, level=0.9)
    ref = stats.ttest_1samp(effects, 0.01)
    ci = ref.confidence_interval(0.9)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-10)
    # the CI is about the mean, not the shifted null
    assert (ours.ci_low, ours.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_the_correction_widens_the_interval_by_its_factor():
    effects = [0.2, -0.1, 0.05, 0.3, 0.0, 0.15]
    plain = corrected_fold_test(effects, 0.0)
    corrected = corrected_fold_test(effects, 0.2)
    factor = np.sqrt((1 / 6 + 0.2) / (1 / 6))
    assert corrected.ci_high - corrected.mean == pytest.approx(
        factor * (plain.ci_high - plain.mean), rel=1e-12
    )
    assert corrected.p > plain.p


def test_degenerate_inputs():
    one = corrected_fold_test([0.2, np.nan], 0.1)
    assert one.n_folds == 1 and one.mean == 0.2 and np.isnan(one.ci_low) and np.isnan(one.p)
    flat = corrected_fold_test([0.0, 0.0, 0.0], 0.1)
    assert (flat.ci_low, flat.ci_high, flat.p) == (0.0, 0.0, 1.0)
    assert np.isnan(corrected_fold_test([], 0.1).mean)
    with pytest.raises(ValueError, match="test_train_ratio"):
        corrected_fold_test([0.1, 0.2], -0.1)


def test_part_size_ratio_from_a_folds_table():
    # fold 0: 2 test / 6 train; fold 1: 4 test / 4 train -> mean of 1/3 and 1
    parts = {0: ["test"] * 2 + ["train"] * 6 + ["val"] * 2, 1: ["test"] * 4 + ["train"] * 4 + ["val"] * 2}
    folds = pd.DataFrame(
        [
            {"patient_id": f"{i:03d}", "repeat": 0, "fold": f, "part": p}
            for f, ps in parts.items()
            for i, p in enumerate(ps)
        ]
    )
    assert part_size_ratio(folds) == pytest.approx((1 / 3 + 1) / 2, abs=1e-15)
    with pytest.raises(ValueError, match="fold 2 has no training patient"):
        part_size_ratio(
            pd.concat([folds, pd.DataFrame([{"patient_id": "099", "repeat": 0, "fold": 2, "part": "test"}])])
        )


@pytest.mark.parametrize(
    ("bootstrap", "fold", "expected"),
    [
        ("supported", "supported", "supported"),
        ("refuted", "refuted", "refuted"),
        ("supported", "inconclusive", "inconclusive"),
        ("inconclusive", "supported", "inconclusive"),
        ("supported", "refuted", "inconclusive"),
        ("inconclusive", "inconclusive", "inconclusive"),
    ],
)
def test_a_verdict_needs_both_tests(bootstrap, fold, expected):
    assert combined_verdict(bootstrap, fold) == expected


def _predictions(method, risk_of, labels, folds):
    rows = []
    for pid, (label, fold) in enumerate(zip(labels, folds, strict=True)):
        risk = risk_of(pid, fold)
        for part in ("test", "val"):
            rows.append(
                dict(method=method, seed=0, fold=fold if part == "test" else (fold + 1) % 5, part=part,
                     patient_id=f"{pid:03d}", prob=1 / (1 + np.exp(-risk)), risk=risk, label=float(label),
                     time=1000.0, event=0)
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_a_fold_offset_artifact_is_not_an_effect():
    """Method a = method b plus a constant per fold that follows the fold's test prevalence.

    Within every fold the two rank patients identically (fold AUC difference exactly 0), but pooling
    the folds turns the offsets into AUC: the patient bootstrap alone would call a better.
    """
    rng = np.random.default_rng(0)
    n, k = 400, 5
    folds = np.arange(n) % k
    prevalence = np.array([0.2, 0.35, 0.5, 0.65, 0.8])
    labels = (rng.random(n) < prevalence[folds]).astype(int)
    noise = rng.normal(size=n)
    b = _predictions("b", lambda i, f: noise[i], labels, folds)
    a = _predictions("a", lambda i, f: noise[i] + 3.0 * (prevalence[f] - 0.5), labels, folds)
    row = auc_difference(
        "a", pd.concat([a, b]), "a", "b", rule="fixed", repeats=None, n_boot=300, seed=1, ratio=0.25
    )
    assert row.bootstrap_verdict == "supported" and row.effect > 0.1, row
    assert row.fold_effect == pytest.approx(0.0, abs=1e-12) and row.n_folds == k
    assert row.fold_verdict == "inconclusive" and row.verdict == "inconclusive"
