"""PARACHUTE's training step (SAM + Gradient Curvature Steering) for K stacked members at once.

:class:`StackedGCSStep` computes, for every active member k, what :class:`haf.comparators.gcs.GCSStep`
computes for one fold, with the math of :mod:`haf.comparators.gcs` (``hutchinson_curvature``,
``controller``, ``steer``; SAM's ``rho g / ||g||``):

1. SAM ascent: the Cox loss of each member at theta_k, backpropagated at once (members are independent
   parameters, so the summed loss gives each member its own gradient); member k's global gradient
   norm ``||g_k||`` over all of *its* parameters; ``theta_k += rho g_k / ||g_k||`` (no ascent where
   ``||g_k|| = 0``).
2. GCS at the perturbed point: ``f = encode(x, m)`` (K, B, d); the Cox gradient w.r.t. f and the hazard
   net; member k's Rademacher probes drawn from member k's generator over its valid rows only; the
   curvature per sample (hazard net in eval mode for the two probe gradients); the controller's
   standardisation over member k's valid rows only; the steered gradient backpropagated through the
   encoder; the plain Cox gradient to the hazard net.
3. Restore every member's parameters exactly (a copy) and step the active members with AdamW
   (``trainer.step_only``: gradients are already in the flat buffer).

Padded rows never reach a loss (the Cox loss is taken member by member over its valid rows), a probe
draw or the controller's batch statistics; their fused-feature gradient is exactly zero.
"""

from __future__ import annotations

import torch

from haf.comparators.blocks import presence
from haf.comparators.gcs import GCSConfig, controller, hutchinson_curvature, rademacher, steer
from haf.comparators.models import Targets, row_mean
from haf.runtime.stacked import FlatParameters, Members


class StackedGCSStats:
    """Per-member running means over the steps of an epoch (the stacked ``GCSStats``), kept as tensors."""

    def __init__(self, k: int, device: torch.device | str = "cpu") -> None:
        self.k = k
        self.device = device
        self.history: list[list[dict[str, float]]] = [[] for _ in range(k)]
        self._zero()

    def _zero(self) -> None:
        self.steps = torch.zeros(self.k, device=self.device)
        self.sums = torch.zeros(3, self.k, device=self.device)  # curvature, omega, damping

    def add(
        self, c: torch.Tensor, omega: torch.Tensor, gamma: float, valid: torch.Tensor, active: torch.Tensor
    ) -> None:
        """``c`` (K, B) clamped curvature, ``omega`` (K, B); means over each active member's valid rows."""
        factor = (1 - omega) + omega / (1 + gamma * c)
        means = torch.stack([row_mean(v, valid) for v in (c, omega, factor)])
        act = active.to(means.dtype)
        self.steps += act
        self.sums += means * act

    def reset(self, members: list[int] | None = None) -> list[dict[str, float]]:
        """Each member's means since the last reset (appended to the history of ``members``); start over."""
        means = (self.sums / self.steps.clamp(min=1)).cpu().tolist()
        out = [
            {"curvature": means[0][i], "omega": means[1][i], "damping": means[2][i]} for i in range(self.k)
        ]
        for i in range(self.k) if members is None else members:
            self.history[i].append(out[i])
        self._zero()
        return out


def member_sq_norms(flat: FlatParameters, values: torch.Tensor) -> torch.Tensor:
    """(K,) squared L2 norm of each member's slice of a flat buffer (every parameter of the member)."""
    k = flat.k
    total = torch.zeros(k, dtype=values.dtype, device=values.device)
    for o, n in flat.blocks:
        block = values[o : o + k * n].view(k, n)
        total += torch.linalg.vecdot(block, block)
    return total


def add_member_scaled(flat: FlatParameters, values: torch.Tensor, scale: torch.Tensor) -> None:
    """``flat.data += scale[member] * values`` (block by block: no buffer-sized temporary)."""
    k = flat.k
    column = scale.to(flat.data.dtype).unsqueeze(1)
    with torch.no_grad():
        for o, n in flat.blocks:
            flat.data[o : o + k * n].view(k, n).addcmul_(values[o : o + k * n].view(k, n), column)


class StackedGCSStep:
    """SAM ascent + GCS + AdamW for the active members of a stacked :class:`~haf.comparators.parachute.Parachute`.

    ``step(x, present, targets, valid, active, trainer) -> (K,)`` training losses (at the unperturbed
    parameters when SAM is on, as ``GCSStep`` reports them).  Member k's probes come from
    ``members.generators[k]``; nothing a member draws depends on the other members.
    """

    def __init__(self, model, members: Members, cfg: GCSConfig) -> None:
        self.model = model
        self.members = members
        self.cfg = cfg
        self.hazard_params = list(model.hazard_parameters())
        self.stats = StackedGCSStats(members.k, members.device)
        self._saved: torch.Tensor | None = None

    def _member_losses(self, risk: torch.Tensor, targets: Targets, valid: torch.Tensor, active: torch.Tensor):
        losses = self.model.member_cox(risk, targets, valid)
        return losses, torch.where(active, losses, torch.zeros_like(losses)).sum()

    def _fused_grad_fn(self, targets: Targets, valid: torch.Tensor, active: torch.Tensor):
        hazard_net = self.model.hazard_net

        def grad_fn(f: torch.Tensor) -> torch.Tensor:
            was_training = hazard_net.training
            hazard_net.eval()
            try:
                with torch.enable_grad():
                    f = f.detach().requires_grad_(True)
                    _, total = self._member_losses(self.model.hazard(f), targets, valid, active)
                    (g,) = torch.autograd.grad(total, f, allow_unused=True)
            finally:
                hazard_net.train(was_training)
            return torch.zeros_like(f) if g is None else g

        return grad_fn

    def probes(self, like: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Rademacher probes (K, B, d): member k's drawn from its generator for its valid rows, 0 elsewhere."""
        r = torch.zeros_like(like)
        for k in self.members.active_ids():
            rows = valid[k]
            n = int(rows.sum())
            if n:
                r[k, rows] = rademacher(like[k, rows], self.members.generators[k])
        return r

    def steered_backward(
        self, x: dict[str, torch.Tensor], present: torch.Tensor, targets: Targets, valid: torch.Tensor,
        active: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """Algorithm 2 steps 1-4 for every active member: accumulate the steered encoder gradient and the
        plain hazard gradient into the flat buffer; return the (K,) losses."""
        model, cfg = self.model, self.cfg
        f = model.encode(x, present)
        f_leaf = f.detach().requires_grad_(True)
        losses, total = self._member_losses(model.hazard(f_leaf), targets, valid, active)
        grads = torch.autograd.grad(total, [f_leaf, *self.hazard_params], allow_unused=True)
        g = grads[0] if grads[0] is not None else torch.zeros_like(f_leaf)
        with torch.no_grad():
            for p, gp in zip(self.hazard_params, grads[1:], strict=True):
                if gp is not None:
                    p.grad.add_(gp)
        if cfg.enabled:
            r = self.probes(g, valid)
            c = hutchinson_curvature(self._fused_grad_fn(targets, valid, active), f_leaf, r, cfg.epsilon)
            missing = 1 - presence(present, model.modalities).to(g.dtype).mean(dim=-1)
            omega = controller(c, g.norm(dim=-1), missing, cfg.missing_weight, valid)
            g_steered = steer(g, c, omega, cfg.gamma)
            self.stats.add(c.clamp(min=0).detach(), omega.detach(), cfg.gamma, valid, active)
        else:
            g_steered = g
        if f.requires_grad:
            f.backward(g_steered)
        return losses.detach()

    def __call__(
        self, x: dict[str, torch.Tensor], present: torch.Tensor, targets: Targets, valid: torch.Tensor,
        active: torch.Tensor, trainer,
    ) -> torch.Tensor:  # fmt: skip
        flat = trainer.flat
        act = active.to(flat.data.device)
        flat.zero_grad()
        reported = None
        perturbed = False
        if self.cfg.rho > 0:
            _, loss0 = self.model.scores_and_losses(x, present, targets, valid)
            torch.where(act, loss0, torch.zeros_like(loss0)).sum().backward()
            reported = loss0.detach()
            norm = member_sq_norms(flat, flat.grad).sqrt()
            scale = torch.where(
                act & (norm > 0), self.cfg.rho / norm.clamp(min=1e-38), torch.zeros_like(norm)
            )
            if bool((scale > 0).any()):
                if self._saved is None:
                    self._saved = torch.empty_like(flat.data)
                self._saved.copy_(flat.data)
                add_member_scaled(flat, flat.grad, scale)
                perturbed = True
            flat.zero_grad()
        loss = self.steered_backward(x, present, targets, valid, act)
        if perturbed:  # restore theta exactly (not theta + e - e)
            with torch.no_grad():
                flat.data.copy_(self._saved)
        trainer.step_only(active)
        return loss if reported is None else reported
