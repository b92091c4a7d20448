"""Gradient Curvature Steering and its SAM step on problems whose answer is known."""

from __future__ import annotations

import copy

import pytest
import torch

from haf.comparators.gcs import (
    GCSConfig,
    GCSStep,
    controller,
    hutchinson_curvature,
    rademacher,
    sam_perturbation,
    steer,
)
from haf.comparators.models import Targets
from haf.comparators.parachute import Parachute
from haf.modalities import MODALITIES

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _spd(d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    eig = torch.rand(d, generator=g, dtype=torch.float64) * scale + 0.1
    return q @ torch.diag(eig) @ q.T


def _quadratic_grad(a: list[torch.Tensor]):
    """L = sum_b 0.5 f_b^T A_b f_b: dL/df_b = A_b f_b, Hessian block-diagonal with blocks A_b."""

    def grad_fn(f: torch.Tensor) -> torch.Tensor:
        return torch.stack([a_b @ f_b for a_b, f_b in zip(a, f, strict=True)])

    return grad_fn


def test_hutchinson_is_exact_on_a_quadratic_and_its_mean_is_the_trace():
    d = 6
    a = [_spd(d, 0), _spd(d, 1, scale=10.0)]
    f = torch.randn(2, d, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    draws = []
    for _ in range(4000):
        r = rademacher(f, gen)
        c = hutchinson_curvature(_quadratic_grad(a), f, r, epsilon=0.1)
        expected = torch.stack([r[b] @ a[b] @ r[b] for b in range(2)])
        torch.testing.assert_close(c, expected)  # finite differences are exact for a quadratic
        draws.append(c)
    mean = torch.stack(draws).mean(dim=0)
    trace = torch.stack([torch.trace(a_b) for a_b in a])
    torch.testing.assert_close(mean, trace, rtol=0.05, atol=0.0)
    # the line-11 formula as printed, (g.r - g.(-r)) / (2 eps), is g.r / eps: a slope that flips sign
    # with r and has mean ~0, not a curvature; ours is positive for a positive-definite Hessian
    assert (torch.stack(draws) > 0).all()


def test_hutchinson_with_coupled_samples_estimates_the_own_block_trace():
    # a Hessian with off-diagonal blocks (samples coupled, as in a Cox risk set)
    d, b = 3, 2
    h = _spd(d * b, 3, scale=4.0)

    def grad_fn(f):
        return (h @ f.reshape(-1)).reshape(b, d)

    gen = torch.Generator().manual_seed(1)
    f = torch.randn(b, d, dtype=torch.float64)
    mean = torch.stack(
        [hutchinson_curvature(grad_fn, f, rademacher(f, gen), 0.01) for _ in range(6000)]
    ).mean(0)
    own = torch.stack([torch.trace(h[i * d : (i + 1) * d, i * d : (i + 1) * d]) for i in range(b)])
    torch.testing.assert_close(mean, own, rtol=0.06, atol=0.05)


def test_controller_range_and_missing_modality_bonus():
    c = torch.tensor([0.1, 0.1, 5.0, -1.0])
    gnorm = torch.tensor([1.0, 1.0, 1.0, 1.0])
    missing = torch.tensor([0.0, 0.5, 0.0, 0.0])
    omega = controller(c, gnorm, missing, missing_weight=2.0)
    # by hand: s = max(c, 0) * ||g|| = (0.1, 0.1, 5, 0), standardised with the population SD
    s = torch.tensor([0.1, 0.1, 5.0, 0.0])
    z = (s - s.mean()) / s.std(unbiased=False)
    torch.testing.assert_close(omega, torch.sigmoid(z + 2.0 * missing))
    assert omega[1] > omega[0]  # same curvature, missing modalities: steered more
    assert omega[2] > omega[0]  # higher curvature: steered more
    # all samples alike: no standardised signal, only the missing-modality term
    flat = controller(torch.ones(3), torch.ones(3), torch.tensor([0.0, 0.0, 1.0]), 1.0)
    torch.testing.assert_close(flat, torch.sigmoid(torch.tensor([0.0, 0.0, 1.0])))


def test_steer_damps_high_curvature_and_guards_negative_curvature():
    g = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    c = torch.tensor([10.0, 0.1, -5.0])
    omega = torch.tensor([0.8, 0.8, 0.8])
    out = steer(g, c, omega, gamma=1.0)
    ratio = out.norm(dim=1) / g.norm(dim=1)
    assert ratio[0] < ratio[1] < 1.0
    torch.testing.assert_close(out[0], g[0] * (0.2 + 0.8 / 11.0))
    torch.testing.assert_close(out[2], g[2])  # negative curvature clamped to 0: no amplification
    torch.testing.assert_close(steer(g, c, torch.zeros(3), 1.0), g)  # omega = 0: plain gradient


def test_steered_descent_converges_where_plain_descent_diverges():
    # two samples on L = sum_b 0.5 f_b^T A_b f_b: A_0 sharp (eigenvalues 10), A_1 flat (0.5)
    d = 4
    a = [10.0 * torch.eye(d, dtype=torch.float64), 0.5 * torch.eye(d, dtype=torch.float64)]
    grad_fn = _quadratic_grad(a)
    lr = 0.25  # lr * 10 = 2.5 > 2: plain gradient descent diverges on the sharp sample
    f_plain = torch.ones(2, d, dtype=torch.float64)
    f_gcs = f_plain.clone()
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        f_plain = f_plain - lr * grad_fn(f_plain)
        g = grad_fn(f_gcs)
        c = hutchinson_curvature(grad_fn, f_gcs, rademacher(f_gcs, gen), 0.01)
        omega = controller(c, g.norm(dim=1), torch.zeros(2), 0.0)
        f_gcs = f_gcs - lr * steer(g, c, omega, gamma=1.0)
    assert f_plain[0].norm() > 1e6  # diverged along the high-curvature sample
    assert f_gcs[0].norm() < 1e-3  # steered: damped enough to converge
    assert f_gcs[1].norm() < f_plain.new_tensor(1.0)  # the flat sample still descends


def test_sam_perturbation_has_norm_rho_along_the_gradient():
    grads = [torch.tensor([3.0, 0.0]), None, torch.tensor([[0.0, 4.0]])]
    eps = sam_perturbation(grads, rho=0.05)
    assert eps[1] is None
    flat = torch.cat([eps[0].reshape(-1), eps[2].reshape(-1)])
    gflat = torch.cat([grads[0].reshape(-1), grads[2].reshape(-1)])
    assert flat.norm().item() == pytest.approx(0.05)
    torch.testing.assert_close(flat, gflat / gflat.norm() * 0.05)
    assert all(e is None for e in sam_perturbation([torch.zeros(2)], 0.05))


DIMS = {"wsi": 5, "tma": 5, "cell": 3, "clin": 4, "path": 3, "blood": 2, "icd": 3}


def _toy():
    torch.manual_seed(0)
    model = Parachute(DIMS, list(MODALITIES), d=8, d_int=8, heads=2, dropout=0.0, ties="breslow")
    g = torch.Generator().manual_seed(2)
    n = 12
    x = {m: torch.randn(n, d, generator=g) for m, d in DIMS.items()}
    present = torch.rand(n, len(MODALITIES), generator=g) < 0.7
    present[:, MODALITIES.index("clin")] = True
    targets = Targets(
        label=torch.zeros(n),
        time=torch.randint(1, 6, (n,), generator=g).float(),  # ties on purpose
        event=(torch.rand(n, generator=g) < 0.7).float(),
    )
    return model, x, present, targets


def _sgd_step(model, cfg, x, present, targets, lr=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    step = GCSStep(model, opt, cfg, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    loss = step(x, present, targets)
    return [(p.detach() - b) for p, b in zip(model.parameters(), before, strict=True)], loss, step


def _plain_grads(model, x, present, targets):
    model.zero_grad(set_to_none=True)
    model.loss(x, present, targets).backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


def test_gcs_step_without_steering_or_sam_is_a_plain_gradient_step():
    model, x, present, targets = _toy()
    reference = _plain_grads(copy.deepcopy(model), x, present, targets)
    delta, _, _ = _sgd_step(
        model,
        GCSConfig(enabled=True, rho=0.0, gamma=0.0, epsilon=0.01, missing_weight=1.0),
        x,
        present,
        targets,
    )
    for d, g in zip(delta, reference, strict=True):
        torch.testing.assert_close(d, -0.1 * g, rtol=1e-5, atol=1e-7)


def test_gcs_step_with_sam_uses_the_gradient_at_the_perturbed_point():
    model, x, present, targets = _toy()
    rho = 0.05
    probe = copy.deepcopy(model)
    g0 = _plain_grads(probe, x, present, targets)
    eps = sam_perturbation(g0, rho)
    with torch.no_grad():
        for p, e in zip(probe.parameters(), eps, strict=True):
            if e is not None:
                p.add_(e)
    g_sam = _plain_grads(probe, x, present, targets)
    with torch.no_grad():
        loss_before = float(model.loss(x, present, targets))
    delta, loss, _ = _sgd_step(
        model,
        GCSConfig(enabled=False, rho=rho, gamma=0.0, epsilon=0.01, missing_weight=1.0),
        x,
        present,
        targets,
    )
    for d, g in zip(delta, g_sam, strict=True):
        torch.testing.assert_close(d, -0.1 * g, rtol=1e-4, atol=1e-7)
    # the reported loss is the one at the unperturbed parameters
    assert loss == pytest.approx(loss_before, rel=1e-6)


def test_parameters_are_restored_exactly_after_the_sam_ascent():
    model, x, present, targets = _toy()
    before = [p.detach().clone() for p in model.parameters()]
    delta, _, _ = _sgd_step(
        model,
        GCSConfig(enabled=True, rho=0.5, gamma=1.0, epsilon=0.01, missing_weight=1.0),
        x,
        present,
        targets,
        lr=0.0,
    )
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b)


def test_steering_shrinks_the_encoder_update_and_leaves_the_hazard_update_alone():
    model, x, present, targets = _toy()
    hazard_ids = {id(p) for p in model.hazard_parameters()}
    is_hazard = [id(p) in hazard_ids for p in model.parameters()]
    plain, _, _ = _sgd_step(
        copy.deepcopy(model),
        GCSConfig(enabled=True, rho=0.0, gamma=0.0, epsilon=0.01, missing_weight=1.0),
        x,
        present,
        targets,
    )
    steered, _, step = _sgd_step(
        copy.deepcopy(model),
        GCSConfig(enabled=True, rho=0.0, gamma=1e4, epsilon=0.01, missing_weight=1.0),
        x,
        present,
        targets,
    )
    enc_plain = torch.sqrt(sum((d**2).sum() for d, h in zip(plain, is_hazard, strict=True) if not h))
    enc_steered = torch.sqrt(sum((d**2).sum() for d, h in zip(steered, is_hazard, strict=True) if not h))
    assert 0 < enc_steered < 0.9 * enc_plain
    for a, b, h in zip(plain, steered, is_hazard, strict=True):
        if h:
            torch.testing.assert_close(a, b)
    stats = step.stats.reset()
    assert stats["curvature"] > 0 and 0 < stats["omega"] < 1 and stats["damping"] < 1


def test_controller_standardises_over_each_members_valid_rows_only():
    # (K = 2, B = 5): member 0 has 3 real rows, member 1 all 5; padded entries hold junk that must not
    # enter member 0's mean or spread, and each member's gates equal the controller on its rows alone
    g = torch.Generator().manual_seed(4)
    c = torch.rand(2, 5, generator=g, dtype=torch.float64) * 3
    gnorm = torch.rand(2, 5, generator=g, dtype=torch.float64) + 0.5
    missing = torch.rand(2, 5, generator=g, dtype=torch.float64)
    valid = torch.tensor([[True, True, True, False, False], [True] * 5])
    c[0, 3:] = 1e6
    omega = controller(c, gnorm, missing, 1.5, valid)
    torch.testing.assert_close(omega[0, :3], controller(c[0, :3], gnorm[0, :3], missing[0, :3], 1.5))
    torch.testing.assert_close(omega[1], controller(c[1], gnorm[1], missing[1], 1.5))
    # by hand for member 0: population SD over its 3 rows
    s = c[0, :3] * gnorm[0, :3]
    z = (s - s.mean()) / s.std(unbiased=False)
    torch.testing.assert_close(omega[0, :3], torch.sigmoid(z + 1.5 * missing[0, :3]))
    # one valid row: nothing to standardise against; no valid row: finite
    one = controller(c, gnorm, missing, 1.0, torch.tensor([[True] + [False] * 4, [False] * 5]))
    torch.testing.assert_close(one[0, 0], torch.sigmoid(missing[0, 0]))
    assert torch.isfinite(one).all()


def test_curvature_and_steering_take_leading_member_dimensions():
    a = [_spd(4, 5), _spd(4, 6, scale=5.0)]
    f = torch.randn(2, 3, 4, dtype=torch.float64)  # (K, B, d)
    r = rademacher(f, torch.Generator().manual_seed(0))

    def grad_fn(x):  # member k: sample b of L_k = 0.5 f^T A_k f
        return torch.stack([x[k] @ a[k] for k in range(2)])

    c = hutchinson_curvature(grad_fn, f, r, 0.1)
    for k in range(2):
        torch.testing.assert_close(c[k], torch.einsum("bi,ij,bj->b", r[k], a[k], r[k]))
    g = torch.randn(2, 3, 4, dtype=torch.float64)
    omega = torch.rand(2, 3, dtype=torch.float64)
    out = steer(g, c, omega, 0.7)
    torch.testing.assert_close(out[1], steer(g[1], c[1], omega[1], 0.7))
