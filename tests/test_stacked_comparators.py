"""Comparators stacked over folds: a fold trained among others gives what it gives trained alone.

Each comparator family is trained on three folds at once and on one of them alone; history, selected
epoch and predictions must agree to float rounding.  The three folds come from cohorts of different
sizes (padding of patients and of minibatches) and one fold encodes a modality with another width
(per-member fan-in).  The folds are chosen so that the stacked batches are wider than the lone fold's
own (a trailing batch of one joins the previous one in another fold: 17 rows at batch 16, 33 at 32),
so a dropout that drew over the padded width would break the equality.  PARACHUTE's SAM + GCS step is
also checked against the single-fold ``GCSStep`` for one step on the same weights and batch.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from fakes.config import declare, load_config, settings, small_val_warnings
from fakes.fusion import synthetic_fold_inputs

from haf.comparators.gcs import GCSConfig, GCSStep, sam_perturbation
from haf.comparators.models import Targets
from haf.comparators.parachute import Parachute
from haf.comparators.stacked_gcs import StackedGCSStep, member_sq_norms
from haf.comparators.train import load_model, run_comparator_folds, train_comparator_folds
from haf.eval.masking import draw_masks
from haf.modalities import MODALITIES
from haf.runtime.fit import StackedTrainer
from haf.runtime.stacked import Members, member_state_dict
from haf.runtime.stacked_attention import MultiheadAttention, RowDropout, RowLayers, StepRows
from haf.runtime.tensors import predict_scores
from haf.settings import ParachuteSettings

CPU = torch.device("cpu")
DIMS = {"wsi": 6, "tma": 6, "cell": 4, "clin": 4, "path": 5, "blood": 4, "icd": 4}
SECTIONS = load_config(
    {
        "stage3": dict(hidden=16, dropout=0.25, lr=3e-3, max_epochs=8, es_patience=4, batch_size=32),
        "parachute": dict(d=16, d_int=16, heads=2, dropout=0.1, max_epochs=5, es_patience=3, batch_size=16,
                          lr=2e-3, t_max=5, p_miss=0.2),
    }
)  # fmt: skip
SECTIONS = {"stage3": SECTIONS["stage3"], "parachute": SECTIONS["parachute"]}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def folds():
    # (n, fold): train parts of 81 / 88 / 75 patients (Cox: 81 = 5 * 16 + 1 -> a batch of 17 in fold 0)
    # with 64 / 68 / 65 labelled (BCE at 32: 65 = 2 * 32 + 1 -> a batch of 33 in fold 2); fold 1 alone
    # has batches of at most 16 and 32 rows.  Fold 2 encodes `cell` with 5 columns instead of 4.
    return [
        synthetic_fold_inputs(119, fold=0, n_folds=5, seed=3, dims=DIMS),
        synthetic_fold_inputs(130, fold=1, n_folds=5, seed=3, dims=DIMS),
        synthetic_fold_inputs(110, fold=2, n_folds=5, seed=3, dims={**DIMS, "cell": 5}),
    ]


def _decl(family: str, **extra) -> dict:
    return declare({family: {"family": family, **extra}})[family]


FAMILIES = [
    ("late_fusion", {}),
    ("attention_fusion", {}),
    ("mfmf", {}),
    ("feature_interaction", {"rank": 4}),
    ("parachute", {}),
]


def test_the_folds_pad_batches_beyond_the_lone_folds_width(folds):
    cox = [len(f.index("train")) for f in folds]
    bce = [int((~np.isnan(f.label[f.index("train")])).sum()) for f in folds]
    assert cox == [81, 88, 75] and bce == [64, 68, 65]


@pytest.mark.parametrize("family, extra", FAMILIES)
def test_a_fold_stacked_with_others_equals_it_trained_alone(family, extra, folds, caplog):
    decl = _decl(family, **extra)
    with caplog.at_level(logging.INFO, logger="haf.comparators.train"):
        together = train_comparator_folds(folds, decl, copy.deepcopy(SECTIONS), CPU)
    if family in ("mfmf", "feature_interaction"):
        # fold 2 stops first: folds 0 and 1 go on in a compact run (fold 1 among them), and fold 1 must
        # still equal its lone run
        assert "compacted to a run of folds 0, 1" in caplog.text
    alone = train_comparator_folds(folds[1:2], decl, copy.deepcopy(SECTIONS), CPU)[0]
    a, b = together[1].history, alone.history
    assert a["epoch"].tolist() == b["epoch"].tolist()
    assert int(a.loc[a["best"], "epoch"].iloc[0]) == int(b.loc[b["best"], "epoch"].iloc[0])
    # measured: max |difference| 1.2e-7 in the losses, 0 in the scores (float32 batched kernels)
    pd.testing.assert_frame_equal(a, b, rtol=1e-4, atol=1e-5)
    test = folds[1].index("test")
    pa = predict_scores(together[1].score_fn, together[1].tensors, test)
    pb = predict_scores(alone.score_fn, alone.tensors, test)
    if family == "parachute":
        # the partial likelihood is blind to a constant shift of the log hazard: compare centred risks
        pa, pb = pa - pa.mean(), pb - pb.mean()
    # measured: max |difference| 3e-7
    np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=1e-5)
    # the folds really are different runs: another fold's model scores this fold differently
    assert not np.allclose(predict_scores(together[0].score_fn, together[1].tensors, test), pa, atol=1e-3)
    assert [r.seed for r in together] == [decl_seed(family, f) for f in (0, 1, 2)]
    assert together[1].checkpoint["seed"] == alone.seed
    # fold 2's model is the plain model of its own widths
    assert together[2].model.state_dict()[_first_cell_weight(family)].shape[-1] == 5


def decl_seed(family: str, fold: int) -> int:
    section = "parachute" if family == "parachute" else "stage3"
    return int(SECTIONS[section]["seed"]) + 1000 * fold


def _first_cell_weight(family: str) -> str:
    return {
        "late_fusion": "predictors.adapters.cell.0.weight",
        "attention_fusion": "adapters.adapters.cell.weight",
        "mfmf": "queries.adapters.cell.weight",
        "feature_interaction": "embed.adapters.cell.0.weight",
        "parachute": "adapters.adapters.cell.0.weight",
    }[family]


def test_a_declared_seed_replaces_the_section_seed(folds):
    sections = copy.deepcopy(SECTIONS)
    sections["stage3"]["max_epochs"] = 1
    runs = train_comparator_folds(folds[:2], _decl("late_fusion", seed=77), sections, CPU)
    assert [r.seed for r in runs] == [77, 1077]


def test_a_declared_p_miss_replaces_the_section_p_miss(folds, monkeypatch, caplog):
    # PARACHUTE's per-p protocol: parachute_p30 trains with runtime masking at its own p_miss (mixed,
    # per group), whatever parachute.p_miss says; the section's value is used when none is declared
    import haf.comparators.train as train_module

    calls = []

    def recording(present, p, n_repeats, scenario, seed, fold):
        calls.append((p, scenario))
        return draw_masks(present, p, n_repeats, scenario, seed, fold)

    monkeypatch.setattr(train_module, "draw_masks", recording)
    sections = copy.deepcopy(SECTIONS)
    sections["parachute"].update(max_epochs=2, p_miss=0.0)
    with caplog.at_level(logging.INFO, logger="haf.comparators.train"):
        own = train_comparator_folds(
            folds[:1], _decl("parachute", p_miss=0.3, per_p_of="base"), sections, CPU
        )
    assert calls and set(calls) == {(0.3, "mixed")}
    assert (
        "training-time masking: mixed scenario (per group) at p_miss = 0.3 (the method's own)" in caplog.text
    )
    calls.clear()
    assert not train_comparator_folds(folds[:1], _decl("parachute"), sections, CPU)[0].history.empty
    assert calls == []  # section p_miss 0, none declared: no runtime masking
    sections["parachute"]["p_miss"] = 0.3
    from_section = train_comparator_folds(folds[:1], _decl("parachute"), sections, CPU)[0]
    torch.testing.assert_close(from_section.model.state_dict(), own[0].model.state_dict(), rtol=0, atol=0)
    sections["parachute"]["p_miss"] = 0.05  # the declaration wins over the section
    again = train_comparator_folds(folds[:1], _decl("parachute", p_miss=0.3), sections, CPU)[0]
    torch.testing.assert_close(again.model.state_dict(), own[0].model.state_dict(), rtol=0, atol=0)


def test_run_comparator_folds_writes_each_folds_outputs_and_checkpoints_rebuild(
    folds, tmp_path, default_config
):
    sections = copy.deepcopy(SECTIONS)
    sections["parachute"]["max_epochs"] = 2
    evaluation = dict(default_config["evaluation"], repeats=1, dropout_p=[0.0, 0.5], parachute_p=[0.3])
    outputs = [
        {k: tmp_path / f"fold_{i}" / name for k, name in
         (("model", "model.pt"), ("predictions", "predictions.tsv"), ("masked", "masked.tsv.gz"),
          ("train_log", "train_log.tsv"))}
        for i in range(2)
    ]  # fmt: skip
    preds = run_comparator_folds(
        folds[:2], _decl("parachute"), sections, evaluation, outputs, method="parachute", device=CPU
    )
    for i, fold in enumerate(folds[:2]):
        assert (preds[i]["fold"] == fold.fold).all()
        checkpoint = torch.load(outputs[i]["model"], weights_only=False)
        model = load_model(checkpoint)
        from haf.runtime.tensors import FoldTensors

        test = fold.index("test")
        tensors = FoldTensors.from_inputs(fold, CPU)
        back = preds[i][preds[i]["part"] == "test"]["risk"].to_numpy()
        np.testing.assert_allclose(predict_scores(model, tensors, test), back, rtol=1e-5, atol=1e-6)
        assert outputs[i]["masked"].exists() and outputs[i]["train_log"].exists()


def test_a_fold_without_two_training_patients_is_named(folds):
    bad = copy.deepcopy(folds[2])
    train = bad.index("train")
    bad.label[train[1:]] = np.nan  # one labelled training patient left
    with pytest.raises(ValueError, match="late_fusion fold 2: only 1 training patients"):
        train_comparator_folds([folds[0], bad], _decl("late_fusion"), copy.deepcopy(SECTIONS), CPU)


@pytest.mark.parametrize("family", ["late_fusion", "parachute"])
def test_a_small_validation_part_is_a_warning_naming_the_fold_and_its_usable_patients(family, folds, caplog):
    # usable, counted here from the inputs: the labelled validation patients for a binary loss, every
    # validation patient for a Cox loss (the validation C-index uses the censored ones too)
    usable = [
        len(i.index("val")) if family == "parachute" else int(np.isfinite(i.label[i.index("val")]).sum())
        for i in folds
    ]
    threshold = sorted(usable)[1]  # below it: the smallest fold(s) only
    selection = settings("training", min_val_patients=threshold)
    sections = copy.deepcopy(SECTIONS)
    sections["parachute" if family == "parachute" else "stage3"]["max_epochs"] = 1
    with caplog.at_level(logging.WARNING, logger="haf.runtime.fit"):
        train_comparator_folds(folds, _decl(family), sections, CPU, selection=selection)
    expected = {f"{family} fold {i.fold}": n for i, n in zip(folds, usable, strict=True) if n < threshold}
    assert expected and small_val_warnings(caplog.records) == expected


# ---------------------------------------------------------------------------------------------
# attention and row dropout


def test_attention_matches_torch_multihead_attention_with_a_key_padding_mask():
    torch.manual_seed(0)
    d, heads = 8, 2
    ours = MultiheadAttention(d, heads, 0.0).eval()
    ref = torch.nn.MultiheadAttention(d, heads, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]))
        ref.in_proj_bias.copy_(torch.randn(3 * d))
        ours.q.bias.copy_(ref.in_proj_bias[:d])
        ours.k.bias.copy_(ref.in_proj_bias[d : 2 * d])
        ours.v.bias.copy_(ref.in_proj_bias[2 * d :])
        ref.out_proj.weight.copy_(ours.out.weight)
        ours.out.bias.copy_(torch.randn(d))
        ref.out_proj.bias.copy_(ours.out.bias)
    q, kv = torch.randn(4, 3, d), torch.randn(4, 5, d)
    mask = torch.tensor(
        [[1, 1, 1, 1, 1], [1, 0, 1, 0, 0], [0, 0, 0, 0, 1], [1, 1, 0, 1, 1]], dtype=torch.bool
    )
    expected, _ = ref(q, kv, kv, key_padding_mask=~mask, need_weights=False)
    # measured: max |difference| 2e-7
    torch.testing.assert_close(ours(q, kv, kv, mask), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours(q, kv, kv), ref(q, kv, kv, need_weights=False)[0], rtol=1e-5, atol=1e-6)


def test_masked_keys_are_never_attended_and_a_row_without_keys_is_finite():
    torch.manual_seed(1)
    attn = MultiheadAttention(8, 2, 0.0)
    q, kv = torch.randn(3, 2, 8), torch.randn(3, 4, 8, requires_grad=True)
    mask = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]], dtype=torch.bool)
    out = attn(q, kv, kv, mask)
    moved = kv.detach().clone()
    moved[~mask] = float("nan")  # even a NaN in a masked key or value cannot leak
    torch.testing.assert_close(attn(q, moved, moved, mask), out, rtol=0, atol=0)
    # row 1 attends to nothing: the output projection of a zero vector (its bias), no NaN
    torch.testing.assert_close(out[1], attn.out.bias.expand(2, 8).detach())
    out.sum().backward()
    assert torch.isfinite(kv.grad).all() and (kv.grad[~mask] == 0).all()
    assert (kv.grad[mask].abs().sum(dim=-1) > 0).all()


def test_stacked_attention_member_equals_the_plain_module():
    members = Members([3, 4, 5])
    stacked = MultiheadAttention(8, 2, 0.0, RowLayers(members))
    g = torch.Generator().manual_seed(2)
    q, kv = torch.randn(3, 4, 2, 8, generator=g), torch.randn(3, 4, 5, 8, generator=g)
    mask = torch.rand(3, 4, 5, generator=g) < 0.6
    out = stacked(q, kv, kv, mask)
    for k in range(3):
        plain = MultiheadAttention(8, 2, 0.0)
        plain.load_state_dict(member_state_dict(stacked, k))
        # measured: max |difference| 1e-7 (bmm vs mm)
        torch.testing.assert_close(out[k], plain(q[k], kv[k], kv[k], mask[k]), rtol=1e-5, atol=1e-6)
    # torch's initialisation: in-projection Xavier-uniform over (3d, d), zero biases
    bound = (6 / (8 + 24)) ** 0.5
    assert stacked.q.weight.abs().max() <= bound and stacked.q.bias.abs().max() == 0
    assert not torch.equal(stacked.q.weight[0], stacked.q.weight[1])


def test_row_dropout_draws_over_each_members_valid_rows_only():
    x = torch.ones(2, 6, 3, 4)
    rows = StepRows()
    drop = RowDropout(Members([10, 11]), 0.5, rows)
    rows.set(torch.tensor([[True] * 3 + [False] * 3, [True] * 6]))
    out = drop(x)
    assert (out[0, 3:] == 0).all()  # padding: never drawn for, zeroed
    alone_rows = StepRows()
    alone = RowDropout(Members([10]), 0.5, alone_rows)
    alone_rows.set(torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(out[0, :3], alone(torch.ones(1, 3, 3, 4))[0])
    assert set(out.unique().tolist()) <= {0.0, 2.0} and 0.3 < float((out[1] > 0).float().mean()) < 0.7


# ---------------------------------------------------------------------------------------------
# PARACHUTE's step: stacked vs the single-fold GCSStep


def _parachute_batch(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(n, d, generator=g) for m, d in DIMS.items()}
    present = torch.rand(n, len(MODALITIES), generator=g) < 0.6
    present[:, MODALITIES.index("clin")] = True
    targets = Targets(
        label=torch.zeros(n),
        time=torch.randint(1, 6, (n,), generator=g).float(),  # ties on purpose
        event=(torch.rand(n, generator=g) < 0.7).float(),
    )
    return x, present, targets


def _load_member(stacked: torch.nn.Module, k: int, plain: torch.nn.Module) -> None:
    state = plain.state_dict()
    with torch.no_grad():
        for name, p in stacked.named_parameters():
            p[k].copy_(state[name])


def _settings(**kw) -> ParachuteSettings:
    raw = load_config(
        {"parachute": {**dict(d=16, d_int=16, heads=2, dropout=0.0, lr=0.01, weight_decay=0.05), **kw}}
    )
    return ParachuteSettings.from_config(raw["parachute"])


@pytest.fixture
def float64():
    # float64 throughout: the finite-difference curvature divides rounding errors by 2 eps, and with SAM
    # and a strong steering (gamma 50) float32 rounding alone moves the steered gradients by up to 1e-3
    # (relative); in float64 the two implementations agree to 1e-15
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("rho, gamma", [(0.05, 50.0), (0.0, 50.0), (0.05, 0.0)])
def test_stacked_gcs_step_with_one_member_equals_the_single_fold_gcs_step(rho, gamma, float64):
    # dropout 0: the only random draw of the step is the Rademacher probe, drawn from a generator with
    # the same seed in both (GCSStep's own, member 0's), so the two steps see the same probes
    settings = _settings(rho=rho, gamma=gamma)
    cfg = GCSConfig.from_settings(settings)
    torch.manual_seed(0)
    plain = Parachute(DIMS, list(MODALITIES), d=16, d_int=16, heads=2, dropout=0.0)
    x, present, targets = _parachute_batch(12, 5)
    members = Members([42])
    stacked = Parachute(
        DIMS, list(MODALITIES), d=16, d_int=16, heads=2, dropout=0.0, layers=RowLayers(members)
    )
    _load_member(stacked, 0, plain)
    optimizer = torch.optim.AdamW(plain.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    loss_plain = GCSStep(plain, optimizer, cfg, seed=42)(x, present, targets)
    trainer = StackedTrainer(stacked, members, settings.train)
    step = StackedGCSStep(stacked, members, cfg)
    lift = {m: v.unsqueeze(0) for m, v in x.items()}
    valid = torch.ones(1, 12, dtype=torch.bool)
    loss_stacked = step(lift, present.unsqueeze(0), Targets(*(t.unsqueeze(0) for t in vars(targets).values())),
                        valid, torch.ones(1, dtype=torch.bool), trainer)  # fmt: skip
    assert float(loss_stacked[0]) == pytest.approx(loss_plain, rel=1e-6)
    assert next(stacked.parameters()).dtype == torch.float64
    grads = {n: p.grad[0] for n, p in stacked.named_parameters()}
    params = dict(stacked.named_parameters())
    for name, p in plain.named_parameters():
        # measured: max |difference| 8e-16 in the gradients; 3e-11 in the parameters after AdamW (the
        # log-hazard bias, whose Cox gradient is 0 up to rounding, 1e-16, which Adam's first step scales
        # by 1 / (|g| + eps)), 2e-16 elsewhere
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-9, atol=1e-12, msg=name)
        torch.testing.assert_close(params[name][0].detach(), p.detach(), rtol=1e-9, atol=1e-9, msg=name)
    if gamma > 0:  # the steering really acted (a plain gradient step would differ)
        assert step.stats.reset()[0]["damping"] < 0.99


def test_stacked_gcs_member_with_a_padded_batch_equals_it_alone(float64):
    # member 1 has 7 rows padded to 12: its gradients are those of its 7 rows alone (Cox over its rows,
    # probes over its rows, the controller's standardisation over its rows)
    settings = _settings(rho=0.05, gamma=20.0, dropout=0.1)
    cfg = GCSConfig.from_settings(settings)
    seeds = [7, 8, 9]

    def build(member_seeds):
        members = Members(member_seeds)
        layers = RowLayers(members)
        return (
            members,
            layers,
            Parachute(DIMS, list(MODALITIES), d=16, d_int=16, heads=2, dropout=0.1, layers=layers),
        )

    batches = [_parachute_batch(n, s) for n, s in ((12, 1), (7, 2), (10, 3))]
    m3, layers3, model3 = build(seeds)
    m1, layers1, model1 = build(seeds[1:2])
    for p3, p1 in zip(model3.parameters(), model1.parameters(), strict=True):
        assert torch.equal(p3[1], p1[0])  # member 1's initialisation is its own seed's

    def stack(items, width):
        x = {m: torch.stack([torch.cat([b[0][m], b[0][m].new_zeros(width - len(b[0][m]), b[0][m].shape[1])])
                             for b in items]) for m in DIMS}  # fmt: skip
        pad = [width - len(b[1]) for b in items]
        present = torch.stack(
            [torch.cat([b[1], torch.zeros(p, 7, dtype=torch.bool)]) for b, p in zip(items, pad, strict=True)]
        )
        t = [torch.stack([torch.cat([getattr(b[2], f), torch.ones(p)]) for b, p in zip(items, pad, strict=True)])
             for f in ("label", "time", "event")]  # fmt: skip
        valid = torch.stack([torch.arange(width) < len(b[1]) for b in items])
        return x, present, Targets(*t), valid

    results = []
    for members, layers, model, items, width in (
        (m3, layers3, model3, batches, 12),
        (m1, layers1, model1, batches[1:2], 7),
    ):
        trainer = StackedTrainer(model, members, settings.train)
        model.train()
        x, present, targets, valid = stack(items, width)
        layers.rows.set(valid)
        step = StackedGCSStep(model, members, cfg)
        loss = step(x, present, targets, valid, torch.ones(members.k, dtype=torch.bool), trainer)
        results.append((loss, model, step.stats.reset()))
    (l3, model3, s3), (l1, model1, s1) = results
    assert float(l3[1]) == pytest.approx(float(l1[0]), rel=1e-5)
    for (name, p3), (_, p1) in zip(model3.named_parameters(), model1.named_parameters(), strict=True):
        # measured: max |difference| MEASURE in the gradients
        torch.testing.assert_close(p3.grad[1], p1.grad[0], rtol=1e-9, atol=1e-12, msg=name)
        torch.testing.assert_close(p3[1].detach(), p1[0].detach(), rtol=1e-9, atol=1e-9, msg=name)
    assert s3[1] == pytest.approx(s1[0], rel=1e-9)


def test_member_norms_are_sams_global_norm_per_member():
    members = Members([1, 2])
    model = Parachute(DIMS, list(MODALITIES), d=8, d_int=8, heads=2, dropout=0.0, layers=RowLayers(members))
    trainer = StackedTrainer(model, members, _settings().train)
    flat = trainer.flat
    flat.grad.copy_(torch.randn(flat.grad.shape, generator=torch.Generator().manual_seed(0)))
    norms = member_sq_norms(flat, flat.grad).sqrt()
    for k in range(2):
        member = [p.grad[k] for p in model.parameters()]
        e = sam_perturbation(member, 0.05)
        expected = torch.sqrt(sum((x.double() ** 2).sum() for x in member))
        # measured: relative difference 1e-7 (float32 sums in another order)
        torch.testing.assert_close(norms[k].double(), expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(e[0], member[0] * (0.05 / norms[k]), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("decoupled", [False, True])
def test_stacked_adam_kernels_follow_torch_per_member_with_frozen_blocks(fused, decoupled, monkeypatch):
    # both implementations of StackedAdam.step (torch's fused kernel per member, and the block-wise
    # tensor operations it falls back to) against one torch optimiser per member; member 1 never
    # updates the first layer (frozen), members step on different plans and learning rates
    from torch import nn

    from haf.runtime.stacked import FlatParameters, StackedAdam

    monkeypatch.setattr(StackedAdam, "fused", fused)
    torch.manual_seed(0)
    members = Members([1, 2, 3])
    layers = RowLayers(members)
    stacked = nn.Sequential(layers.linear(5, 4), nn.Tanh(), layers.linear(4, 1))
    inputs, targets = torch.randn(3, 16, 5), torch.randn(3, 16)
    flat = FlatParameters(stacked, 3)
    flat.freeze(1, stacked[0])
    opt = StackedAdam(flat, 0.05, 0.1, decoupled=decoupled)
    opt.lr[2] = 0.02
    torch_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    singles = []
    for k in range(3):
        plain = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))
        plain.load_state_dict(member_state_dict(stacked, k))
        trainable = plain[2].parameters() if k == 1 else plain.parameters()
        singles.append((plain, torch_cls(trainable, lr=0.02 if k == 2 else 0.05, weight_decay=0.1)))
    for active in [[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0]] * 4:
        active_t = torch.tensor(active, dtype=torch.bool)
        flat.zero_grad()
        loss = ((stacked(inputs).squeeze(-1) - targets) ** 2).mean(dim=1)
        (loss * active_t).sum().backward()
        opt.step(active_t)
        for k, (plain, o) in enumerate(singles):
            if active[k]:
                o.zero_grad()
                ((plain(inputs[k]).squeeze(-1) - targets[k]) ** 2).mean().backward()
                o.step()
    for k, (plain, _) in enumerate(singles):
        state = member_state_dict(stacked, k)
        for name, value in plain.state_dict().items():
            # measured: max |difference| 1.5e-7 (float32, another order of operations)
            torch.testing.assert_close(state[name], value, rtol=0, atol=2e-6, msg=f"member {k} {name}")
    assert torch.equal(member_state_dict(stacked, 1)["0.weight"], singles[1][0][0].weight.detach())
