"""Comparators: forward under missing modalities, Cox loss with ties, end-to-end training on planted signal."""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import pandas as pd
import pytest
import torch
from fakes.config import load_config

from haf.artifacts.fold_inputs import FoldInputs
from haf.artifacts.predictions import read_predictions
from haf.comparators.train import build_model, load_model, run_comparator
from haf.errors import HafInputError
from haf.eval.scores import auc_or_nan, cindex_or_nan
from haf.losses import cox_partial_likelihood
from haf.methods import COMPARATOR_FAMILIES, method_declaration
from haf.methods import METHOD_FAMILIES as COMPARATORS
from haf.modalities import MODALITIES
from haf.runtime.stacked import Members, member_state_dict
from haf.runtime.stacked_attention import RowLayers
from haf.runtime.tensors import FoldTensors, predict_scores

DIMS = {"wsi": 12, "tma": 12, "cell": 6, "clin": 5, "path": 7, "blood": 8, "icd": 9}
FAMILIES = list(COMPARATOR_FAMILIES)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def synthetic_fold(n: int = 400, seed: int = 0, dims: dict[str, int] | None = None) -> FoldInputs:
    """Latent risk r seen by every modality (strongest in WSI and path), ~25% of each modality missing."""
    dims = dims or DIMS
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    strength = {"wsi": 1.5, "tma": 0.8, "cell": 0.4, "clin": 0.6, "path": 1.2, "blood": 0.0, "icd": 0.3}
    present = rng.random((n, len(MODALITIES))) < 0.75
    present[~present.any(axis=1), MODALITIES.index("clin")] = True
    features = {}
    for j, m in enumerate(MODALITIES):
        w = rng.normal(size=dims[m])
        w /= np.linalg.norm(w)
        x = strength[m] * risk[:, None] * w[None, :] + rng.normal(size=(n, dims[m]))
        features[m] = np.where(present[:, [j]], x, 0.0).astype(np.float32)
    t_event = rng.exponential(2000.0 * np.exp(-2.5 * risk))
    censor = rng.uniform(300, 5000, size=n)
    time_ = np.minimum(t_event, censor).round() + 1
    event = (t_event <= censor).astype(np.int64)
    label = np.where(event.astype(bool) & (time_ <= 1825), 1.0, np.where(time_ > 1825, 0.0, np.nan))
    part = np.array(["train"] * n, dtype=object)
    order = rng.permutation(n)
    part[order[: n // 4]] = "test"
    part[order[n // 4 : n // 2]] = "val"
    return FoldInputs(
        fold=0,
        patient_id=np.array([f"{i:03d}" for i in range(n)], dtype=object),
        part=part,
        label=label,
        time=time_.astype(float),
        event=event,
        present=present,
        features=features,
    ).validate()


def _sections(config: dict, fast: bool = True) -> dict[str, dict]:
    stage3 = dict(config["stage3"])
    parachute = dict(config["parachute"])
    if fast:
        stage3.update(hidden=32, dropout=0.25, lr=1e-3, max_epochs=60, es_patience=20, batch_size=32)
        parachute.update(d=32, d_int=32, max_epochs=25, es_patience=12, batch_size=16, lr=2e-3, t_max=25)
    return {"stage3": stage3, "parachute": parachute}


def _decl(family: str, **extra) -> dict:
    raw = load_config({"methods": {family: {"family": family, **extra}}})["methods"][family]
    return method_declaration(family, raw)


def _batch(n: int = 7, seed: int = 1) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(n, d, generator=g) for m, d in DIMS.items()}
    present = torch.rand(n, len(MODALITIES), generator=g) < 0.6
    present[0] = True  # everything
    present[1] = False
    present[1, MODALITIES.index("clin")] = True  # one tabular modality only
    present[2] = False
    present[2, MODALITIES.index("wsi")] = True  # the value modality only
    present[3, MODALITIES.index("wsi")] = False  # no value modality
    present[3, MODALITIES.index("path")] = True
    present[~present.any(dim=1), 0] = True
    return x, present


DECLS = [
    ("late_fusion", {}),
    ("attention_fusion", {}),
    ("mfmf", {}),
    ("mfmf", {"value_modality": "path"}),
    ("feature_interaction", {"rank": 4}),
    ("parachute", {}),
    ("parachute", {"modalities": ["cell", "clin", "path"]}),
    ("late_fusion", {"modalities": ["wsi", "path"]}),
]


@pytest.mark.parametrize("family, extra", DECLS)
def test_forward_shapes_masks_and_batch_independence(family, extra, default_config):
    torch.manual_seed(0)
    decl = _decl(family, **extra)
    model = build_model(decl, DIMS, _sections(default_config)[COMPARATORS[family].section]).eval()
    x, present = _batch()
    out = model(x, present)
    assert out.shape == (7,) and torch.isfinite(out).all()

    # a masked modality's values cannot change the output (raw model call, no method_io zeroing)
    g = torch.Generator().manual_seed(5)
    x_changed = {m: v.clone() for m, v in x.items()}
    for j, m in enumerate(MODALITIES):
        absent = ~present[:, j]
        x_changed[m][absent] = torch.randn(int(absent.sum()), DIMS[m], generator=g) * 1e3
    assert torch.equal(model(x_changed, present), out)
    with torch.no_grad():  # inference may take another attention kernel (PyTorch's fast path)
        torch.testing.assert_close(model(x_changed, present), out, rtol=1e-5, atol=1e-6)
        assert torch.equal(model(x_changed, present), model(x, present))

    # ...while a present modality's values do change it (the check above is not vacuous)
    used = decl["modalities"][0]
    j = MODALITIES.index(used)
    row = int(torch.nonzero(present[:, j])[0])
    x_moved = {m: v.clone() for m, v in x.items()}
    x_moved[used][row] += 3.0
    assert not torch.isclose(model(x_moved, present)[row], out[row])

    # a patient's score does not depend on the rest of the batch
    part = model({m: v[2:5] for m, v in x.items()}, present[2:5])
    torch.testing.assert_close(part, out[2:5], rtol=1e-5, atol=1e-5)
    single = model({m: v[3:4] for m, v in x.items()}, present[3:4])
    torch.testing.assert_close(single, out[3:4], rtol=1e-5, atol=1e-5)

    # the same model stacked over two members: member k is the plain model loaded from it, and the
    # masked-modality rule holds member by member
    members = Members([11, 12])
    stacked = build_model(
        decl, {m: [d, d] for m, d in DIMS.items()}, _sections(default_config)[COMPARATORS[family].section],
        RowLayers(members),
    ).eval()  # fmt: skip
    both = {m: torch.stack([v, x_changed[m]]) for m, v in x.items()}
    out_s = stacked(both, torch.stack([present, present]))
    assert out_s.shape == (2, 7)
    torch.testing.assert_close(stacked({m: v.flip(0) for m, v in both.items()}, torch.stack([present, present])),
                               out_s, rtol=0, atol=0)  # fmt: skip
    for k in range(2):
        plain = build_model(decl, DIMS, _sections(default_config)[COMPARATORS[family].section]).eval()
        plain.load_state_dict(member_state_dict(stacked, k))
        # measured: max |difference| 1e-7 (batched vs plain kernels)
        torch.testing.assert_close(out_s[k], plain(x, present), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out_s[0], out_s[1])

    # gradients flow in training mode
    model.train()
    model(x, present).sum().backward()
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in model.parameters())


def test_patient_without_any_method_modality_gets_a_constant(default_config):
    decl = _decl("late_fusion", modalities=["wsi", "tma"])
    model = build_model(decl, DIMS, _sections(default_config)["stage3"]).eval()
    x, present = _batch()
    present[:] = False
    present[:, MODALITIES.index("clin")] = True
    out = model(x, present)
    assert torch.isfinite(out).all() and torch.unique(out).numel() == 1


def test_late_fusion_averages_present_modality_logits(default_config):
    model = build_model(_decl("late_fusion"), DIMS, _sections(default_config)["stage3"]).eval()
    x, present = _batch()
    logits, mask = model.modality_logits(x, present)
    expected = (logits * mask).sum(1) / mask.sum(1)  # weights start equal: the plain mean
    torch.testing.assert_close(model(x, present), expected)


def test_mfmf_value_modality_must_be_used():
    from haf.comparators.models import MFMF
    from haf.errors import HafConfigError

    with pytest.raises(ValueError, match="value modality"):
        MFMF(DIMS, ["clin", "path"], "wsi", 16, 4, 0.0)
    with pytest.raises(HafConfigError, match="value_modality"):
        _decl("mfmf", modalities=["clin", "path"], value_modality="wsi")


def _cox_by_hand(risk, time_, event, ties):
    """Negative log partial likelihood / number of events, written out event time by event time."""
    e = np.exp(risk)
    ll = 0.0
    for t in np.unique(time_[event == 1]):
        dead = np.flatnonzero((time_ == t) & (event == 1))
        at_risk = e[time_ >= t].sum()
        tied = e[dead].sum()
        for k, i in enumerate(dead):
            denominator = at_risk - (k / len(dead)) * tied if ties == "efron" else at_risk
            ll += risk[i] - np.log(denominator)
    return -ll / event.sum()


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_cox_loss_matches_hand_computation_with_ties(ties):
    # a three-way tie at t=2 (with a censored patient at the same time, who stays in the risk set),
    # a two-way tie at t=5, censoring in between
    risk = np.array([0.4, -0.3, 1.1, 0.2, -0.8, 0.5, 0.0, -0.1])
    time_ = np.array([2.0, 2.0, 2.0, 2.0, 3.0, 5.0, 5.0, 7.0])
    event = np.array([1, 1, 1, 0, 0, 1, 1, 1])
    expected = _cox_by_hand(risk, time_, event, ties)
    r = torch.tensor(risk, requires_grad=True)
    # shuffle the input order: the loss must not depend on it
    perm = torch.tensor([5, 2, 7, 0, 3, 6, 1, 4])
    loss = cox_partial_likelihood(r[perm], torch.tensor(time_)[perm], torch.tensor(event)[perm], ties)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert torch.isfinite(r.grad).all()


def test_cox_breslow_and_efron_differ_on_ties():
    risk = torch.tensor([0.4, -0.3, 1.1, 0.2])
    time_ = torch.tensor([2.0, 2.0, 2.0, 4.0])
    event = torch.tensor([1, 1, 1, 1])
    b = cox_partial_likelihood(risk, time_, event, "breslow").item()
    e = cox_partial_likelihood(risk, time_, event, "efron").item()
    assert e < b  # Efron's denominators are smaller for the second and third tied deaths


def test_cox_batch_normalisation_divides_by_the_batch_size_by_hand():
    # Algorithm 2, line 6: L = -1/B sum_b delta_b (h_b - log sum_{t_j >= t_b} exp(h_j)).
    # B = 4, deaths at t = 1 (risk set: all four) and t = 3 (risk set: patients 2 and 3):
    # sum = -(0.1 - log(e^0.1 + e^-0.2 + e^0.3 + e^0)) - (0.3 - log(e^0.3 + e^0))
    #     = -(0.1 - 1.4524941) - (0.3 - 0.8543552) = 1.9068494
    risk = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64)
    time_ = torch.tensor([1.0, 2.0, 3.0, 4.0])
    event = torch.tensor([1, 0, 1, 0])
    total = -(0.1 - math.log(math.exp(0.1) + math.exp(-0.2) + math.exp(0.3) + 1.0)) - (
        0.3 - math.log(math.exp(0.3) + 1.0)
    )
    assert total == pytest.approx(1.9068494, abs=1e-7)
    batch = cox_partial_likelihood(risk, time_, event, normalise="batch").item()
    events = cox_partial_likelihood(risk, time_, event, normalise="events").item()
    assert batch == pytest.approx(total / 4, rel=1e-12)
    assert events == pytest.approx(total / 2, rel=1e-12)
    assert cox_partial_likelihood(risk, time_, event).item() == events  # the function's own default
    # no event: 0 either way (with a graph)
    assert cox_partial_likelihood(risk, time_, torch.zeros(4), normalise="batch").item() == 0.0
    with pytest.raises(ValueError, match="normalise must be one of events, batch, got 'mean'"):
        cox_partial_likelihood(risk, time_, event, normalise="mean")


def test_parachute_takes_the_batch_mean_by_default_over_each_members_valid_rows(default_config):
    from haf.comparators.models import Targets

    assert default_config["parachute"]["cox_normalisation"] == "batch"
    risk = torch.tensor([0.1, -0.2, 0.3, 0.0, 5.0, 7.0], dtype=torch.float64)
    targets = Targets(
        label=torch.zeros(6), time=torch.tensor([1.0, 2.0, 3.0, 4.0, 0.5, 9.0]),
        event=torch.tensor([1, 0, 1, 0, 1, 1]),
    )  # fmt: skip
    valid = torch.tensor([True, True, True, True, False, False])  # the last two: padding
    total = 1.9068494  # the hand value above: four valid rows, two deaths
    for normalisation, divisor in (("batch", 4), ("events", 2)):
        sections = _sections(load_config({"parachute": {"cox_normalisation": normalisation}}))
        model = build_model(_decl("parachute"), DIMS, sections["parachute"])
        assert model.cox_normalisation == normalisation
        assert model.member_cox(risk, targets, valid).item() == pytest.approx(total / divisor, abs=1e-6)
        stacked = model.member_cox(
            torch.stack([risk, risk.flip(0)]),
            Targets(*(torch.stack([v, v]) for v in (targets.label, targets.time, targets.event))),
            torch.stack([valid, valid]),
        )
        assert stacked[0].item() == pytest.approx(total / divisor, abs=1e-6)


def _test_metric(predictions: pd.DataFrame, family: str) -> float:
    test = predictions[predictions["part"] == "test"]
    if COMPARATORS[family].task_loss == "cox":
        return cindex_or_nan(test["time"].to_numpy(), test["event"].to_numpy(), test["risk"].to_numpy())
    return auc_or_nan(test["label"].to_numpy(), test["prob"].to_numpy())


@pytest.mark.parametrize("family", FAMILIES)
def test_end_to_end_training_beats_chance_and_writes_contract_outputs(family, tmp_path, default_config):
    inputs = synthetic_fold()
    evaluation = dict(default_config["evaluation"], repeats=2, dropout_p=[0.0, 0.5], parachute_p=[0.3])
    outputs = {
        "model": tmp_path / "model.pt",
        "predictions": tmp_path / "predictions.tsv",
        "masked": tmp_path / "masked.tsv.gz",
        "train_log": tmp_path / "train_log.tsv",
    }
    start = time.perf_counter()
    preds = run_comparator(
        inputs,
        _decl(family),
        _sections(default_config),
        evaluation,
        outputs,
        method=family,
        device=torch.device("cpu"),
    )
    elapsed = time.perf_counter() - start
    back = read_predictions(outputs["predictions"])
    assert set(back["part"]) == {"val", "test"} and len(back) == len(preds)
    assert (back["method"] == family).all()
    if COMPARATORS[family].task_loss == "cox":
        assert back["prob"].isna().all()
    else:
        assert back["prob"].between(0, 1).all()
    masked = pd.read_csv(outputs["masked"], sep="\t", dtype={"patient_id": str})
    assert {"scenario", "p", "repeat", "risk"} <= set(masked.columns)
    assert set(masked["scenario"]) == {"dropout", "pathology", "tabular", "mixed"}
    log = pd.read_csv(outputs["train_log"], sep="\t")
    assert {"epoch", "train_loss", "val_loss", "val_score", "lr", "best"} <= set(log.columns)
    assert log["best"].sum() == 1

    # the checkpoint rebuilds the same model
    checkpoint = torch.load(outputs["model"], weights_only=False)
    model = load_model(checkpoint)
    from haf.runtime.tensors import FoldTensors, predict_scores

    tensors = FoldTensors.from_inputs(inputs, torch.device("cpu"))
    test = inputs.index("test")
    np.testing.assert_allclose(
        predict_scores(model, tensors, test),
        back.loc[back["part"] == "test", "risk"].to_numpy(),
        rtol=1e-4,
        atol=1e-5,
    )

    metric = _test_metric(back, family)
    print(
        f"{family}: test {'C-index' if family == 'parachute' else 'AUC'} {metric:.3f} "
        f"({len(log)} epochs, {elapsed:.1f} s)"
    )
    assert metric > 0.65, f"{family} is not clearly above chance on planted signal: {metric:.3f}"


def test_training_is_reproducible(default_config):
    from haf.comparators.train import train_comparator

    inputs = synthetic_fold(n=120)
    sections = _sections(default_config)
    sections["parachute"].update(max_epochs=3)
    runs = [
        train_comparator(inputs, _decl("parachute"), copy.deepcopy(sections), torch.device("cpu"))
        for _ in range(2)
    ]
    for a, b in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# classical baselines (family sksurv: CoxPH / CoxNet through scikit-survival)

TABULAR = ["cell", "clin", "path", "blood", "icd"]


def _sksurv(default_config, **overrides) -> dict:
    return {**default_config["sksurv"], **overrides}


@pytest.mark.parametrize("estimator", ["coxph", "coxnet"])
def test_sksurv_fit_reads_only_training_rows(estimator, default_config):
    from haf.comparators.sksurv import fit_fold

    decl = _decl("sksurv", estimator=estimator, modalities=TABULAR)
    inputs = synthetic_fold(n=200, seed=3)
    settings = _sksurv(default_config, coxph_alpha=[1.0])
    a = fit_fold(inputs, decl, settings, name="m")
    # the test part replaced: other features, other presence (each keeps clin), other times and events
    changed = copy.deepcopy(inputs)
    test = inputs.index("test")
    rng = np.random.default_rng(9)
    changed.present[test] = rng.random((len(test), len(MODALITIES))) < 0.5
    changed.present[test, MODALITIES.index("clin")] = True
    for j, m in enumerate(MODALITIES):
        x = rng.normal(scale=5.0, size=(len(test), DIMS[m])).astype(np.float32)
        changed.features[m][test] = x * changed.present[test, j : j + 1]
    changed.time[test] = rng.uniform(1, 9000, size=len(test)).round()
    changed.event[test] = 1 - changed.event[test]
    b = fit_fold(changed.validate(), decl, settings, name="m")
    for key, value in a.checkpoint["state_dict"].items():  # coefficients, fill means, centre, scale
        assert torch.equal(value, b.checkpoint["state_dict"][key]), key
    assert a.checkpoint["alpha"] == b.checkpoint["alpha"]
    pd.testing.assert_frame_equal(a.history, b.history)
    pa = predict_scores(a.score_fn, a.tensors, test)
    pb = predict_scores(b.score_fn, b.tensors, test)
    assert not np.allclose(pa, pb)  # the test rows did change, and are only predicted


def test_sksurv_risk_equals_scikit_survivals_predict_on_a_hand_example(default_config):
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    from haf.comparators.sksurv import fit_fold, load_model

    # 12 patients: clin (2 columns) for everyone, path (1 column) missing for patients 2, 5, 9
    clin = np.array([[0.1, 1.0], [0.4, 0.0], [0.9, 1.0], [0.2, 0.0], [0.7, 1.0], [0.5, 0.0],
                     [0.3, 1.0], [0.8, 0.0], [0.6, 1.0], [0.0, 0.0], [1.0, 1.0], [0.35, 0.0]])  # fmt: skip
    path = np.array([2.0, 1.0, 0.0, 3.0, 1.5, 0.0, 2.5, 0.5, 1.0, 0.0, 0.2, 2.2])
    has_path = np.ones(12, dtype=bool)
    has_path[[2, 5, 9]] = False
    time_ = np.array([5, 8, 3, 12, 7, 9, 4, 15, 6, 10, 2, 11], dtype=float)
    event = np.array([1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0])
    part = np.array(["train"] * 8 + ["val"] * 2 + ["test"] * 2, dtype=object)
    part[[1, 9]] = part[[9, 1]]  # patient 1 validates, patient 9 (no path) trains
    present = np.zeros((12, len(MODALITIES)), dtype=bool)
    present[:, MODALITIES.index("clin")] = True
    present[:, MODALITIES.index("path")] = has_path
    features = {m: np.zeros((12, 1), dtype=np.float32) for m in MODALITIES}
    features["clin"] = clin.astype(np.float32)
    features["path"] = (path * has_path)[:, None].astype(np.float32)
    inputs = FoldInputs(0, np.array([f"{i:03d}" for i in range(12)], dtype=object), part, np.full(12, np.nan),
                        time_, event, present, features).validate()  # fmt: skip
    decl = _decl("sksurv", estimator="coxph", modalities=["clin", "path"])
    result = fit_fold(inputs, decl, _sksurv(default_config, coxph_alpha=[1.0]), name="m")

    # the design by hand: clin, clin present (all 1), path or its training mean, path present
    train = np.flatnonzero(part == "train")
    path_fill = path[train][has_path[train]].mean()
    raw = np.column_stack([clin, np.ones(12), np.where(has_path, path, path_fill), has_path.astype(float)])
    mu, sd = raw[train].mean(axis=0), raw[train].std(axis=0)
    sd[sd == 0] = 1.0
    z = (raw - mu) / sd
    reference = CoxPHSurvivalAnalysis(alpha=1.0, ties="breslow").fit(
        z[train], Surv.from_arrays(event=event[train].astype(bool), time=time_[train])
    )
    # fold inputs hold float32 features (0.1 is not 0.1f): measured relative difference 3e-9
    np.testing.assert_allclose(result.checkpoint["state_dict"]["coef"].numpy(), reference.coef_, rtol=1e-7)
    rows = np.flatnonzero(part != "train")
    ours = predict_scores(result.score_fn, result.tensors, rows)
    # the common prediction path returns float32 (about 1e-7 relative)
    np.testing.assert_allclose(ours, reference.predict(z[rows]), rtol=0, atol=1e-6)
    # masking path at test time = its training mean, presence 0 (what an absent path is in training)
    masked = present[rows].copy()
    masked[:, MODALITIES.index("path")] = False
    raw_masked = raw[rows].copy()
    raw_masked[:, 3], raw_masked[:, 4] = path_fill, 0.0
    np.testing.assert_allclose(
        predict_scores(result.score_fn, result.tensors, rows, present=masked),
        reference.predict((raw_masked - mu) / sd),
        rtol=0,
        atol=1e-6,
    )
    assert not np.allclose(reference.predict((raw_masked - mu) / sd), reference.predict(z[rows]))
    # the checkpoint alone rebuilds the model (weights only, no pickled estimator)
    rebuilt = load_model(result.checkpoint)
    np.testing.assert_array_equal(predict_scores(rebuilt, result.tensors, rows), ours)


@pytest.mark.parametrize("estimator, modalities", [("coxph", TABULAR), ("coxnet", TABULAR), ("coxnet", None)])
def test_sksurv_finds_planted_signal_and_writes_contract_outputs(
    estimator, modalities, tmp_path, default_config
):
    from haf.artifacts.checkpoints import load_checkpoint
    from haf.artifacts.masked import read_masked
    from haf.artifacts.train_log import read_train_log
    from haf.comparators.sksurv import load_model, run_sksurv_folds
    from haf.methods import METHOD_FAMILIES, resolve

    assert resolve(METHOD_FAMILIES["sksurv"].fit) is run_sksurv_folds
    extra = {"modalities": modalities} if modalities else {}
    decl = _decl("sksurv", estimator=estimator, **extra)
    inputs = synthetic_fold(n=400, seed=5)
    evaluation = load_config({"evaluation": {"dropout_p": [0.0, 0.5], "repeats": 2}})["evaluation"]
    outputs = {k: tmp_path / n for k, n in
               (("model", "model.pt"), ("predictions", "p.tsv"), ("masked", "m.tsv.gz"), ("train_log", "t.tsv"))}  # fmt: skip
    run_sksurv_folds([inputs], decl, default_config["sksurv"], evaluation, [outputs], method="m")
    back = read_predictions(outputs["predictions"])
    assert back["prob"].isna().all() and set(back["part"]) == {"val", "test"} and (back["seed"] == 0).all()
    test = back[back["part"] == "test"]
    c = cindex_or_nan(test["time"].to_numpy(), test["event"].to_numpy(), test["risk"].to_numpy())
    assert c > 0.6, f"{estimator}: Harrell's C {c:.3f} on planted signal"
    log = read_train_log(outputs["train_log"])
    assert len(log) == (1 if estimator == "coxph" else default_config["sksurv"]["coxnet_n_alphas"])
    masked = read_masked(outputs["masked"])
    assert set(masked["scenario"]) >= {"dropout"} and masked["prob"].isna().all()
    checkpoint = load_checkpoint(outputs["model"])
    tensors = FoldTensors.from_inputs(inputs, torch.device("cpu"))
    np.testing.assert_allclose(
        predict_scores(load_model(checkpoint), tensors, inputs.index("test")),
        test["risk"].to_numpy(),
        atol=1e-5,
    )


def test_sksurv_penalty_choice_and_its_fallbacks(default_config, caplog):
    from haf.comparators.sksurv import _select, fit_fold

    nan = float("nan")
    # best validation C, ties to the stronger penalty; no C: the lower validation loss; neither: the
    # strongest penalty with a non-zero coefficient
    assert _select([0.6, 0.7, 0.7], [1.0, 1.0, 1.0], [3.0, 2.0, 1.0], [1, 1, 1]) == (1, "val_cindex")
    assert _select([nan, nan], [0.5, 0.4], [2.0, 1.0], [1, 1]) == (1, "val_loss")
    assert _select([nan] * 3, [nan] * 3, [3.0, 2.0, 1.0], [0, 2, 5]) == (1, "strongest_nonzero")
    inputs = synthetic_fold(n=120, seed=7)
    inputs.event[inputs.index("val")] = 0  # no validation death: no C, no partial likelihood
    with caplog.at_level("WARNING", logger="haf.comparators.sksurv"):
        result = fit_fold(inputs, _decl("sksurv", estimator="coxnet"), default_config["sksurv"], name="m")
    kept = result.history[result.history["best"]].iloc[0]
    assert kept["selected_by"] == "strongest_nonzero" and kept["n_nonzero"] > 0
    assert (result.history.loc[result.history["alpha"] > kept["alpha"], "n_nonzero"] == 0).all()
    assert "gives no Harrell's C" in caplog.text and "fold 0" in caplog.text
    inputs.event[inputs.index("train")] = 0
    with pytest.raises(HafInputError, match="training part has 0 deaths"):
        fit_fold(inputs, _decl("sksurv", estimator="coxph"), default_config["sksurv"], name="m")
