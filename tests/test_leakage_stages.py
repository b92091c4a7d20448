"""Leakage, stage by stage: what a fold fits must not see its test part.

For each stage one fold is trained twice, once on the original inputs and once with its test patients'
inputs replaced (features or bags, labels, times, events). Every fitted artefact of the fold (Stage 1
CLAM weights, Stage 2 projectors, Stage 3 and comparator weights, the training history and hence the
early-stopping choice, validation predictions, from which thresholds and calibration baselines are
derived) must be bit-identical; only the test predictions may change. The tabular preprocessing has its
own leakage test (tests/test_cohort_tabular.py).
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from fakes.config import declare, load_config
from fakes.fusion import synthetic_fold_inputs
from fakes.mil import BagSpec, write_synthetic_cohort

from haf.alignment.train import train_alignment
from haf.artifacts.bags import write_bag
from haf.artifacts.folds import read_folds
from haf.artifacts.targets import read_targets, write_targets
from haf.comparators.train import train_comparator
from haf.fusion.spec import MethodSpec
from haf.fusion.train import train_fusion
from haf.mil.train import run_stage1
from haf.runtime.tensors import predict_scores

CPU = torch.device("cpu")
DIMS = {"wsi": 6, "tma": 6, "cell": 4, "clin": 4, "path": 5, "blood": 4, "icd": 4}
CONFIG = load_config(
    {
        "stage1": dict(wsi_dim=8, lr=1e-3, max_epochs=6, es_patience=3, batch_bags=8, max_instances=12, k_sample=2),
        "stage2": dict(d_out=16, hidden=24, max_epochs=5, es_patience=3, lr=1e-3),
        "stage3": dict(hidden=16, max_epochs=6, es_patience=3, lr=3e-3, batch_size=32),
        "parachute": dict(d=16, d_int=16, heads=2, dropout=0.1, max_epochs=4, es_patience=3, batch_size=16,
                          lr=2e-3, t_max=4, p_miss=0.2),
    }
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _test_part_replaced(inputs):
    """The same fold with every test patient's features, label, time and event replaced."""
    other = copy.deepcopy(inputs)
    test = other.index("test")
    rng = np.random.default_rng(99)
    for m, x in other.features.items():
        j = list(other.features).index(m)
        x[test] = (rng.normal(size=(len(test), x.shape[1])) * 5).astype(x.dtype) * other.present[
            test, j : j + 1
        ]
    labelled = ~np.isnan(other.label[test])
    other.label[test[labelled]] = 1.0 - other.label[test[labelled]]
    other.time[test] = other.time[test][::-1] + 17.0
    other.event[test] = 1 - other.event[test]
    return other.validate("<test part replaced>")


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def fold():
    inputs = synthetic_fold_inputs(150, fold=1, n_folds=5, seed=8, dims=DIMS)
    return inputs, _test_part_replaced(inputs)


def test_the_replacement_really_changes_the_test_part(fold):
    a, b = fold
    test, rest = a.index("test"), np.setdiff1d(np.arange(a.n), a.index("test"))
    assert not np.array_equal(a.features["clin"][test], b.features["clin"][test])
    assert not np.array_equal(a.time[test], b.time[test])
    for m in a.features:
        np.testing.assert_array_equal(a.features[m][rest], b.features[m][rest])


def test_stage2_projectors_do_not_see_the_test_part(fold):
    a, b = (train_alignment(x, "ga", CONFIG["stage2"], CPU) for x in fold)
    _same_state(a.projectors.state_dict(), b.projectors.state_dict())
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)


def _spec(name, **decl):
    return MethodSpec.from_declaration(name, declare({name: {"family": "fusion", **decl}})[name])


@pytest.mark.parametrize(
    "name, decl",
    [
        ("fusion_mlp_all", dict(align="none", drop=False)),
        ("haf", dict(align="ga", drop=True)),
        ("haf_cox", dict(align="ga", drop=True, task_loss="cox")),
    ],
)
def test_stage3_weights_and_validation_predictions_do_not_see_the_test_part(fold, name, decl):
    spec = _spec(name, **decl)
    runs = []
    for inputs in fold:
        bank = train_alignment(inputs, "ga", CONFIG["stage2"], CPU) if spec.uses_stage2 else None
        runs.append(
            train_fusion(
                inputs, spec, CONFIG["stage3"], CONFIG["stage2"], CPU,
                projectors=bank.projectors if bank else None,
                stage2_meta={"untrained": bank.untrained} if bank else None,
            )
        )  # fmt: skip
    a, b = runs
    _same_state(a.model.state_dict(), b.model.state_dict())
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)  # same epochs, same selection
    val, test = fold[0].index("val"), fold[0].index("test")
    np.testing.assert_array_equal(
        predict_scores(a.score_fn, a.tensors, val), predict_scores(b.score_fn, b.tensors, val)
    )
    assert not np.array_equal(
        predict_scores(a.score_fn, a.tensors, test), predict_scores(b.score_fn, b.tensors, test)
    )


@pytest.mark.parametrize("family", ["late_fusion", "attention_fusion", "parachute"])
def test_comparator_weights_do_not_see_the_test_part(fold, family):
    declaration = declare({family: {"family": family}})[family]
    sections = {"stage3": CONFIG["stage3"], "parachute": CONFIG["parachute"]}
    a, b = (train_comparator(x, declaration, sections, CPU) for x in fold)
    _same_state(a.checkpoint["state_dict"], b.checkpoint["state_dict"])
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)
    val, test = fold[0].index("val"), fold[0].index("test")
    np.testing.assert_array_equal(
        predict_scores(a.score_fn, a.tensors, val), predict_scores(b.score_fn, b.tensors, val)
    )
    assert not np.array_equal(
        predict_scores(a.score_fn, a.tensors, test), predict_scores(b.score_fn, b.tensors, test)
    )


@pytest.mark.parametrize("pmod", ["wsi", "wsi_tma"])
def test_stage1_weights_and_train_val_embeddings_do_not_see_the_test_part(tmp_path, pmod):
    runs = []
    for variant in ("original", "replaced"):
        cohort = write_synthetic_cohort(
            tmp_path / variant,
            n_patients=60,
            wsi=BagSpec(3, 20, 8, signal=3.0),
            tma=BagSpec(2, 6, 8, signal=1.0, coverage=0.9),
            k=3,
            seed=5,
        )
        folds = read_folds(cohort.folds)
        test = set(folds.loc[(folds["fold"] == 1) & (folds["part"] == "test"), "patient_id"])
        if variant == "replaced":
            rng = np.random.default_rng(7)
            manifest = pd.read_csv(
                cohort.manifest, sep="\t", dtype={"patient_id": str}, keep_default_na=False
            )
            for pid, files in zip(manifest["patient_id"], manifest["wsi_files"], strict=True):
                if pid in test:
                    for path in filter(None, files.split(";")):  # another bag, of another size
                        x = rng.normal(size=(int(rng.integers(3, 21)), 8)).astype(np.float32) * 4
                        write_bag(path, x, np.zeros((len(x), 2)))
            tma = pd.read_csv(cohort.tma_index, sep="\t", dtype={"patient_id": str})
            for pid, path in zip(tma["patient_id"], tma["h5_path"], strict=True):
                if pid in test:
                    x = rng.normal(size=(5, 8)).astype(np.float32) * 4
                    write_bag(path, x, np.zeros((len(x), 2)), {"feature_dim": 8, "encoder": "synthetic"})
            targets = read_targets(cohort.targets)
            flip = targets["patient_id"].isin(test)
            targets.loc[flip, "label"] = 1 - targets.loc[flip, "label"]
            targets.loc[flip, "event"] = 1 - targets.loc[flip, "event"]
            write_targets(cohort.targets, targets)
        runs.append(
            run_stage1(
                pmod=pmod, fold=1, manifest=cohort.manifest, targets=cohort.targets, folds=cohort.folds,
                tma_index=cohort.tma_index, section=CONFIG["stage1"], device=CPU,
            )
        )  # fmt: skip
    a, b = runs
    _same_state(a.model.state_dict(), b.model.state_dict())
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)
    parts = np.asarray(a.embeddings["part"])
    assert list(a.embeddings["patient_id"]) == list(b.embeddings["patient_id"])
    seen = parts != "test"
    np.testing.assert_array_equal(a.embeddings["z"][seen], b.embeddings["z"][seen])
    assert not np.array_equal(a.embeddings["z"][~seen], b.embeddings["z"][~seen])
    val_a = a.predictions[a.predictions["part"] == "val"].reset_index(drop=True)
    val_b = b.predictions[b.predictions["part"] == "val"].reset_index(drop=True)
    pd.testing.assert_frame_equal(val_a, val_b, check_exact=True)
