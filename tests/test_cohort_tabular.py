"""Per-fold tabular preprocessing: protocols, absent modalities, the npz contract, and no leakage."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from haf.artifacts.tabular import read_tabular_npz, write_tabular_npz
from haf.cohort.features import ICD_COLUMN, PATH_SPEC, SPECS, stage_code
from haf.cohort.sources import load_tabular_sources
from haf.cohort.tabular import ModalityPreprocessor, preprocess_fold
from haf.errors import HafConfigError, HafInputError
from haf.modalities import TABULAR

_spec = importlib.util.spec_from_file_location(
    "hancock_mini_maker", Path(__file__).parent / "fixtures" / "hancock_mini" / "make_mini.py"
)
_maker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_maker)

CODES = ["c320", "c321", "c108", "c138", "c770", "c021", "d000"]


def _synthetic_tables(n=60, seed=0):
    """Raw tables in the shape load_tabular_sources gives, with gaps, categories and absent rows."""
    rng = np.random.default_rng(seed)
    ids = [f"{i:03d}" for i in range(1, n + 1)]

    def subset(p):
        return [pid for pid in ids if rng.random() < p]

    def numeric(index, columns, scale=10.0, miss=0.15):
        x = rng.normal(50, scale, (len(index), len(columns)))
        x[rng.random(x.shape) < miss] = np.nan
        return pd.DataFrame(x, index=index, columns=list(columns))

    def nominal(index, values, miss=0.1):
        return [None if rng.random() < miss else values[rng.integers(len(values))] for _ in index]

    def binary(index, miss=0.1):
        return [np.nan if rng.random() < miss else float(rng.integers(2)) for _ in index]

    clin_ids = ids
    clin = numeric(clin_ids, ["age_at_initial_diagnosis"])
    clin["sex"] = binary(clin_ids)
    clin["primarily_metastasis"] = binary(clin_ids)
    clin["smoking_status"] = nominal(clin_ids, ["former", "non-smoker", "smoker"])
    path_ids = subset(0.95)
    path = numeric(path_ids, PATH_SPEC.numeric, scale=2)
    for column in PATH_SPEC.binary:
        path[column] = binary(path_ids)
    for column in PATH_SPEC.nominal:
        path[column] = nominal(path_ids, [f"{column}_A", f"{column}_B", f"{column}_C"])
    blood = numeric(subset(0.8), SPECS["blood"].numeric, miss=0.3)
    cell = numeric(subset(0.7), SPECS["cell"].numeric, scale=300, miss=0.25)
    icd_ids = subset(0.9)
    icd = pd.DataFrame(
        {ICD_COLUMN: [" ".join(rng.choice(CODES, size=rng.integers(1, 4))) for _ in icd_ids]}, index=icd_ids
    )
    tables = {"clin": clin, "path": path, "blood": blood, "cell": cell, "icd": icd}
    part = np.array(["train"] * 36 + ["val"] * 9 + ["test"] * 15)
    assignment = pd.DataFrame({"patient_id": ids, "part": rng.permutation(part)})
    return tables, assignment


def _perturb(tables, assignment, seed=1):
    """Change every val/test row of every table: values, missingness, unseen categories and codes."""
    rng = np.random.default_rng(seed)
    held = set(assignment.loc[assignment["part"] != "train", "patient_id"])
    out = {}
    for m, table in tables.items():
        t = table.copy()
        rows = [pid for pid in t.index if pid in held]
        for column in t.columns:
            if column == ICD_COLUMN:
                t.loc[rows, column] = "zz999 zz999 c320 " * 3
            elif not pd.api.types.is_numeric_dtype(t[column]):
                t.loc[rows, column] = "unseen_category"
            else:
                t.loc[rows, column] = rng.normal(1e4, 1e3, len(rows))
        out[m] = t
    return out


def _fitted_state(fitted):
    state = {}
    for m in TABULAR:
        for key, value in fitted[m].state().items():
            state[f"{m}.{key}"] = value
    state["icd.vocabulary"] = np.asarray(fitted["icd_vocabulary"].vocabulary_, dtype=object)
    return state


def _assert_states_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_leakage_val_and_test_rows_do_not_move_any_fitted_transform():
    tables, assignment = _synthetic_tables()
    perturbed = _perturb(tables, assignment)
    for scheme in ("paper", "hancock"):
        arrays_a, fitted_a, _ = preprocess_fold(tables, assignment, scheme, icd_min_df=2)
        arrays_b, fitted_b, _ = preprocess_fold(perturbed, assignment, scheme, icd_min_df=2)
        _assert_states_equal(_fitted_state(fitted_a), _fitted_state(fitted_b))
        train = arrays_a["part"] == "train"
        held = ~train
        for m in TABULAR:
            np.testing.assert_array_equal(arrays_a[f"columns_{m}"], arrays_b[f"columns_{m}"])
            np.testing.assert_array_equal(arrays_a[f"x_{m}"][train], arrays_b[f"x_{m}"][train], err_msg=m)
            np.testing.assert_array_equal(arrays_a[f"present_{m}"], arrays_b[f"present_{m}"])
            # the perturbation did reach the held-out rows (so the equalities above are not vacuous)
            rows = held & arrays_a[f"present_{m}"]
            assert not np.array_equal(arrays_a[f"x_{m}"][rows], arrays_b[f"x_{m}"][rows]), m
        assert "icd_zz999" not in arrays_b["columns_icd"].tolist()
    # control: had the perturbed rows been part of the fit, the fitted state would move
    everyone = assignment.assign(part="train")
    _, fitted_all_a, _ = preprocess_fold(tables, everyone, "paper", icd_min_df=2)
    _, fitted_all_b, _ = preprocess_fold(perturbed, everyone, "paper", icd_min_df=2)
    with pytest.raises(AssertionError):
        _assert_states_equal(_fitted_state(fitted_all_a), _fitted_state(fitted_all_b))


def test_absent_modality_stays_absent_and_npz_contract(tmp_path):
    tables, assignment = _synthetic_tables()
    arrays, _, counts = preprocess_fold(tables, assignment, "paper", icd_min_df=2)
    ids = arrays["patient_id"]
    assert list(ids) == sorted(assignment["patient_id"])
    for m in TABULAR:
        present = arrays[f"present_{m}"]
        np.testing.assert_array_equal(present, np.isin(ids, tables[m].index))
        x = arrays[f"x_{m}"]
        assert x.dtype == np.float32 and np.isfinite(x).all()
        assert (x[~present] == 0).all()  # absent: a zero row, never imputed
        assert counts[m]["present"] == int(present.sum())
    write_tabular_npz(tmp_path / "fold_0.npz", arrays, 0)
    back = read_tabular_npz(tmp_path / "fold_0.npz")
    assert int(back["fold"]) == 0 and back["patient_id"].dtype.kind == "U"
    for m in TABULAR:
        np.testing.assert_array_equal(back[f"x_{m}"], arrays[f"x_{m}"])


def test_paper_protocol_minmax_onehot_mostfrequent():
    tables, assignment = _synthetic_tables()
    arrays, fitted, _ = preprocess_fold(tables, assignment, "paper", icd_min_df=2)
    train = (arrays["part"] == "train") & arrays["present_blood"]
    xb = arrays["x_blood"][train]
    assert xb.min() >= 0.0 and xb.max() <= 1.0
    np.testing.assert_allclose(xb.max(axis=0), 1.0)  # min-max fitted on exactly these rows
    columns = arrays["columns_clin"].tolist()
    assert columns[:3] == ["age_at_initial_diagnosis", "sex", "primarily_metastasis"]
    assert {c for c in columns if c.startswith("smoking_status=")} == {
        "smoking_status=former",
        "smoking_status=non-smoker",
        "smoking_status=smoker",
    }
    # most-frequent imputation of the numeric column, fitted on train only
    pre = fitted["clin"]
    train_ids = assignment.loc[assignment["part"] == "train", "patient_id"]
    ages = tables["clin"].loc[train_ids, "age_at_initial_diagnosis"].dropna()
    assert pre.state()["num_impute"][0] == ages.value_counts().sort_index(kind="stable").idxmax()
    assert arrays["columns_icd"].tolist() == sorted(arrays["columns_icd"].tolist())


def test_hancock_protocol_mean_and_standard_scaling():
    tables, assignment = _synthetic_tables()
    arrays, fitted, _ = preprocess_fold(tables, assignment, "hancock", icd_min_df=2)
    train_ids = assignment.loc[assignment["part"] == "train", "patient_id"]
    cell_train = tables["cell"].loc[tables["cell"].index.intersection(train_ids)]
    np.testing.assert_allclose(fitted["cell"].state()["num_impute"], cell_train.mean().to_numpy())
    rows = np.isin(arrays["patient_id"], cell_train.index)
    x = arrays["x_cell"][rows].astype(float)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)  # mean imputation keeps the mean
    assert (x.std(axis=0) < 1.0 + 1e-5).all()
    # ICD counts are not scaled under the official protocol
    assert set(np.unique(arrays["x_icd"])) <= {0.0, 1.0, 2.0, 3.0}


def test_unseen_category_is_all_zero_one_hot():
    spec = SPECS["clin"]
    train = pd.DataFrame(
        {
            "age_at_initial_diagnosis": [50.0, 60.0],
            "sex": [0.0, 1.0],
            "primarily_metastasis": [0.0, 0.0],
            "smoking_status": ["smoker", "former"],
        },
        index=["001", "002"],
    )
    pre = ModalityPreprocessor(spec, "paper", "clin").fit(train)
    test = train.iloc[:1].assign(smoking_status="never heard of")
    x = pre.transform(test)
    assert x[0, 3:].sum() == 0.0 and pre.feature_names()[3:] == [
        "smoking_status=former",
        "smoking_status=smoker",
    ]
    with pytest.raises(HafInputError, match=r"patient 001, field 'age_at_initial_diagnosis'"):
        pre.transform(train.assign(age_at_initial_diagnosis=[np.inf, 1.0]))


def test_icd_min_df_counts_training_patients_only():
    tables, assignment = _synthetic_tables()
    held = assignment.loc[assignment["part"] != "train", "patient_id"]
    icd = tables["icd"].copy()
    icd.loc[icd.index.intersection(held), ICD_COLUMN] = "t810"  # frequent, but only outside training
    arrays, _, _ = preprocess_fold({**tables, "icd": icd}, assignment, "paper", icd_min_df=2)
    assert "icd_t810" not in arrays["columns_icd"].tolist()
    with pytest.raises(HafConfigError, match="tabular.icd_min_df"):
        preprocess_fold(tables, assignment, "paper", icd_min_df=1000)


def test_stage_codes():
    assert stage_code("pT1") == 1.0 and stage_code("pT1a") == 1.25 and stage_code("pT4b") == 4.5
    assert stage_code("pTis") == 0.0 and stage_code("T0is") == 0.0 and stage_code("pN3b") == 3.5
    assert np.isnan(stage_code("TX")) and np.isnan(stage_code("NX")) and np.isnan(stage_code(None))
    assert stage_code("stage IV") is None


def test_mini_cohort_sources_to_fold_matrices(tmp_path, default_config):
    mini = _maker.make_mini(tmp_path / "Hancock_Dataset")
    sources = load_tabular_sources(mini, default_config["paths"])
    assignment = pd.DataFrame(
        {
            "patient_id": ["001", "002", "003", "004", "005", "006"],
            "part": ["train", "train", "train", "val", "test", "train"],
        }
    )
    arrays, _, counts = preprocess_fold(sources.tables, assignment, "paper", icd_min_df=1)
    assert arrays["present_blood"].tolist() == [True, True, True, False, False, False]
    assert arrays["present_icd"].tolist() == [True, True, True, False, False, False]
    assert arrays["columns_icd"].tolist() == ["icd_c108", "icd_c138", "icd_c320", "icd_c321", "icd_c770"]
    assert arrays["x_path"].shape[1] > len(PATH_SPEC.columns)  # one-hot widened the nominal columns
    assert counts["blood"]["missing_values_imputed"] > 0
