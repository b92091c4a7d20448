"""Tabular fitting on a hand-written table: every imputed, encoded and scaled value worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from haf.artifacts.tabular import read_tabular_npz, write_tabular_npz
from haf.cohort.features import SPECS, ColumnSpec
from haf.cohort.tabular import (
    IcdVectorizer,
    MeanImputer,
    ModalityPreprocessor,
    MostFrequentImputer,
    preprocess_fold,
)
from haf.errors import HafInputError

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
    mf = MostFrequentImputer().fit(np.array([[np.nan, 2.0], [np.nan, 1.0], [np.nan, 2.0], [np.nan, 1.0]]))
    np.testing.assert_array_equal(mf.statistics_, [0.0, 1.0])  # empty -> 0 (and the next column still fitted)
    assert mf.empty_columns_ == [0] and mf.statistics_.dtype == float
    np.testing.assert_array_equal(
        mf.transform(np.array([[np.nan, np.nan], [5.0, 6.0]])), [[0.0, 1.0], [5.0, 6.0]]
    )
    nominal = MostFrequentImputer(nominal=True).fit(np.array([["u"], [None], ["v"], ["v"]], dtype=object))
    assert nominal.transform(np.array([[None], ["w"]], dtype=object)).tolist() == [["v"], ["w"]]
    mean = MeanImputer().fit(np.array([[1.0, np.nan], [np.nan, np.nan], [4.0, np.nan]]))
    np.testing.assert_array_equal(mean.statistics_, [2.5, 0.0])
    assert mean.empty_columns_ == [1]
    np.testing.assert_array_equal(mean.transform(np.array([[np.nan, np.nan]])), [[2.5, 0.0]])
    # a column with a single training value is imputed with it
    np.testing.assert_array_equal(MeanImputer().fit(np.array([[np.nan], [7.0]])).statistics_, [7.0])
    # a 1-d input is one column
    one_d = MeanImputer().fit(np.array([1.0, 3.0]))
    assert one_d.statistics_.shape == (1,) and one_d.statistics_[0] == 2.0
    assert one_d.transform(np.array([np.nan, 5.0])).shape == (2, 1)


def test_unknown_scheme_and_missing_column_are_named():
    with pytest.raises(ValueError, match="tabular.preprocessing must be one of"):
        ModalityPreprocessor(SPEC, "zscore", "toy")
    # fitted on no row: constants (0 / 'missing'), no scaler and no one-hot block
    empty = ModalityPreprocessor(SPEC, "paper", "toy").fit(TRAIN.iloc[:0])
    assert empty.num_scaler_ is None and empty.onehot_ is None and empty.cnt_scaler_ is None
    np.testing.assert_array_equal(empty.transform(HELD), [[5.0, 0.0, 0.0, 4.0]])
    default = ModalityPreprocessor(SPEC)
    assert default.scheme == "paper" and default.name == "tabular"
    with pytest.raises(Exception, match="field 'c': tabular: column missing"):
        default.fit(TRAIN.drop(columns="c"))
    with pytest.raises(Exception, match="field 'c': toy: column missing from the raw table"):
        ModalityPreprocessor(SPEC, "paper", "toy").fit(TRAIN.drop(columns="c"))
    with pytest.raises(Exception, match=r"patient p2, field 'n1': toy: value 'abc' is not a finite number"):
        ModalityPreprocessor(SPEC, "paper", "toy").fit(TRAIN.assign(n1=[1.0, "abc", 3.0, np.nan]))


# ---------------------------------------------------------------------------------------------
# one fold end to end, and the npz contract's checks
# ---------------------------------------------------------------------------------------------
def _fold():
    from test_cohort_tabular import _synthetic_tables

    tables, assignment = _synthetic_tables(n=60, seed=3)
    return tables, assignment


def test_preprocess_fold_defaults_counts_and_log(caplog):
    tables, assignment = _fold()
    train = set(assignment.loc[assignment["part"] == "train", "patient_id"])
    tables["cell"] = tables["cell"].iloc[:0]  # nobody has cell densities
    blood_train = sorted(set(tables["blood"].index) & train)
    keep = blood_train[:1] + [p for p in tables["blood"].index if p not in train]
    tables["blood"] = tables["blood"].loc[keep]  # one training patient has blood values
    tables["clin"] = pd.concat(
        [tables["clin"], tables["clin"].iloc[:1].rename(index={"001": "999"})]
    )  # not in fold
    icd_train = sorted(set(tables["icd"].index) & train)[:3]
    tables["icd"] = tables["icd"].copy()
    tables["icd"].loc[icd_train, "codes"] += " z999"  # in exactly 3 training patients: kept at min_df 3
    with caplog.at_level("INFO", logger="haf.cohort.tabular"):
        arrays, fitted, counts = preprocess_fold(tables, assignment)
    assert "icd_z999" in arrays["columns_icd"].tolist()
    explicit, _, _ = preprocess_fold(tables, assignment, "paper", 3)
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], explicit[key], err_msg=key)
    ids = arrays["patient_id"]
    assert "999" not in ids and len(ids) == 60
    # blood: fitted on its single training row (min-max of one value: every scaled value 0)
    assert counts["blood"]["train_present"] == 1 and counts["blood"]["present"] == len(keep)
    assert fitted["blood"].n_fit_ == 1
    # cell: nothing to fit on -> absent everywhere, a zero matrix of the numeric columns
    names = list(SPECS["cell"].numeric)
    assert arrays["columns_cell"].tolist() == names and arrays["x_cell"].shape == (60, len(names))
    assert not arrays["present_cell"].any() and arrays["x_cell"].dtype == np.float32
    assert counts["cell"] == {"present": 0, "absent": 60, "train_present": 0, "width": len(names),
                              "missing_values_imputed": 0}  # fmt: skip
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "fold has no training patient with modality cell: it is marked absent for all 0 patients "
        "(nothing can be fitted on it)" in messages
    )
    clin = counts["clin"]
    assert clin["present"] == 60 and clin["absent"] == 0 and clin["train_present"] == len(train)
    in_fold = tables["clin"].loc[ids]
    assert clin["missing_values_imputed"] == int(in_fold.isna().to_numpy().sum())
    assert clin["width"] == arrays["x_clin"].shape[1] == len(arrays["columns_clin"])
    assert counts["icd"]["missing_values_imputed"] == 0
    assert (
        f"clin  present 60 / 60 (train {len(train)}); {clin['width']} columns; "
        f"{clin['missing_values_imputed']} missing values inside present rows imputed" in messages
    )


def test_preprocess_fold_without_icd_training_patients_and_with_empty_columns(caplog):
    tables, assignment = _fold()
    train = set(assignment.loc[assignment["part"] == "train", "patient_id"])
    tables["icd"] = tables["icd"].loc[[p for p in tables["icd"].index if p not in train]]
    tables["blood"] = tables["blood"].copy()
    column = SPECS["blood"].numeric[0]
    tables["blood"][column] = np.nan
    tables["blood"][SPECS["blood"].numeric[1]] = np.nan
    with caplog.at_level("WARNING", logger="haf.cohort.tabular"):
        arrays, _, counts = preprocess_fold(tables, assignment)
    assert arrays["columns_icd"].tolist() == ["icd_none"] and not arrays["present_icd"].any()
    assert counts["icd"]["width"] == 1 and (arrays["x_icd"] == 0).all()
    second = SPECS["blood"].numeric[1]
    assert f"blood: columns without any training value (filled with a constant): {column}, {second}" in [
        r.getMessage() for r in caplog.records
    ]
    tables["blood"].iloc[0, 2] = np.inf
    with pytest.raises(Exception, match=r"blood: value .*inf.* is not a finite number"):
        preprocess_fold(tables, assignment)


def test_icd_vectorizer_defaults_and_case():
    assert IcdVectorizer().min_df == 3
    docs = pd.Series(["C320 c108", "c320", "C320 C108"], index=["a", "b", "c"])
    vec = IcdVectorizer(min_df=2).fit(docs)
    assert vec.vocabulary_ == ["c108", "c320"]  # codes are case-insensitive
    counts = vec.transform(docs)
    assert counts.columns.tolist() == ["icd_c108", "icd_c320"] and counts.to_numpy().tolist() == [
        [1, 1],
        [0, 1],
        [1, 1],
    ]
    assert counts.dtypes.eq(float).all()


def test_read_tabular_npz_names_the_file_and_field(tmp_path):
    tables, assignment = _fold()
    arrays, _, _ = preprocess_fold(tables, assignment)
    good = tmp_path / "fold_0.npz"
    write_tabular_npz(good, arrays, 0)
    assert read_tabular_npz(good)["x_clin"].shape == arrays["x_clin"].shape

    def broken(name, **change):
        path = tmp_path / f"{name}.npz"
        payload = {**arrays, **change}
        for key in [k for k, v in change.items() if v is None]:
            payload.pop(key)
        np.savez(path, **payload)
        return path

    cases = [
        (broken("no_ids", patient_id=None), "array missing", "patient_id"),
        (broken("no_x", x_blood=None), "array missing", "x_blood"),
        (broken("rows", x_path=arrays["x_path"][:-1]), r"shape \(59, \d+\) does not match 60 patients", "x_path"),
        (broken("flat", x_path=arrays["x_path"].reshape(-1)), r"shape \(\d+,\) does not match 60 patients", "x_path"),
        (broken("present", present_icd=arrays["present_icd"][:-1]), r"shape \(60, \d+\) does not match 60 patients", "x_icd"),
        (broken("width", columns_clin=arrays["columns_clin"][:-1]), "column names do not match the matrix width",
         "columns_clin"),
        (broken("nan", x_cell=np.where(arrays["x_cell"] == 0, np.nan, arrays["x_cell"])), "NaN or inf", "x_cell"),
    ]  # fmt: skip
    for path, message, field in cases:
        with pytest.raises(HafInputError, match=rf"{path.name}, field '{field}': {message}"):
            read_tabular_npz(path)
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(HafInputError, match=r"junk.npz: cannot read tabular matrices: "):
        read_tabular_npz(tmp_path / "junk.npz")
    # no pickles: an object array is refused
    np.savez(tmp_path / "pickled.npz", **{**arrays, "patient_id": arrays["patient_id"].astype(object)})
    with pytest.raises(HafInputError, match="cannot read tabular matrices"):
        read_tabular_npz(tmp_path / "pickled.npz")
