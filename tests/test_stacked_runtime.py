"""The stacked runtime: its optimiser and schedules equal torch's, its layers equal nn's, members are independent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from haf.runtime.fit import StackedTrainer, fit_stacked
from haf.runtime.stacked import (
    FlatParameters,
    Members,
    StackedAdam,
    StackedCosine,
    StackedDropout,
    StackedLayerNorm,
    StackedLinear,
    StackedPlateau,
    member_state_dict,
    stacked_epoch,
)
from haf.settings import TrainSettings


def _settings(**kw) -> TrainSettings:
    base = dict(
        lr=1e-2, weight_decay=1e-3, max_epochs=30, optimizer="adam", scheduler="plateau",
        lr_patience=3, lr_factor=0.5, eta_min=0.0, t_max=5, es_patience=5,
    )  # fmt: skip
    base.update(kw)
    return TrainSettings(**base)


class _Toy(nn.Module):
    def __init__(self, members: Members, d_in: int = 5) -> None:
        super().__init__()
        self.fc = StackedLinear(members, d_in, 8)
        self.drop = StackedDropout(members, 0.3)
        self.norm = StackedLayerNorm(members, 8)
        self.out = StackedLinear(members, 8, 1)

    def forward(self, x):
        return self.out(self.norm(self.drop(torch.relu(self.fc(x))))).squeeze(-1)


class _Single(nn.Module):
    def __init__(self, d_in: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, 8)
        self.norm = nn.LayerNorm(8)
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        return self.out(self.norm(torch.relu(self.fc(x)))).squeeze(-1)


def test_member_state_loads_into_the_single_module_and_gives_the_same_outputs():
    members = Members([1, 2, 3])
    stacked = _Toy(members).eval()
    x = torch.randn(3, 4, 5)
    out = stacked(x)
    for k in range(3):
        single = _Single()
        single.load_state_dict(member_state_dict(stacked, k), strict=True)
        torch.testing.assert_close(single.eval()(x[k]), out[k], rtol=1e-6, atol=1e-6)


def test_member_init_depends_on_its_seed_only():
    a = _Toy(Members([7, 8, 9]))
    b = _Toy(Members([9]))
    torch.testing.assert_close(a.fc.weight[2], b.fc.weight[0], rtol=0, atol=0)
    torch.testing.assert_close(a.out.bias[2], b.out.bias[0], rtol=0, atol=0)
    assert not torch.equal(a.fc.weight[0], a.fc.weight[1])


def test_padded_input_columns_keep_the_true_fan_in_and_stay_zero():
    members = Members([1, 2])
    layer = StackedLinear(members, 6, 3, in_widths=[6, 4])
    single = nn.Linear(4, 3)
    assert torch.count_nonzero(layer.weight[1, :, 4:]) == 0
    bound = 1 / np.sqrt(4)  # nn.Linear's bias bound for fan-in 4
    assert float(layer.bias[1].abs().max()) <= bound and float(single.bias.abs().max()) <= bound
    assert member_state_dict(layer, 1)["weight"].shape == (3, 4)


@pytest.mark.parametrize("bias", [True, False])
def test_stacked_linear_gradients_are_exact_and_the_weight_gradient_is_contiguous(bias):
    """The hand-written backward against finite differences (gradcheck, float64) and against autograd's
    own backward of the same product; square layers (in = out), so a transposed weight gradient would
    still have the right shape and only the values can catch it."""
    members = Members([3, 4])
    layer = StackedLinear(members, 5, 5, bias=bias).double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    params = (layer.weight, layer.bias) if bias else (layer.weight,)
    # the layer's own parameters are gradcheck's inputs (it perturbs them in place)
    assert torch.autograd.gradcheck(lambda x, *p: layer(x), (x, *params))
    out = layer(x)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, *params), g)
    ref_out = torch.einsum("kbti,koi->kbto", x, layer.weight) + (layer.bias[:, None, None, :] if bias else 0)
    ref = torch.autograd.grad(ref_out, (x, *params), g)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert grads[1].is_contiguous()  # the fast (contiguous) add into the flat gradient buffer


def test_stacked_linear_under_bf16_autocast_returns_gradients_in_each_inputs_dtype():
    """The CUDA path runs under bf16 autocast; CPU autocast exercises the same casts here."""
    layer = StackedLinear(Members([1, 2]), 8, 6)
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    assert layer.weight.grad.dtype == layer.bias.grad.dtype == x.grad.dtype == torch.float32
    ref = layer.weight.detach().clone().requires_grad_(True)
    ref_out = torch.einsum("kbi,koi->kbo", x.detach(), ref) + layer.bias.detach()[:, None, :]
    ref_out.square().sum().backward()
    # bf16 keeps 8 mantissa bits: the largest error was 0.0066 of the largest gradient entry over 20 seeds
    assert float((layer.weight.grad - ref.grad).abs().max() / ref.grad.abs().max()) < 0.02


def test_dropout_masks_of_a_member_do_not_depend_on_the_others_or_on_inactive_steps():
    drop3 = StackedDropout(m3 := Members([5, 6, 7]), 0.5).train()
    drop1 = StackedDropout(Members([7]), 0.5).train()
    x = torch.ones(3, 4, 10)
    m3.set_active([True, False, True])
    first = drop3(x)
    assert torch.count_nonzero(first[1]) == 0  # inactive: no mask drawn, no signal
    m3.set_active([False, True, True])
    second = drop3(x)
    torch.testing.assert_close(first[2], drop1(x[2:])[0])
    torch.testing.assert_close(second[2], drop1(x[2:])[0])


def test_stacked_adam_and_adamw_follow_torch_per_member():
    torch.manual_seed(0)
    targets = torch.randn(3, 16)
    inputs = torch.randn(3, 16, 5)
    for decoupled, torch_cls in ((False, torch.optim.Adam), (True, torch.optim.AdamW)):
        members = Members([1, 2, 3])
        layer = StackedLinear(members, 5, 1)
        singles = []
        for k in range(3):
            lin = nn.Linear(5, 1)
            lin.load_state_dict(member_state_dict(layer, k))
            singles.append((lin, torch_cls(lin.parameters(), lr=0.05, weight_decay=0.1)))
        flat = FlatParameters(layer, 3)
        opt = StackedAdam(flat, 0.05, 0.1, decoupled=decoupled)
        active_plan = [[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0]] * 5
        for active in active_plan:
            active_t = torch.tensor(active, dtype=torch.bool)
            flat.zero_grad()
            loss = ((layer(inputs).squeeze(-1) - targets) ** 2).mean(dim=1)
            (loss * active_t).sum().backward()
            opt.step(active_t)
            for k, (lin, o) in enumerate(singles):
                if active[k]:
                    o.zero_grad()
                    ((lin(inputs[k]).squeeze(-1) - targets[k]) ** 2).mean().backward()
                    o.step()
        for k, (lin, _) in enumerate(singles):
            # measured difference 1e-8; float32 rounding of the two orders of operations
            torch.testing.assert_close(layer.weight[k], lin.weight, rtol=0, atol=2e-6)


def test_plateau_and_cosine_schedules_equal_torchs():
    rng = np.random.default_rng(3)
    losses = rng.random((60, 2)).cumsum(axis=0) * 0 + rng.random((60, 2))
    members = Members([1, 2])
    layer = StackedLinear(members, 2, 1)
    opt = StackedAdam(FlatParameters(layer, 2), 0.1, 0.0)
    plateau = StackedPlateau(opt, factor=0.5, patience=2)
    refs = []
    for _ in range(2):
        p = nn.Parameter(torch.zeros(1))
        o = torch.optim.SGD([p], lr=0.1)
        refs.append((o, torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="min", factor=0.5, patience=2)))
    for row in losses:
        plateau.step(row, np.array([True, True]))
        for k, (o, s) in enumerate(refs):
            s.step(row[k])
            assert float(opt.lr[k]) == pytest.approx(o.param_groups[0]["lr"], rel=1e-12)
    opt2 = StackedAdam(FlatParameters(StackedLinear(Members([1]), 2, 1), 1), 0.005, 0.0)
    cosine = StackedCosine(opt2, t_max=7, eta_min=9e-5)
    p = nn.Parameter(torch.zeros(1))
    o = torch.optim.SGD([p], lr=0.005)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=9e-5)
    for _ in range(50):  # several periods: torch's schedule comes back up after t_max
        cosine.step(np.zeros(1), np.array([True]))
        ref.step()
        assert float(opt2.lr[0]) == pytest.approx(o.param_groups[0]["lr"], rel=1e-9, abs=1e-12)


class _Task:
    """Noisy linear regression per member; validation = -MSE on held-out rows of that member."""

    def __init__(self, seeds, n=40):
        self.members = Members(seeds)
        self.model = _Toy(self.members)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(len(seeds), n, 5, generator=g)
        w = torch.randn(len(seeds), 5, generator=g)
        self.y = (self.x * w.unsqueeze(1)).sum(-1) + 0.3 * torch.randn(len(seeds), n, generator=g)
        self.train_rows = [np.arange(0, 30) for _ in seeds]
        self.val_counts = [n - 30 for _ in seeds]  # validate() scores rows 30: of each member

    def train_epoch(self, epoch, running, trainer):
        total = np.zeros(self.members.k)
        count = np.zeros(self.members.k)
        for batch in stacked_epoch(self.members, self.train_rows, 8, running):
            self.members.set_active(batch.active)
            xb = torch.gather(self.x, 1, batch.rows.unsqueeze(-1).expand(-1, -1, 5))
            yb = torch.gather(self.y, 1, batch.rows)
            err = ((self.model(xb) - yb) ** 2) * batch.valid
            loss = err.sum(1) / batch.valid.sum(1).clamp(min=1)
            trainer.backward_step(loss, batch.active)
            total += loss.detach().numpy() * batch.active.numpy()
            count += batch.active.numpy()
        return total / np.maximum(count, 1)

    def validate(self, running):
        err = ((self.model(self.x[:, 30:]) - self.y[:, 30:]) ** 2).mean(1).numpy()
        return -err, err


def test_a_member_trained_with_others_equals_it_trained_alone():
    settings = _settings(max_epochs=25, es_patience=4)
    together = _Task([11, 12, 13])
    hist_together = fit_stacked(together, settings, names=["a", "b", "c"])
    alone = _Task([12])
    alone.x, alone.y = together.x[1:2].clone(), together.y[1:2].clone()
    hist_alone = fit_stacked(alone, settings, names=["b"])
    pd.testing.assert_frame_equal(hist_together[1], hist_alone[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(together.model.fc.weight[1], alone.model.fc.weight[0], rtol=1e-5, atol=1e-6)
    # the members stopped at their own epochs and restored their own best states
    assert all(h["best"].sum() == 1 for h in hist_together)


def test_a_task_without_one_validation_count_per_member_is_an_error():
    task = _Task([1, 2])
    task.val_counts = [10]
    with pytest.raises(ValueError, match="val_counts has 1 entries for 2 members"):
        fit_stacked(task, _settings(max_epochs=1), names=["a", "b"])
    del task.val_counts
    with pytest.raises(AttributeError, match="val_counts"):
        fit_stacked(task, _settings(max_epochs=1), names=["a", "b"])


def test_trainer_rejects_unknown_optimiser():
    with pytest.raises(ValueError, match="optimizer"):
        StackedTrainer(_Toy(Members([1])), Members([1]), _settings(optimizer="sgd"))


def test_blind_early_stopping_is_an_error_naming_the_member():
    from haf.errors import HafInputError

    task = _Task([1, 2])
    real = task.validate

    def validate(running):
        score, loss = real(running)
        score[1], loss[1] = np.nan, np.nan  # member 1's validation part has no usable patient
        return score, loss

    task.validate = validate
    with pytest.raises(HafInputError, match=r"fold 7: the validation part has no patient"):
        fit_stacked(task, _settings(max_epochs=3), names=["fold 3", "fold 7"])


def test_stacked_adam_leaves_frozen_blocks_and_inactive_members_untouched():
    members = Members([1, 2])
    model = nn.Sequential(StackedLinear(members, 3, 4), StackedLinear(members, 4, 1))
    flat = FlatParameters(model, 2)
    flat.freeze(1, model[0])
    opt = StackedAdam(flat, 0.1, 0.01)
    before = [p.detach().clone() for p in model.parameters()]
    flat.grad.normal_(generator=torch.Generator().manual_seed(0))
    opt.step(torch.tensor([True, True]))
    after = [p.detach().clone() for p in model.parameters()]
    for b, a in zip(before[:2], after[:2], strict=True):  # layer 0: member 0 moves, member 1 is frozen
        assert not torch.equal(b[0], a[0]) and torch.equal(b[1], a[1])
    for b, a in zip(before[2:], after[2:], strict=True):  # layer 1: both move
        assert not torch.equal(b[0], a[0]) and not torch.equal(b[1], a[1])
    assert float(opt.m[flat.member_of == 1].abs().sum()) > 0 and opt.t.tolist() == [1.0, 1.0]
    opt.step(torch.tensor([False, True]))  # member 0 inactive: parameters, moments, step count kept
    for a, p in zip(after, model.parameters(), strict=True):
        assert torch.equal(a[0], p[0])
    assert opt.t.tolist() == [1.0, 2.0]
