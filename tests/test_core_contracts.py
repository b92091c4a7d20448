"""The shared contracts: prediction format, fold inputs, masks, Cox loss, config checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from haf.artifacts.bags import read_bag, read_pooled_bag, write_bag
from haf.artifacts.fold_inputs import FoldInputs
from haf.artifacts.predictions import make_predictions, read_predictions, write_predictions
from haf.errors import HafConfigError, HafInputError
from haf.eval.masking import draw_masks, masked_prediction_table
from haf.losses import cox_partial_likelihood
from haf.methods import active_methods
from haf.modalities import MODALITIES


def _predictions(**over):
    kw = dict(
        method="haf",
        seed=1,
        fold=0,
        part=np.array(["test", "test", "val"]),
        patient_id=np.array(["001", "002", "003"]),
        risk=np.array([0.1, -0.2, 1.0]),
        prob=np.array([0.52, 0.45, 0.73]),
        label=np.array([1.0, np.nan, 0.0]),
        time=np.array([100.0, 2000.0, 300.0]),
        event=np.array([1, 0, 0]),
    )
    kw.update(over)
    return make_predictions(**kw)


def test_prediction_round_trip_keeps_ids_as_strings(tmp_path):
    frame = _predictions()
    write_predictions(tmp_path / "p.tsv", frame)
    back = read_predictions(tmp_path / "p.tsv")
    assert back["patient_id"].tolist() == ["001", "002", "003"]
    assert np.isnan(back["label"].iloc[1])


@pytest.mark.parametrize(
    "over, field",
    [
        (dict(patient_id=np.array(["1", "002", "003"])), "patient_id"),
        (dict(part=np.array(["test", "holdout", "val"])), "part"),
        (dict(risk=np.array([np.nan, 0.0, 0.0])), "risk"),
        (dict(prob=np.array([1.5, 0.2, 0.1])), "prob"),
    ],
)
def test_prediction_validation_names_field(over, field):
    with pytest.raises(HafInputError, match=field):
        _predictions(**over)


def _fold_inputs(n=6):
    rng = np.random.default_rng(0)
    present = np.ones((n, len(MODALITIES)), dtype=bool)
    present[0, 0] = False
    features = {m: rng.normal(size=(n, 3)).astype(np.float32) for m in MODALITIES}
    features["wsi"][0] = 0
    return FoldInputs(
        fold=2,
        patient_id=np.array([f"{i:03d}" for i in range(1, n + 1)], dtype=object),
        part=np.array(["train"] * (n - 2) + ["val", "test"], dtype=object),
        label=np.array([0, 1, np.nan, 1, 0, 1], dtype=float),
        time=np.arange(n, dtype=float) * 100 + 50,
        event=np.array([0, 1, 0, 1, 0, 1]),
        present=present,
        features=features,
        columns={m: ["a", "b", "c"] for m in MODALITIES},
    )


def test_fold_inputs_round_trip(tmp_path):
    inputs = _fold_inputs().validate()
    inputs.save(tmp_path / "f.npz")
    back = FoldInputs.load(tmp_path / "f.npz")
    assert back.fold == 2 and back.patient_id.tolist() == inputs.patient_id.tolist()
    assert back.index("test").tolist() == [5]
    np.testing.assert_array_equal(back.features["cell"], inputs.features["cell"])


def test_fold_inputs_nan_names_modality_and_patient():
    inputs = _fold_inputs()
    inputs.features["blood"][3, 1] = np.nan
    with pytest.raises(HafInputError, match=r"'blood'.*patient 004"):
        inputs.validate()


def test_masks_keep_one_observed_and_are_seeded():
    rng = np.random.default_rng(1)
    present = rng.random((50, 7)) < 0.7
    present[:, 3] = True
    a = draw_masks(present, 0.9, 30, "dropout", seed=7, fold=0)
    b = draw_masks(present, 0.9, 30, "dropout", seed=7, fold=0)
    c = draw_masks(present, 0.9, 30, "dropout", seed=7, fold=1)
    assert a.shape == (30, 50, 7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.any(axis=2).all(), "every patient keeps at least one modality"
    assert not (a & ~present).any(), "masking never adds a modality"


def test_mask_scenario_touches_only_its_group():
    present = np.ones((40, 7), dtype=bool)
    masks = draw_masks(present, 0.5, 10, "pathology", seed=3, fold=0)
    assert masks[:, :, 2:].all()
    assert not masks[:, :, :2].all()
    rate = 1 - masks[:, :, :2].mean()
    assert 0.35 < rate < 0.65


def test_masked_prediction_table_repeats():
    present = np.ones((5, 7), dtype=bool)
    calls = []

    def predict(mask):
        calls.append(mask.copy())
        return mask.sum(axis=1).astype(float), None

    table = masked_prediction_table(
        predict,
        present,
        [f"{i:03d}" for i in range(5)],
        method="m",
        fold=0,
        seed=1,
        protocols={"dropout": [0.0, 0.5], "tabular": [0.3]},
        n_repeats=4,
    )
    assert len(calls) == 1 + 4 + 4
    assert set(table.groupby(["scenario", "p"]).size()) == {5 * 1, 5 * 4}
    assert (table["risk"] == table["n_present"]).all()


def test_cox_breslow_matches_hand_computation():
    # times 1,2,3 all events; risks r -> loss = -mean(r_i - log sum_{t_j>=t_i} e^{r_j})
    risk = torch.tensor([0.5, -0.2, 0.1], requires_grad=True)
    time = torch.tensor([1.0, 2.0, 3.0])
    event = torch.tensor([1, 1, 1])
    r = risk.detach().numpy()
    expected = -np.mean([r[0] - np.log(np.exp(r).sum()), r[1] - np.log(np.exp(r[1:]).sum()), r[2] - r[2]])
    loss = cox_partial_likelihood(risk, time, event)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(risk.grad).all()


def test_cox_efron_differs_from_breslow_only_with_ties():
    risk = torch.tensor([0.3, 0.1, -0.4, 0.2])
    event = torch.tensor([1, 1, 0, 1])
    no_ties = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert cox_partial_likelihood(risk, no_ties, event, "efron").item() == pytest.approx(
        cox_partial_likelihood(risk, no_ties, event, "breslow").item()
    )
    ties = torch.tensor([1.0, 1.0, 3.0, 4.0])
    # Efron by hand for the tie at t=1: events 0,1; risk set {0,1,2,3}
    e = np.exp(risk.numpy())
    s = e.sum()
    tied = e[0] + e[1]
    ll = (
        (risk[0].item() - np.log(s))
        + (risk[1].item() - np.log(s - 0.5 * tied))
        + (risk[3].item() - np.log(e[3]))
    )
    assert cox_partial_likelihood(risk, ties, event, "efron").item() == pytest.approx(-ll / 3, rel=1e-6)


def test_cox_without_events_is_zero_with_grad():
    risk = torch.zeros(3, requires_grad=True)
    loss = cox_partial_likelihood(risk, torch.ones(3), torch.zeros(3))
    loss.backward()
    assert loss.item() == 0.0


def test_bag_round_trip_and_errors(tmp_path):
    feats = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    write_bag(tmp_path / "a.h5", feats, np.zeros((5, 2)), {"encoder": "x"})
    got, coords = read_bag(tmp_path / "a.h5", expected_dim=8)
    np.testing.assert_array_equal(got, feats)
    assert read_pooled_bag([tmp_path / "a.h5", tmp_path / "a.h5"], 8).shape == (10, 8)
    with pytest.raises(HafInputError, match="4-d"):
        read_bag(tmp_path / "a.h5", expected_dim=4)
    feats[2, 3] = np.nan
    write_bag(tmp_path / "b.h5", feats, np.zeros((5, 2)))
    with pytest.raises(HafInputError, match="row 2"):
        read_bag(tmp_path / "b.h5")
    (tmp_path / "c.h5").write_bytes(b"not hdf5")
    with pytest.raises(HafInputError, match="c.h5"):
        read_bag(tmp_path / "c.h5")


def test_config_checks(default_config):
    from haf.cohort.folds import fold_ids
    from haf.settings import CVSettings

    assert fold_ids(CVSettings.from_config(default_config["cv"])) == list(range(10))
    methods = active_methods(default_config)
    assert methods["haf"]["modalities"] == list(MODALITIES)
    assert methods["wsi_tma_clam"]["modalities"] == ["wsi", "tma"]
    default_config["run_methods"] = ["haf", "nope"]
    with pytest.raises(HafConfigError, match="nope"):
        active_methods(default_config)
    default_config["cv"]["scheme"] = "official_in"
    assert fold_ids(CVSettings.from_config(default_config["cv"])) == [0]


def test_fit_restores_best_epoch():
    from haf.runtime.fit import fit, make_optimizer
    from haf.settings import TrainSettings

    model = torch.nn.Linear(1, 1)
    cfg = TrainSettings(
        lr=0.1, weight_decay=0.0, max_epochs=20, optimizer="adam", scheduler="plateau",
        lr_patience=15, lr_factor=0.5, eta_min=0.0, t_max=1, es_patience=3,
    )  # fmt: skip
    opt = make_optimizer(model.parameters(), cfg)
    scores = iter([0.5, 0.9, 0.6, 0.6, 0.6, 0.6, 0.6])
    snapshot = {}

    def train_epoch(epoch):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        return 1.0

    def validate():
        s = next(scores)
        if s == 0.9:
            snapshot["w"] = model.weight.item()
        return s, 1.0

    history = fit({"m": model}, opt, cfg, train_epoch, validate)
    assert len(history) == 5  # best at epoch 1, then 3 bad epochs... stops at epoch 4
    assert model.weight.item() == snapshot["w"] == 1.0
    assert history.loc[history["best"], "epoch"].item() == 1
    assert isinstance(history, pd.DataFrame)


def test_method_outputs_written_and_masked_values_zeroed(tmp_path, default_config):
    from haf.artifacts.predictions import read_predictions
    from haf.runtime.outputs import write_method_outputs
    from haf.runtime.tensors import FoldTensors, minibatches, predict_scores, training_rows

    inputs = _fold_inputs().validate()
    tensors = FoldTensors.from_inputs(inputs, torch.device("cpu"))
    # a mask zeroes the features of the modalities it drops
    x, m = tensors.rows(np.array([1, 2]), torch.tensor([[False] + [True] * 6] * 2))
    assert torch.count_nonzero(x["wsi"]) == 0 and torch.count_nonzero(x["tma"]) > 0

    def score_fn(x, present):
        return sum(v.sum(dim=1) for v in x.values()) + present.sum(dim=1)

    assert training_rows(inputs, "train", "bce").tolist() == [0, 1, 3]
    assert training_rows(inputs, "train", "cox").tolist() == [0, 1, 2, 3]
    batches = list(minibatches(np.arange(9), 4, np.random.default_rng(0)))
    assert sorted(np.concatenate(batches).tolist()) == list(range(9)) and min(map(len, batches)) >= 2
    evaluation = dict(default_config["evaluation"], repeats=3)
    outputs = {k: tmp_path / f"{k}.out" for k in ("predictions", "masked", "train_log", "model")}
    outputs["masked"] = tmp_path / "masked.tsv.gz"
    preds = write_method_outputs(
        outputs,
        method="toy",
        seed=0,
        inputs=inputs,
        tensors=tensors,
        score_fn=score_fn,
        task_loss="bce",
        evaluation=evaluation,
        history=pd.DataFrame(
            {
                "epoch": [0],
                "train_loss": [0.7],
                "val_loss": [0.69],
                "val_score": [0.5],
                "lr": [1e-4],
                "best": [True],
            }
        ),
        checkpoint={"declaration": {"family": "toy"}, "state_dict": {}},
    )
    assert preds["part"].tolist() == ["val", "test"]
    back = read_predictions(outputs["predictions"])
    np.testing.assert_allclose(back["risk"], predict_scores(score_fn, tensors, np.array([4, 5])), rtol=1e-5)
    masked = pd.read_csv(outputs["masked"], sep="\t", dtype={"patient_id": str})
    assert set(masked["scenario"]) == {"dropout", "pathology", "tabular", "mixed"}
    # 10 dropout p (p=0 once) + 3 scenarios x 3 p, 3 repeats, 1 test patient
    assert len(masked) == 1 + 9 * 3 + 3 * 3 * 3


def test_batched_masked_table_equals_unbatched():
    rng = np.random.default_rng(3)
    present = rng.random((7, 7)) < 0.8
    present[:, 2] = True
    weights = rng.normal(size=7)

    def predict(mask):
        score = mask.astype(float) @ weights
        return score, 1 / (1 + np.exp(-score))

    kwargs = dict(method="m", fold=1, seed=5, protocols={"dropout": [0.0, 0.4], "mixed": [0.3]}, n_repeats=5)
    ids = [f"{i:03d}" for i in range(7)]
    a = masked_prediction_table(predict, present, ids, **kwargs)
    b = masked_prediction_table(predict, present, ids, batched=True, **kwargs)
    pd.testing.assert_frame_equal(a, b)


def test_atomic_outputs_follow_umask(tmp_path):
    import os
    import stat

    from haf.artifacts.files import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("write", "read", "keys", "what"),
    [
        ("save_checkpoint", "load_checkpoint", ("declaration", "state_dict"), "method checkpoint"),
        ("write_stage1_model", "read_stage1_model", ("state_dict", "hparams", "meta"), "Stage 1 model"),
        ("write_projectors", "read_projectors", ("spec", "state_dict"), "Stage 2 projectors"),
    ],
)
def test_torch_files_name_the_missing_key_on_write_and_read(tmp_path, write, read, keys, what):
    from haf.artifacts import checkpoints, projectors, stage1_model
    from haf.artifacts.torch_files import save_torch

    module = {"save_checkpoint": checkpoints, "write_stage1_model": stage1_model}.get(write, projectors)
    with pytest.raises(ValueError, match=f"{what} payload lacks"):
        getattr(module, write)(tmp_path / "w.pt", {"state_dict": {}})
    path = tmp_path / "model.pt"
    payload = {k: {"w": torch.zeros(1)} for k in keys if k != keys[-1]}
    save_torch(path, payload)  # a readable file without the last key the reader needs
    with pytest.raises(HafInputError, match=f"not a {what}: key missing") as err:
        getattr(module, read)(path)
    assert str(path) in str(err.value) and keys[-1] in str(err.value)
    save_torch(path, [1, 2])  # not a dict at all
    with pytest.raises(HafInputError, match=f"not a {what}"):
        getattr(module, read)(path)
