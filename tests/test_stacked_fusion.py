"""Stage 3 stacked over folds: a fold trained among others gives what it gives trained alone.

Each family of fusion method (projectors trained with the task, frozen Stage 2 projectors, random
modality drop with MoFe, the Cox loss) is trained on three folds of one synthetic cohort at once and
on one of those folds alone; the selected epoch, the whole training history and the predictions must
agree to float rounding (the batched kernels of three members and of one round differently).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from fakes.config import declare, load_config, settings, small_val_warnings
from fakes.fusion import synthetic_fold_inputs

from haf.alignment.train import train_alignment
from haf.fusion.spec import MethodSpec
from haf.fusion.train import train_fusion_folds
from haf.runtime.tensors import predict_scores

CPU = torch.device("cpu")
DIMS = {"wsi": 8, "tma": 8, "cell": 5, "clin": 4, "path": 6, "blood": 7, "icd": 5}
STAGE2 = load_config({"stage2": dict(d_out=16, hidden=24, max_epochs=6, es_patience=3, lr=1e-3)})["stage2"]
STAGE3 = load_config({"stage3": dict(hidden=16, max_epochs=12, es_patience=4, lr=3e-3, batch_size=32)})[
    "stage3"
]


@pytest.fixture(scope="module")
def folds():
    torch.set_num_threads(1)
    return [synthetic_fold_inputs(140, fold=f, n_folds=5, seed=4, dims=DIMS) for f in (0, 1, 2)]


@pytest.fixture(scope="module")
def banks(folds):
    return [train_alignment(f, "ga", STAGE2, CPU) for f in folds]


def _spec(name, **decl):
    return MethodSpec.from_declaration(name, declare({name: {"family": "fusion", **decl}})[name])


@pytest.mark.parametrize(
    "name, decl",
    [
        ("fusion_mlp_all", dict(align="none", drop=False)),
        ("drop", dict(align="none", drop=True)),
        ("haf", dict(align="ga", drop=True)),
        ("haf_cox", dict(align="ga", drop=True, task_loss="cox")),
    ],
)
def test_a_fold_stacked_with_others_equals_it_trained_alone(name, decl, folds, banks):
    spec = _spec(name, **decl)
    aligned = spec.uses_stage2
    meta = [{"untrained": b.untrained} for b in banks]
    together = train_fusion_folds(
        folds, spec, STAGE3, STAGE2, CPU,
        projectors=[b.projectors for b in banks] if aligned else None, stage2_meta=meta if aligned else None,
    )  # fmt: skip
    alone = train_fusion_folds(
        folds[1:2], spec, STAGE3, STAGE2, CPU,
        projectors=[banks[1].projectors] if aligned else None, stage2_meta=meta[1:2] if aligned else None,
    )[0]  # fmt: skip
    a, b = together[1].history, alone.history
    assert a["epoch"].tolist() == b["epoch"].tolist()
    assert int(a.loc[a["best"], "epoch"].iloc[0]) == int(b.loc[b["best"], "epoch"].iloc[0])
    # measured: max |difference| 3e-7 in the losses (float32 batched kernels)
    pd.testing.assert_frame_equal(a, b, rtol=1e-4, atol=1e-5)
    test = folds[1].index("test")
    pa = predict_scores(together[1].score_fn, together[1].tensors, test)
    pb = predict_scores(alone.score_fn, alone.tensors, test)
    if spec.task_loss == "cox":
        # the partial likelihood is blind to a constant shift of the log hazard: the output bias gets a
        # rounding-level gradient that Adam turns into steps, so only the centred risks must agree
        # (measured: a shift of 7e-4, centred difference 2e-7)
        pa, pb = pa - pa.mean(), pb - pb.mean()
    np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=1e-5)
    # the folds really are different runs: another fold's predictions differ
    assert not np.allclose(predict_scores(together[0].score_fn, together[1].tensors, test), pa)
    assert together[1].checkpoint["seed"] != together[0].checkpoint["seed"]


@pytest.mark.parametrize("align", ["ga", "clip"])
def test_stage2_fold_stacked_with_others_equals_it_trained_alone(align, folds):
    from haf.alignment.train import project_all, train_alignment_folds

    together = train_alignment_folds(folds, align, STAGE2, CPU)
    alone = train_alignment_folds(folds[1:2], align, STAGE2, CPU)[0]
    a, b = together[1].history, alone.history
    assert a["epoch"].tolist() == b["epoch"].tolist()
    pd.testing.assert_frame_equal(a, b, rtol=1e-4, atol=1e-5)  # measured: <= 1e-7
    np.testing.assert_allclose(
        project_all(together[1].projectors, folds[1], CPU),
        project_all(alone.projectors, folds[1], CPU),
        atol=1e-5,
    )
    # the untrained initial projections (Fig. 3-4's "before") are the fold's own seeded init
    np.testing.assert_array_equal(
        project_all(together[1].initial, folds[1], CPU), project_all(alone.initial, folds[1], CPU)
    )


def test_a_fold_without_a_usable_validation_part_fails_naming_it(folds):
    from haf.errors import HafInputError

    broken = [synthetic_fold_inputs(140, fold=f, n_folds=5, seed=4, dims=DIMS) for f in (0, 1, 2)]
    broken[2].label[broken[2].index("val")] = np.nan  # no labelled validation patient in fold 2
    with pytest.raises(HafInputError, match=r"fusion_mlp_all fold 2: the validation part has no patient"):
        train_fusion_folds(broken, _spec("fusion_mlp_all", align="none"), STAGE3, STAGE2, CPU)


@pytest.mark.parametrize("init", ["scratch", "stage1"])
def test_a_nodetach_fold_stacked_with_others_equals_it_trained_alone(tmp_path, init):
    # Eq. 12 with GA and random drop: stacked CLAM encoders, projectors and fusion heads of three folds
    # on one shared bag store, against one of the folds trained alone; init stage1: each fold's CLAM
    # encoders warm-started from its own Stage 1 model (member 1 stacked must load fold 1's, as alone)
    from fakes.fusion import fake_stage1_models, synthetic_bags

    from haf.fusion.joint import train_joint_folds

    torch.set_num_threads(1)
    # one cohort (same seed: same patients and features, one bag store), folds of different sizes so
    # the members' batches differ in width (64 vs 55): padding must not shift a member's random draws
    inputs = [
        synthetic_fold_inputs(100, fold=f, n_folds=n, seed=4, dims=DIMS) for f, n in ((0, 5), (1, 3), (2, 4))
    ]
    stores = synthetic_bags(inputs[0], tmp_path / "bags", seed=1, dim=12, sizes=(3, 12))
    config = load_config(
        {
            "stage1": dict(d1=8, d2=4, dropout=0.25, k_sample=2, max_instances=6, batch_bags=8),
            "stage2": dict(d_out=16, hidden=24),
            "stage3": dict(hidden=16, max_epochs=8, es_patience=3, lr=3e-3, batch_size=64),
        }
    )
    params = {key: config[key] for key in ("stage1", "stage2", "stage3")}
    spec = _spec("haf_nodetach", align="ga", drop=True, detach=False, init=init)
    models = alone_models = None
    if init == "stage1":
        models = fake_stage1_models(tmp_path / "stage1", stores, [0, 1, 2], d1=8, d2=4, dropout=0.25)
        alone_models = {pm: paths[1:2] for pm, paths in models.items()}
    together = train_joint_folds(inputs, spec, params, CPU, bags=stores, stage1_models=models)
    alone = train_joint_folds(inputs[1:2], spec, params, CPU, bags=stores, stage1_models=alone_models)[0]
    a, b = together[1].history, alone.history
    assert a["epoch"].tolist() == b["epoch"].tolist()
    assert int(a.loc[a["best"], "epoch"].iloc[0]) == int(b.loc[b["best"], "epoch"].iloc[0])
    assert (a["train_align"] > 0).all() and (a["train_mofe"] >= 0).all() and (a["train_img"] > 0).all()
    # measured: max |difference| 1.6e-7 in the losses, 0 in the validation AUC
    pd.testing.assert_frame_equal(a, b, rtol=0, atol=1e-5)
    for pm in ("wsi", "tma"):  # z of the jointly trained encoders; measured 5e-7
        np.testing.assert_allclose(
            together[1].inputs.features[pm], alone.inputs.features[pm], rtol=0, atol=1e-5
        )
    test = inputs[1].index("test")
    pa = predict_scores(together[1].score_fn, together[1].tensors, test)
    pb = predict_scores(alone.score_fn, alone.tensors, test)
    np.testing.assert_allclose(pa, pb, rtol=0, atol=1e-5)  # measured 9e-8
    assert not np.allclose(predict_scores(together[0].score_fn, together[1].tensors, test), pa)
    assert together[1].checkpoint["seed"] != together[0].checkpoint["seed"]
    assert together[1].checkpoint["encoders"]["wsi"]["meta"] == {"pmod": "wsi", "fold": 1, "joint": True}


def test_stacked_fusion_loss_padding_with_a_nan_label_keeps_gradients_finite():
    # padded rows point at row 0 of a member's fold; an unlabelled patient there (NaN label) must not
    # turn the head's gradient into NaN (it is masked out of the mean, but BCE's backward is (p - y) * 0)
    from haf.fusion.model import FusionHead, stacked_fusion_loss
    from haf.runtime.stacked import Layers, Members

    members = Members([1, 2])
    head = FusionHead(3, 4, 8, 0.0, Layers(members))
    u = torch.nn.functional.normalize(torch.randn(2, 5, 3, 4), dim=-1)
    mask = torch.ones(2, 5, 3, dtype=torch.bool)
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    label = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, float("nan"), float("nan")]])
    target = {"label": label, "time": torch.ones(2, 5), "event": torch.zeros(2, 5)}
    for drop in (False, True):
        head.zero_grad()
        loss, _ = stacked_fusion_loss(
            head,
            u,
            mask,
            target,
            valid,
            kind="bce",
            drop=drop,
            lambda_mofe=0.1,
            members=members,
            reduced_draw="subsets",
        )
        loss.sum().backward()
        assert torch.isfinite(loss).all()
        assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_a_small_validation_part_is_a_warning_naming_the_fold_and_its_usable_patients(folds, caplog):
    """Stage 2 counts validation patients with >= 2 modalities (what L_GA needs); Stage 3 (binary loss)
    the labelled ones; both counted here from the inputs."""
    from haf.alignment.train import train_alignment_folds

    two = [int((i.present[i.part == "val"].sum(axis=1) >= 2).sum()) for i in folds]
    labelled = [int(np.isfinite(i.label[i.part == "val"]).sum()) for i in folds]
    for counts, run, name in (
        (two, lambda sel: train_alignment_folds(folds, "ga", STAGE2, CPU, selection=sel), "stage2 ga"),
        (
            labelled,
            lambda sel: train_fusion_folds(
                folds, _spec("fusion_mlp_all", align="none", drop=False), STAGE3, STAGE2, CPU, selection=sel
            ),
            "fusion_mlp_all",
        ),
    ):
        # below it: every fold but the largest (every fold where all counts are equal)
        threshold = max(counts) + (len(set(counts)) == 1)
        caplog.clear()
        with caplog.at_level("WARNING", logger="haf.runtime.fit"):
            run(settings("training", min_val_patients=threshold))
        expected = {f"{name} fold {i.fold}": n for i, n in zip(folds, counts, strict=True) if n < threshold}
        assert expected and small_val_warnings(caplog.records) == expected, name
