"""Stage 3: random-modality subsets, the fusion loss (Eq. 10-11), the one trainer and its outputs."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from fakes.config import declare, load_config, settings, small_val_warnings
from fakes.fusion import synthetic_fold_inputs

from haf.alignment.projectors import ProjectorBank
from haf.alignment.train import save_projectors, train_alignment
from haf.artifacts.predictions import read_predictions
from haf.errors import HafConfigError, HafInputError
from haf.eval.scores import auc_or_nan, cindex_or_nan
from haf.fusion.model import FusionHead, draw_reduced, fusion_loss
from haf.fusion.spec import MethodSpec
from haf.fusion.train import load_fusion_model, train_fusion, train_method, write_run
from haf.methods import active_methods
from haf.modalities import MODALITIES
from haf.runtime.stacked import Layers, Members, member_state_dict
from haf.runtime.tensors import FoldTensors, predict_scores
from haf.settings import Stage1Settings

CPU = torch.device("cpu")
SMALL_DIMS = {"wsi": 8, "tma": 8, "cell": 5, "clin": 4, "path": 6, "blood": 7, "icd": 5}
STAGE2 = load_config(
    {
        "stage2": dict(
            d_out=16,
            hidden=32,
            tau_sv=0.1,
            tau_pd=0.1,
            lambda_pd=0.01,
            tau_clip=0.07,
            lr=1e-3,
            weight_decay=1e-5,
            max_epochs=20,
            batch_size=64,
            es_patience=10,
            lr_patience=15,
            lr_factor=0.5,
            seed=2,
        )
    }
)["stage2"]
STAGE3 = load_config(
    {
        "stage3": dict(
            hidden=32,
            dropout=0.1,
            lambda_mofe=0.1,
            lr=2e-3,
            weight_decay=1e-5,
            max_epochs=40,
            batch_size=64,
            lr_patience=15,
            lr_factor=0.5,
            es_patience=15,
            seed=3,
        )
    }
)["stage3"]
STAGE1 = load_config()["stage1"]
EVALUATION = load_config({"evaluation": dict(dropout_p=[0.0, 0.5], parachute_p=[0.3], repeats=3)})[
    "evaluation"
]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def cohort():
    """Planted signal in wsi, tma, path (strong) and clin, cell (weak); blood is noise."""
    return synthetic_fold_inputs(
        360,
        seed=21,
        dims=SMALL_DIMS,
        signal={"wsi": 2.0, "tma": 1.5, "path": 2.0, "clin": 0.8, "cell": 0.6, "blood": 0.0, "icd": 0.0},
    )


@pytest.fixture(scope="module")
def ga_bank(cohort):
    torch.set_num_threads(1)
    return train_alignment(cohort, "ga", STAGE2, CPU)


def _spec(name, **decl):
    return MethodSpec.from_declaration(name, declare({name: {"family": "fusion", **decl}})[name])


def test_reduced_sets_are_uniform_proper_nonempty_subsets():
    g = torch.Generator().manual_seed(0)
    present = torch.zeros(4, 7, dtype=torch.bool)
    present[0, [0, 3, 5]] = True  # 3 observed -> 6 proper non-empty subsets
    present[1, 2] = True  # single modality -> no reduced set
    present[2] = True
    present[3, [1, 6]] = True
    reduced, has = draw_reduced(present.repeat(6000, 1), g)
    assert has[:4].tolist() == [True, False, True, True]
    assert not (reduced & ~present.repeat(6000, 1)).any(), "never adds a modality"
    sets = reduced[0::4][:, [0, 3, 5]]
    assert sets.any(dim=1).all() and not sets.all(dim=1).any()
    counts = Counter(tuple(r) for r in sets.int().tolist())
    assert len(counts) == 6 and min(counts.values()) > 850 and max(counts.values()) < 1150
    torch.testing.assert_close(reduced[1::4], present[1].expand(6000, 7))
    assert len(Counter(tuple(r) for r in reduced[2::4].int().tolist())) == 126


def test_mofe_loss_by_hand():
    torch.manual_seed(0)
    head = FusionHead(3, 2, 4, 0.0)
    u = torch.randn(3, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    label = torch.tensor([1.0, 0.0, 1.0])
    g = torch.Generator().manual_seed(5)
    loss, parts = fusion_loss(
        head,
        u,
        mask,
        {"label": label, "time": label, "event": label},
        kind="bce",
        drop=True,
        lambda_mofe=0.1,
        generator=g,
    )
    reduced, has = draw_reduced(mask, torch.Generator().manual_seed(5))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    l_full = bce(head(u, mask), label, reduction="none")
    l_red = bce(head(u, reduced), label, reduction="none")[has]
    expected = l_full.mean() + l_red.mean() + 0.1 * torch.clamp(l_full[has] - l_red, min=0).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    plain, _ = fusion_loss(head, u, mask, {"label": label}, kind="bce", drop=False, lambda_mofe=0.1)
    assert plain.item() == pytest.approx(l_full.mean().item(), rel=1e-6)


def test_every_declared_fusion_method_parses(default_config):
    methods = active_methods(default_config)
    fusion = {n: d for n, d in methods.items() if d["family"] == "fusion"}
    assert len(fusion) == 16  # the eleven of issue 5 + haf_cox + the four warm-started ablations (issue 15)
    specs = {n: MethodSpec.from_declaration(n, d) for n, d in fusion.items()}
    assert specs["haf"].align == "ga" and specs["haf"].drop and specs["haf"].uses_stage2
    assert specs["fusion_mlp_wsi_tma"].modalities == ("wsi", "tma")
    assert not specs["haf_nodetach"].detach and specs["haf_cox"].task_loss == "cox"
    assert specs["haf_nodetach"].init == "scratch" and not specs["haf_nodetach"].warm_start
    for base in ("fusion_mlp_all", "ga", "drop", "haf"):  # each warm ablation = its scratch one + init
        warm, scratch = specs[f"{base}_nodetach_warm"], specs[f"{base}_nodetach"]
        assert warm.warm_start and warm.as_dict() == {
            **scratch.as_dict(),
            "name": warm.name,
            "init": "stage1",
        }
    with pytest.raises(HafConfigError, match="seven"):
        _spec("bad", modalities=["wsi", "tma"], align="ga")


def test_haf_learns_planted_signal_and_masked_values_cannot_leak(cohort, ga_bank):
    run = train_fusion(
        cohort,
        _spec("haf", align="ga", drop=True),
        STAGE3,
        STAGE2,
        CPU,
        projectors=ga_bank.projectors,
        stage2_meta={"align": "ga", "untrained": []},
    )
    test = cohort.index("test")
    score = predict_scores(run.score_fn, run.tensors, test)
    auc = auc_or_nan(cohort.label[test], score)
    assert auc > 0.7, auc
    assert {"train_task", "train_reduced", "train_mofe"} <= set(run.history.columns)
    # a masked modality's values cannot change the output: through method_io and through the model itself
    mask = cohort.present[test].copy()
    mask[:, [0, 4]] = False
    tensors = run.tensors
    before = predict_scores(run.score_fn, tensors, test, present=mask)
    noisy = FoldTensors(
        x={m: v + (100.0 * torch.randn_like(v) if m in ("wsi", "path") else 0) for m, v in tensors.x.items()},
        present=tensors.present,
        label=tensors.label,
        time=tensors.time,
        event=tensors.event,
        device=CPU,
    )
    np.testing.assert_array_equal(before, predict_scores(run.score_fn, noisy, test, present=mask))
    x, present = tensors.rows(test, torch.as_tensor(mask))
    x_raw = {
        m: noisy.x[m][torch.as_tensor(test)] for m in MODALITIES
    }  # not zeroed: the model must ignore them
    with torch.no_grad():
        torch.testing.assert_close(run.model(x, present), run.model(x_raw, present))
    assert not np.allclose(before, score), "the mask does change the prediction"


def test_single_modality_patients_and_modality_missing_in_training(cohort, caplog):
    inputs = synthetic_fold_inputs(200, seed=22, dims=SMALL_DIMS)
    train = inputs.index("train")
    icd = MODALITIES.index("icd")
    inputs.present[train, icd] = False  # ICD missing for the whole training part
    inputs.features["icd"][train] = 0
    lonely = np.concatenate([train[:5], inputs.index("test")[:3]])
    for j, m in enumerate(MODALITIES):
        if m != "path":
            inputs.present[lonely, j] = False
            inputs.features[m][lonely] = 0
    inputs.validate()
    assert inputs.present[inputs.index("test"), icd].any()
    with caplog.at_level(logging.INFO, logger="haf"):
        run = train_fusion(inputs, _spec("drop", align="none", drop=True), STAGE3, STAGE2, CPU)
    assert "no training patient has modality 'icd'" in caplog.text
    assert run.checkpoint["untrained"] == ["icd"]
    assert not any(p.requires_grad for p in run.model.projectors.proj["icd"].parameters())
    # and it is exactly its initialisation: the fold's (seeded) stacked init, never updated
    init = ProjectorBank(
        {m: [inputs.dims()[m]] for m in MODALITIES}, MODALITIES, STAGE2["hidden"], STAGE2["d_out"],
        Layers(Members([run.checkpoint["seed"]])),
    )  # fmt: skip
    for name, value in member_state_dict(init.proj["icd"], 0).items():
        torch.testing.assert_close(run.model.projectors.proj["icd"].state_dict()[name], value, rtol=0, atol=0)
    assert not torch.equal(
        run.model.projectors.proj["path"].state_dict()["net.0.weight"],
        member_state_dict(init.proj["path"], 0)["net.0.weight"],
    )
    score = predict_scores(run.score_fn, run.tensors, inputs.index("test"))
    assert np.isfinite(score).all() and len(np.unique(score.round(6))) > 3


def test_haf_cox_and_outputs_round_trip(tmp_path, cohort, ga_bank):
    cohort.save(tmp_path / "fold_0.npz")
    save_projectors(tmp_path / "projectors.pt", ga_bank, cohort.fold)
    params = {"stage1": STAGE1, "stage2": STAGE2, "stage3": STAGE3}
    decl = declare({"haf_cox": {"family": "fusion", "align": "ga", "drop": True, "task_loss": "cox"}})[
        "haf_cox"
    ]
    run = train_method(
        "haf_cox", decl, tmp_path / "fold_0.npz", params, CPU, projectors=tmp_path / "projectors.pt"
    )
    outputs = {
        k: tmp_path / "out" / n
        for k, n in (
            ("model", "model.pt"),
            ("predictions", "predictions.tsv"),
            ("masked", "masked.tsv.gz"),
            ("train_log", "train_log.tsv"),
        )
    }
    predictions = write_run(run, outputs, seed=3, evaluation=EVALUATION)
    back = read_predictions(outputs["predictions"])
    assert set(back["part"]) == {"val", "test"} and back["prob"].isna().all()
    test = back[back["part"] == "test"]
    assert cindex_or_nan(test["time"].to_numpy(), test["event"].to_numpy(), test["risk"].to_numpy()) > 0.6
    masked = pd.read_csv(outputs["masked"], sep="\t", dtype={"patient_id": str})
    assert set(masked["scenario"]) == {"dropout", "pathology", "tabular", "mixed"}
    assert masked["prob"].isna().all() and np.isfinite(masked["risk"]).all()
    log = pd.read_csv(outputs["train_log"], sep="\t")
    assert log["best"].sum() == 1 and "val_score" in log
    model, checkpoint = load_fusion_model(outputs["model"])
    assert checkpoint["declaration"]["task_loss"] == "cox" and checkpoint["stage2"]["align"] == "ga"
    idx = cohort.index("test")
    np.testing.assert_allclose(
        predict_scores(lambda x, p: model(x, p), run.tensors, idx),
        predictions.loc[predictions["part"] == "test", "risk"],
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="holds 'ga' projectors, clip needs 'clip'"):
        train_method(
            "clip",
            declare({"clip": {"family": "fusion", "align": "clip"}})["clip"],
            tmp_path / "fold_0.npz",
            params,
            CPU,
            projectors=tmp_path / "projectors.pt",
        )


@pytest.mark.parametrize(
    "name, decl",
    [
        ("fusion_mlp_wsi_tma", {"modalities": ["wsi", "tma"]}),
        ("clip_drop", {"align": "clip", "drop": True}),
    ],
)
def test_other_variants_train(cohort, name, decl):
    bank = None
    if decl.get("align") == "clip":
        bank = train_alignment(cohort, "clip", {**STAGE2, "max_epochs": 5}, CPU).projectors
    run = train_fusion(
        cohort, _spec(name, **decl), {**STAGE3, "max_epochs": 10}, STAGE2, CPU, projectors=bank
    )
    test = cohort.index("test")
    score = predict_scores(run.score_fn, run.tensors, test)
    assert np.isfinite(score).all()
    if name == "fusion_mlp_wsi_tma":  # only its two slots exist
        assert run.model.projectors.modalities == ("wsi", "tma")
        mask = cohort.present[test].copy()
        mask[:, 2:] = False
        np.testing.assert_array_equal(score, predict_scores(run.score_fn, run.tensors, test, present=mask))


def test_nan_embedding_fails_through_the_job(tmp_path):
    inputs = synthetic_fold_inputs(40, seed=23, dims=SMALL_DIMS)
    row = int(np.flatnonzero(inputs.present[:, 0])[4])
    inputs.features["wsi"][row, 0] = np.inf
    inputs.save(tmp_path / "fold_3.npz")
    with pytest.raises(HafInputError, match=rf"'wsi'.*patient {inputs.patient_id[row]}"):
        train_method(
            "fusion_mlp_all",
            declare({"fusion_mlp_all": {"family": "fusion"}})["fusion_mlp_all"],
            tmp_path / "fold_3.npz",
            {"stage1": STAGE1, "stage2": STAGE2, "stage3": STAGE3},
            CPU,
        )


def test_nodetach_trains_all_stages_jointly(tmp_path):
    from fakes.fusion import synthetic_bags

    from haf.fusion.joint import train_joint

    inputs = synthetic_fold_inputs(90, seed=24, dims=SMALL_DIMS)
    stores = synthetic_bags(inputs, tmp_path / "bags", seed=1, dim=12, sizes=(3, 9))
    stage1 = dict(STAGE1, d1=8, d2=4, dropout=0.0, bag_weight=0.7, k_sample=2, max_instances=6, batch_bags=8)
    params = {"stage1": stage1, "stage2": STAGE2, "stage3": {**STAGE3, "max_epochs": 3}}
    spec = _spec("haf_nodetach", align="ga", drop=True, detach=False)
    torch.manual_seed(0)
    run = train_joint(inputs, spec, params, CPU, bags=stores)
    hist = run.history
    assert len(hist) == 3 and (hist["train_img"] > 0).all() and (hist["train_align"] > 0).all()
    # z were recomputed by the jointly trained encoders: 8-d, zero where the modality is absent
    for j, pm in enumerate(("wsi", "tma")):
        z = run.inputs.features[pm]
        assert z.shape == (inputs.n, 8) and (z[~inputs.present[:, j]] == 0).all()
        assert np.abs(z[inputs.present[:, j]]).sum() > 0
    enc = run.checkpoint["encoders"]["wsi"]
    assert enc["hparams"]["in_dim"] == 12 and run.checkpoint["encoder_init"] == "scratch"
    outputs = {
        k: tmp_path / "out" / n
        for k, n in (
            ("model", "model.pt"),
            ("predictions", "p.tsv"),
            ("masked", "m.tsv.gz"),
            ("train_log", "t.tsv"),
        )
    }
    predictions = write_run(run, outputs, seed=3, evaluation=EVALUATION)
    assert np.isfinite(predictions["risk"]).all() and len(predictions) == len(inputs.index("val")) + len(
        inputs.index("test")
    )
    # the fusion gradient reaches the CLAM encoders: one fusion-only backward gives them a gradient
    from haf.fusion.joint import JointPathology

    members = Members([0])
    pathology = JointPathology(stores, Stage1Settings.from_config(stage1), Layers(members))
    rows = inputs.index("train")[:16]
    z, _ = pathology.encode_step(
        [inputs.patient_id[rows].tolist()], torch.zeros(1, 16), 16, CPU, members.rngs
    )
    x, present = run.tensors.rows(rows)
    x.update({pm: value[0] for pm, value in z.items()})
    run.model(x, present).sum().backward()
    assert pathology.encoders["wsi"].fc[0].weight.grad.abs().sum() > 0


def test_nodetach_rejects_bags_that_disagree_with_fold_inputs(tmp_path):
    from fakes.fusion import synthetic_bags

    from haf.fusion.joint import train_joint

    inputs = synthetic_fold_inputs(30, seed=25, dims=SMALL_DIMS)
    stores = synthetic_bags(inputs, tmp_path / "bags", seed=1, dim=6, sizes=(2, 4))
    row = int(np.flatnonzero(inputs.present[:, 1])[0])
    del stores["tma"].sources[inputs.patient_id[row]]
    spec = _spec("drop_nodetach", drop=True, detach=False)
    params = {
        "stage1": dict(STAGE1, d1=4, d2=2, max_instances=4, batch_bags=4),
        "stage2": STAGE2,
        "stage3": STAGE3,
    }
    with pytest.raises(HafInputError, match=rf"patient {inputs.patient_id[row]} has a tma embedding"):
        train_joint(inputs, spec, params, CPU, bags=stores)


def test_nodetach_job_reads_bags_from_manifest_and_tma_index(tmp_path):
    from fakes.fusion import synthetic_bags

    inputs = synthetic_fold_inputs(40, seed=26, dims=SMALL_DIMS)
    stores = synthetic_bags(inputs, tmp_path / "bags", seed=2, dim=6, sizes=(2, 5))
    manifest = pd.DataFrame(
        {
            "patient_id": inputs.patient_id,
            "wsi_files": [
                str(stores["wsi"].sources[p].files[0]) if stores["wsi"].has(p) else ""
                for p in inputs.patient_id
            ],
        }
    )
    manifest.to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    index = pd.DataFrame(
        {
            "patient_id": list(stores["tma"].sources),
            "h5_path": [str(s.files[0]) for s in stores["tma"].sources.values()],
            "status": "ok",
        }
    )
    index.to_csv(tmp_path / "index.tsv", sep="\t", index=False)
    inputs.save(tmp_path / "fold_0.npz")
    params = {
        "stage1": dict(
            STAGE1, d1=4, d2=2, max_instances=4, batch_bags=4, wsi_dim=6, cache_gb_cpu=1, cache_gb_gpu=1
        ),
        "stage2": STAGE2,
        "stage3": {**STAGE3, "max_epochs": 2},
    }
    bags = {"manifest": tmp_path / "manifest.tsv", "folds": None, "tma_index": tmp_path / "index.tsv"}
    run = train_method(
        "ga_nodetach",
        declare({"ga_nodetach": {"family": "fusion", "align": "ga", "detach": False}})["ga_nodetach"],
        tmp_path / "fold_0.npz",
        params,
        CPU,
        bags=bags,
    )
    assert len(run.history) == 2 and run.inputs.features["wsi"].shape == (inputs.n, 4)


# ---------------------------------------------------------------------------------------------
# Table 2's warm-started no-detach variant (init: stage1)

WARM_STAGE1 = dict(STAGE1, d1=8, d2=4, dropout=0.25, k_sample=2, max_instances=6, batch_bags=8)


def _warm_setup(tmp_path, folds=(0, 1)):
    from fakes.fusion import fake_stage1_models, synthetic_bags

    # one cohort (same seed: same patients, one bag store), one fold inputs per fold
    inputs = [synthetic_fold_inputs(60, fold=f, n_folds=4, seed=27, dims=SMALL_DIMS) for f in folds]
    stores = synthetic_bags(inputs[0], tmp_path / "bags", seed=3, dim=10, sizes=(2, 7))
    models = fake_stage1_models(tmp_path / "stage1", stores, list(folds), d1=8, d2=4, dropout=0.25)
    return inputs, stores, models


def test_warm_start_loads_exactly_each_folds_stage1_weights(tmp_path):
    from haf.fusion.joint import JointPathology, read_stage1_models
    from haf.mil.clam import GatedAttentionMIL

    inputs, stores, paths = _warm_setup(tmp_path)
    stage1 = Stage1Settings.from_config(WARM_STAGE1)
    members = Members([11, 12])
    pathology = JointPathology(stores, stage1, Layers(members))
    scratch = {pm: [member_state_dict(e, k) for k in range(2)] for pm, e in pathology.encoders.items()}
    pathology.load_stage1(read_stage1_models(paths, inputs, stores, stage1))
    pathology.eval()
    for pm, encoder in pathology.encoders.items():
        for k in range(2):
            plain = GatedAttentionMIL.from_checkpoint(str(paths[pm][k]))
            plain.eval()
            state = member_state_dict(encoder, k)
            assert state.keys() == plain.state_dict().keys()
            for key, value in plain.state_dict().items():  # bit-exact copy, every weight
                assert torch.equal(state[key], value), (pm, k, key)
                assert not torch.equal(scratch[pm][k][key], value), (pm, k, key)  # the seeded init differs
            # epoch 0 forward: member k of the stacked encoder gives the Stage 1 model's attention and z
            pids = [p for p in inputs[k].patient_id if stores[pm].has(p)][:5]
            bags = [stores[pm].bag(p, CPU) for p in pids]
            n = max(len(b) for b in bags)
            x = torch.zeros(2, len(bags), n, bags[0].shape[1])
            mask = torch.zeros(2, len(bags), n, dtype=torch.bool)
            for i, b in enumerate(bags):
                x[:, i, : len(b)] = b
                mask[:, i, : len(b)] = True
            with torch.no_grad():
                out = encoder(x, mask)
                ref = plain(x[k], mask[k])
            # measured: max |difference| 0 (the same per-member kernels); 1e-6 leaves float headroom
            torch.testing.assert_close(out.attention[k], ref.attention, rtol=0, atol=1e-6)
            torch.testing.assert_close(out.z[k], ref.z, rtol=0, atol=1e-6)
            other = 1 - k  # member k does not hold the other fold's model
            assert not torch.allclose(out.z[other], ref.z, atol=1e-3)


def test_warm_start_through_the_trainer_keeps_stage1_z_at_a_vanishing_learning_rate(tmp_path):
    from haf.fusion.joint import train_joint_folds
    from haf.mil.clam import GatedAttentionMIL
    from haf.mil.train import embed_bags

    inputs, stores, paths = _warm_setup(tmp_path)
    # one epoch at lr 1e-12: the final z are the Stage 1 models' z if, and only if, the trainer loaded
    # them (measured: difference 0, the steps are below float32 resolution; a fresh init: 3.4-4.4)
    params = {"stage1": WARM_STAGE1, "stage2": STAGE2, "stage3": {**STAGE3, "max_epochs": 1, "lr": 1e-12}}
    warm = _spec("haf_nodetach_warm", align="ga", drop=True, detach=False, init="stage1")
    runs = train_joint_folds(inputs, warm, params, CPU, bags=stores, stage1_models=paths)
    cold = train_joint_folds(inputs, _spec("haf_nodetach", align="ga", drop=True, detach=False), params, CPU,
                             bags=stores)  # fmt: skip
    for k, run in enumerate(runs):
        assert run.checkpoint["encoder_init"] == "stage1"
        for pm in ("wsi", "tma"):
            plain = GatedAttentionMIL.from_checkpoint(str(paths[pm][k])).eval()
            z_ref = embed_bags(plain, stores[pm], inputs[k].patient_id.tolist(), CPU)[0]
            j = MODALITIES.index(pm)
            z_ref = z_ref * inputs[k].present[:, j : j + 1]
            np.testing.assert_allclose(run.inputs.features[pm], z_ref, rtol=0, atol=1e-6)
            assert np.abs(cold[k].inputs.features[pm] - z_ref).max() > 1e-2
            source = run.checkpoint["encoder_sources"][pm]
            assert source["fold"] == inputs[k].fold and source["path"] == str(paths[pm][k])
    assert cold[0].checkpoint["encoder_init"] == "scratch" and cold[0].checkpoint["encoder_sources"] == {}


def test_a_small_no_detach_validation_part_is_a_warning_naming_the_fold(tmp_path, caplog):
    from haf.fusion.joint import train_joint_folds

    inputs, stores, _ = _warm_setup(tmp_path, folds=(0, 1, 2, 3))
    # usable, counted here: labelled validation patients (binary loss)
    usable = [int(np.isfinite(i.label[i.part == "val"]).sum()) for i in inputs]
    threshold = sorted(usable)[-1]  # below it: every fold but the largest
    params = {"stage1": WARM_STAGE1, "stage2": STAGE2, "stage3": {**STAGE3, "max_epochs": 1}}
    spec = _spec("drop_nodetach", drop=True, detach=False)
    with caplog.at_level(logging.WARNING, logger="haf.runtime.fit"):
        train_joint_folds(
            inputs, spec, params, CPU, bags=stores, selection=settings("training", min_val_patients=threshold)
        )
    expected = {
        f"drop_nodetach fold {i.fold}": n for i, n in zip(inputs, usable, strict=True) if n < threshold
    }
    assert expected and small_val_warnings(caplog.records) == expected


def test_warm_start_rejects_stage1_models_of_another_fold_or_size(tmp_path):
    from haf.fusion.joint import train_joint_folds

    inputs, stores, paths = _warm_setup(tmp_path)
    params = {"stage1": WARM_STAGE1, "stage2": STAGE2, "stage3": {**STAGE3, "max_epochs": 1}}
    warm = _spec("drop_nodetach_warm", drop=True, detach=False, init="stage1")
    swapped = {pm: list(reversed(p)) for pm, p in paths.items()}
    with pytest.raises(HafInputError, match=r"fold_1/model\.pt.*Stage 1 model of fold 1, expected 0"):
        train_joint_folds(inputs, warm, params, CPU, bags=stores, stage1_models=swapped)
    wider = {**params, "stage1": {**WARM_STAGE1, "d1": 6}}
    with pytest.raises(HafInputError, match=r"d1 = 8, this run needs 6"):
        train_joint_folds(inputs, warm, wider, CPU, bags=stores, stage1_models=paths)
    with pytest.raises(ValueError, match=r"stage1/tma/fold_k/model\.pt of each of the 2 folds"):
        train_joint_folds(inputs, warm, params, CPU, bags=stores, stage1_models={"wsi": paths["wsi"]})
    with pytest.raises(ValueError, match="takes no Stage 1 models"):
        cold = _spec("drop_nodetach", drop=True, detach=False)
        train_joint_folds(inputs, cold, params, CPU, bags=stores, stage1_models=paths)
    with pytest.raises(
        HafConfigError, match=r"methods\.ga\.init: 'stage1' applies to no-detach methods only"
    ):
        _spec("ga", align="ga", init="stage1")
