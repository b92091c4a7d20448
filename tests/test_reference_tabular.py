"""Tabular fitting on a hand-written table: every imputed, encoded and scaled value worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from haf.cohort.features import ColumnSpec
from haf.cohort.tabular import MeanImputer, ModalityPreprocessor, MostFrequentImputer

SPEC = ColumnSpec(numeric=("n1", "n2"), binary=("b",), nominal=("s", "t"), counts=("c",))
TRAIN = pd.DataFrame(
    {
        "n1": [1.0, 3.0, 3.0, np.nan],
        "n2": [10.0, np.nan, 20.0, 10.0],
        "b": [1.0, 0.0, np.nan, np.nan],  # a tie: the smaller value (0) wins
        "s": ["b", "a", None, "b"],
        "t": ["y", "x", None, None],  # a tie: the smaller string ("x") wins
        "c": [0.0, 2.0, np.nan, 2.0],
    },
    index=["p1", "p2", "p3", "p4"],
)
HELD = pd.DataFrame(
    {"n1": [5.0], "n2": [np.nan], "b": [np.nan], "s": ["z"], "t": [None], "c": [4.0]}, index=["q1"]
)
NAMES = ["n1", "n2", "b", "s=a", "s=b", "t=x", "t=y", "c"]


def test_paper_protocol_by_hand():
    pre = ModalityPreprocessor(SPEC, "paper", "toy").fit(TRAIN)
    assert pre.feature_names() == NAMES
    # imputed: n1 -> 3 (most frequent), n2 -> 10, b -> 0 (tie), s -> b, t -> x (tie), c -> 2
    # min-max on the imputed training values: n1 in [1, 3], n2 in [10, 20], c in [0, 2]
    expected = np.array(
        [
            [0.0, 0.0, 1.0, 0, 1, 0, 1, 0.0],
            [1.0, 0.0, 0.0, 1, 0, 1, 0, 1.0],
            [1.0, 1.0, 0.0, 0, 1, 1, 0, 1.0],
            [1.0, 0.0, 0.0, 0, 1, 1, 0, 1.0],
        ]
    )
    x = pre.transform(TRAIN)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, expected.astype(np.float32))
    # a held-out row: scaled with the training range (no clipping), unseen category all zero
    np.testing.assert_allclose(pre.transform(HELD), [[2.0, 0.0, 0.0, 0, 0, 1, 0, 2.0]])
    state = pre.state()
    np.testing.assert_array_equal(state["num_impute"], [3.0, 10.0])
    np.testing.assert_array_equal(state["bin_impute"], [0.0])
    assert state["nom_impute"].tolist() == ["b", "x"] and state["cnt_impute"].tolist() == [2.0]
    np.testing.assert_array_equal(state["num_min"], [1.0, 10.0])
    np.testing.assert_array_equal(state["num_max"], [3.0, 20.0])
    np.testing.assert_array_equal(state["cnt_min"], [0.0])
    np.testing.assert_array_equal(state["cnt_max"], [2.0])
    assert state["categories_s"].tolist() == ["a", "b"] and state["categories_t"].tolist() == ["x", "y"]
    assert pre.empty_columns_ == [] and pre.n_fit_ == 4


def test_hancock_protocol_by_hand():
    pre = ModalityPreprocessor(SPEC, "hancock", "toy").fit(TRAIN)
    # n1: mean 7/3 imputed -> [1, 3, 3, 7/3], mean 7/3, population SD sqrt(2/3)
    # n2: mean 40/3 imputed -> [10, 40/3, 20, 10], mean 40/3, population SD sqrt(50/3)
    n1 = (np.array([1, 3, 3, 7 / 3]) - 7 / 3) / np.sqrt(2 / 3)
    n2 = (np.array([10, 40 / 3, 20, 10]) - 40 / 3) / np.sqrt(50 / 3)
    rest = np.array(
        [[1.0, 0, 1, 0, 1, 0.0], [0.0, 1, 0, 1, 0, 2.0], [0.0, 0, 1, 1, 0, 2.0], [0.0, 0, 1, 1, 0, 2.0]]
    )
    expected = np.column_stack([n1, n2, rest])  # binary and counts: imputed only, never scaled
    np.testing.assert_allclose(pre.transform(TRAIN), expected, atol=1e-6)  # float32 output
    state = pre.state()
    np.testing.assert_allclose(state["num_impute"], [7 / 3, 40 / 3])
    np.testing.assert_allclose(state["num_mean"], [7 / 3, 40 / 3])
    np.testing.assert_allclose(state["num_scale"], [np.sqrt(2 / 3), np.sqrt(50 / 3)])
    assert "cnt_min" not in state and "cnt_mean" not in state
    held = pre.transform(HELD)
    np.testing.assert_allclose(held[0, :2], [(5 - 7 / 3) / np.sqrt(2 / 3), 0.0], atol=1e-6)
    np.testing.assert_array_equal(held[0, 2:], [0.0, 0, 0, 1, 0, 4.0])


def test_columns_without_a_training_value_are_filled_and_listed():
    train = TRAIN.assign(n2=np.nan, b=np.nan, t=None)
    for scheme in ("paper", "hancock"):
        pre = ModalityPreprocessor(SPEC, scheme, "toy").fit(train)
        assert pre.empty_columns_ == ["n2", "b", "t"], scheme
        assert pre.state()["nom_impute"].tolist() == ["b", "missing"]
        assert pre.state()["num_impute"][1] == 0.0 and pre.state()["bin_impute"][0] == 0.0
        assert "t=missing" in pre.feature_names()


def test_imputers_alone():
    mf = MostFrequentImputer().fit(np.array([[2.0, np.nan], [1.0, np.nan], [2.0, np.nan], [1.0, np.nan]]))
    np.testing.assert_array_equal(mf.statistics_, [1.0, 0.0])  # tie -> smaller; empty -> 0
    assert mf.empty_columns_ == [1]
    np.testing.assert_array_equal(
        mf.transform(np.array([[np.nan, np.nan], [5.0, 6.0]])), [[1.0, 0.0], [5.0, 6.0]]
    )
    nominal = MostFrequentImputer(nominal=True).fit(np.array([["u"], [None], ["v"], ["v"]], dtype=object))
    assert nominal.transform(np.array([[None], ["w"]], dtype=object)).tolist() == [["v"], ["w"]]
    mean = MeanImputer().fit(np.array([[1.0, np.nan], [np.nan, np.nan], [4.0, np.nan]]))
    np.testing.assert_array_equal(mean.statistics_, [2.5, 0.0])
    assert mean.empty_columns_ == [1]
    np.testing.assert_array_equal(mean.transform(np.array([[np.nan, np.nan]])), [[2.5, 0.0]])
    # a 1-d input is one column
    np.testing.assert_array_equal(MeanImputer().fit(np.array([1.0, 3.0])).statistics_, [2.0])


def test_unknown_scheme_and_missing_column_are_named():
    with pytest.raises(ValueError, match="tabular.preprocessing must be one of"):
        ModalityPreprocessor(SPEC, "zscore", "toy")
    with pytest.raises(Exception, match="field 'c': toy: column missing from the raw table"):
        ModalityPreprocessor(SPEC, "paper", "toy").fit(TRAIN.drop(columns="c"))
    with pytest.raises(Exception, match=r"patient p2, field 'n1': toy: value 'abc' is not a finite number"):
        ModalityPreprocessor(SPEC, "paper", "toy").fit(TRAIN.assign(n1=[1.0, "abc", 3.0, np.nan]))
