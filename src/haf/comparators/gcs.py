"""Gradient Curvature Steering (PARACHUTE paper, supplement section 3, Algorithm 2), built on SAM.

One optimiser step on a minibatch, for a model with ``encode`` (fusion encoder, parameters theta)
and ``hazard`` (hazard net, parameters vartheta):

1. **SAM ascent** (radius ``rho``; skipped when ``rho == 0``): the gradient of the Cox loss w.r.t.
   all parameters at theta, and the perturbation ``e = rho * grad / ||grad||_2`` (one global norm
   over all parameters, as in SAM), added to every parameter.
2. **GCS at the perturbed point** (Algorithm 2, steps 1-4): forward ``f = FUSION(x, m)``,
   ``h = HAZARDNET(f)``, Cox loss; ``g_b = dL/df_b`` (row b of the gradient w.r.t. the fused
   features); per-sample curvature ``c_b`` (Hutchinson, below); gate ``omega_b`` (controller,
   below); steered ``g~_b = (1 - omega_b) g_b + omega_b g_b / (1 + gamma c_b)``; ``g~`` is
   backpropagated through the encoder only (the hazard net gets nothing from it) and the plain Cox
   loss gradient goes to the hazard net only.
3. **Restore** the unperturbed parameters and take the optimiser step (AdamW) with those gradients.

So SAM's ascent decides *where* the gradient is taken and GCS decides *how* the encoder's share of
it is shaped.  With ``rho = 0`` and ``gamma = 0`` the step is exactly a plain gradient step.

Choices where the seed is open (also in ``docs/comparators.md``):

* Curvature (line 11).  As printed, ``(g^T r - g^T(-r)) / (2 eps)`` equals ``g^T r / eps``, a
  directional slope, not a curvature.  We implement the intended finite-difference Hutchinson
  estimate ``c_b = r_b^T (g_b(f + eps R) - g_b(f - eps R)) / (2 eps)``, R the stacked Rademacher
  probes r_b, which approximates ``r_b^T H r`` and has expectation ``tr(H_bb)``, the trace of the
  sample's own Hessian block (cross terms vanish: the probes are independent).  It is exact for
  a quadratic loss.  The two probe gradients are taken with the hazard net in eval mode (no
  dropout), otherwise different dropout masks would dominate the difference.
* Guard: ``c_b`` is clamped at 0 before steering (negative curvature would make ``1 + gamma c``
  small or negative and amplify or flip the gradient); so ``1 + gamma c_b >= 1``.
* Controller (line 12): ``omega_b = sigmoid(z_b + lambda_m * m_b)`` where ``s_b = c_b+ * ||g_b||``
  (a large gradient in a highly curved direction is where a step overshoots), ``z_b`` is ``s_b``
  standardised over the minibatch (0 when all are equal) and ``m_b`` is the fraction of the
  method's modalities the sample is missing, so samples with missing modalities are steered more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from haf.comparators.blocks import presence
from haf.settings import ParachuteSettings


@dataclass(frozen=True)
class GCSConfig:
    """Steering settings (from config section ``parachute``: :meth:`from_settings`)."""

    enabled: bool
    rho: float
    gamma: float
    epsilon: float
    missing_weight: float

    @classmethod
    def from_settings(cls, settings: ParachuteSettings) -> GCSConfig:
        return cls(
            enabled=settings.gcs,
            rho=settings.rho,
            gamma=settings.gamma,
            epsilon=settings.epsilon,
            missing_weight=settings.missing_weight,
        )


@dataclass
class GCSStats:
    """Running means over the steps of an epoch, for the log."""

    steps: int = 0
    curvature: float = 0.0
    omega: float = 0.0
    damping: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    def add(self, c: torch.Tensor, omega: torch.Tensor, gamma: float) -> None:
        factor = (1 - omega) + omega / (1 + gamma * c)
        self.steps += 1
        self.curvature += float(c.mean())
        self.omega += float(omega.mean())
        self.damping += float(factor.mean())

    def reset(self) -> dict[str, float]:
        """Return the means since the last reset and start over."""
        n = max(self.steps, 1)
        out = {"curvature": self.curvature / n, "omega": self.omega / n, "damping": self.damping / n}
        self.history.append(out)
        self.steps, self.curvature, self.omega, self.damping = 0, 0.0, 0.0, 0.0
        return out


def rademacher(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A tensor of independent +-1 entries shaped like ``like`` (drawn on the generator's device)."""
    device = generator.device if generator is not None else torch.device("cpu")
    bits = torch.randint(0, 2, like.shape, generator=generator, device=device)
    return (bits * 2 - 1).to(device=like.device, dtype=like.dtype)


def hutchinson_curvature(
    grad_fn: Callable[[torch.Tensor], torch.Tensor], f: torch.Tensor, r: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """Per-sample ``c_b = r_b^T (g_b(f + eps r) - g_b(f - eps r)) / (2 eps)`` ~ ``r_b^T H r``.

    ``grad_fn(f)`` returns dL/df (..., B, d) at fused features ``f`` (..., B, d); ``r`` (..., B, d) are
    the probes; the result is (..., B) (a leading K: stacked members).
    """
    with torch.no_grad():
        f0 = f.detach()
    g_plus = grad_fn(f0 + epsilon * r)
    g_minus = grad_fn(f0 - epsilon * r)
    return (r * (g_plus - g_minus)).sum(dim=-1) / (2 * epsilon)


def controller(
    curvature: torch.Tensor,
    grad_norm: torch.Tensor,
    missing: torch.Tensor,
    missing_weight: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gate omega_b in (0, 1): sigmoid(standardised c_b+ ||g_b|| + missing_weight * m_b).

    The standardisation runs over the minibatch: every entry (``valid`` None, a (B,) batch), or, for
    stacked members ((K, B) inputs), over the ``valid`` entries of the last dimension only (member k's
    real rows: padding never enters its mean or spread).
    """
    s = curvature.clamp(min=0) * grad_norm
    if valid is None:
        centred = s - s.mean()
        spread = s.std(unbiased=False) if s.numel() > 1 else s.new_zeros(())
    else:
        w = valid.to(s.dtype)
        n = w.sum(dim=-1, keepdim=True)
        s_valid = torch.where(valid, s, torch.zeros_like(s))
        count = n.clamp(min=1)
        centred = s - s_valid.sum(dim=-1, keepdim=True) / count
        var = torch.where(valid, centred * centred, torch.zeros_like(s)).sum(dim=-1, keepdim=True) / count
        spread = torch.where(n > 1, var.sqrt(), torch.zeros_like(var))
    z = torch.where(spread > 0, centred / spread.clamp(min=1e-30), torch.zeros_like(centred))
    return torch.sigmoid(z + missing_weight * missing)


def steer(g: torch.Tensor, curvature: torch.Tensor, omega: torch.Tensor, gamma: float) -> torch.Tensor:
    """``g~_b = (1 - omega_b) g_b + omega_b g_b / (1 + gamma c_b+)`` (c clamped at 0: the guard)."""
    c = curvature.clamp(min=0).unsqueeze(-1)
    w = omega.unsqueeze(-1)
    return (1 - w) * g + w * g / (1 + gamma * c)


def sam_perturbation(grads: list[torch.Tensor | None], rho: float) -> list[torch.Tensor | None]:
    """SAM's ascent step ``rho * grad / ||grad||_2`` (global norm); ``None`` where a parameter has no grad."""
    norms = [g.detach().pow(2).sum() for g in grads if g is not None]
    if not norms:
        return [None] * len(grads)
    total = math.sqrt(float(torch.stack(norms).sum()))
    if total == 0 or rho == 0:
        return [None] * len(grads)
    return [None if g is None else g.detach() * (rho / total) for g in grads]


class GCSStep:
    """The PARACHUTE training step (SAM ascent, GCS-steered encoder gradient, Cox hazard gradient, AdamW).

    ``model`` provides ``encode``, ``hazard``, ``cox_loss``, ``modalities`` and
    ``hazard_parameters()``; the step is called as ``step(x, present, targets) -> loss`` (the Cox
    loss at the unperturbed parameters when SAM is on, else at the step's own point).  One fold, any
    ``nn.Module``: the reference the trainer's stacked step
    (:class:`haf.comparators.stacked_gcs.StackedGCSStep`) is tested against.
    """

    def __init__(self, model, optimizer: torch.optim.Optimizer, cfg: GCSConfig, seed: int = 0) -> None:
        self.model = model
        self.optimizer = optimizer
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(seed)
        self.stats = GCSStats()
        self.params = [p for p in model.parameters() if p.requires_grad]
        hazard_ids = {id(p) for p in model.hazard_parameters()}
        self.hazard_params = [p for p in self.params if id(p) in hazard_ids]

    def _fused_grad_fn(self, targets) -> Callable[[torch.Tensor], torch.Tensor]:
        hazard_net = self.model.hazard_net

        def grad_fn(f: torch.Tensor) -> torch.Tensor:
            was_training = hazard_net.training
            hazard_net.eval()
            try:
                with torch.enable_grad():
                    f = f.detach().requires_grad_(True)
                    loss = self.model.cox_loss(self.model.hazard(f), targets)
                    (g,) = torch.autograd.grad(loss, f, allow_unused=True)
            finally:
                hazard_net.train(was_training)
            return torch.zeros_like(f) if g is None else g

        return grad_fn

    def steered_backward(self, x, present, targets) -> torch.Tensor:
        """Algorithm 2 steps 1-4: fill ``.grad`` of encoder (steered) and hazard net (plain); return the loss."""
        model, cfg = self.model, self.cfg
        f = model.encode(x, present)
        f_leaf = f.detach().requires_grad_(True)
        loss = model.cox_loss(model.hazard(f_leaf), targets)
        grads = torch.autograd.grad(loss, [f_leaf, *self.hazard_params], allow_unused=True)
        g = grads[0] if grads[0] is not None else torch.zeros_like(f_leaf)
        for p, gp in zip(self.hazard_params, grads[1:], strict=True):
            if gp is not None:
                p.grad = gp if p.grad is None else p.grad + gp
        if cfg.enabled:
            r = rademacher(g, self.generator)
            c = hutchinson_curvature(self._fused_grad_fn(targets), f_leaf, r, cfg.epsilon)
            missing = 1 - presence(present, model.modalities).to(g.dtype).mean(dim=1)
            omega = controller(c, g.norm(dim=1), missing, cfg.missing_weight)
            g_steered = steer(g, c, omega, cfg.gamma)
            self.stats.add(c.clamp(min=0).detach(), omega.detach(), cfg.gamma)
        else:
            g_steered = g
        if f.requires_grad:
            f.backward(g_steered)
        return loss.detach()

    def __call__(self, x, present, targets) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        saved: list[torch.Tensor] | None = None
        reported = None
        if self.cfg.rho > 0:
            loss0 = self.model.loss(x, present, targets)
            loss0.backward()
            reported = loss0.detach()
            perturbation = sam_perturbation([p.grad for p in self.params], self.cfg.rho)
            if any(e is not None for e in perturbation):
                saved = [p.detach().clone() for p in self.params]
                with torch.no_grad():
                    for p, e in zip(self.params, perturbation, strict=True):
                        if e is not None:
                            p.add_(e)
            self.optimizer.zero_grad(set_to_none=True)
        loss = self.steered_backward(x, present, targets)
        if saved is not None:  # restore theta exactly (not theta + e - e)
            with torch.no_grad():
                for p, old in zip(self.params, saved, strict=True):
                    p.copy_(old)
        self.optimizer.step()
        return float(loss if reported is None else reported)
