"""CLAM gated-attention MIL (HAF paper, Eq. 1-3), batched over padded bags with a per-bag masked softmax.

The model is CLAM's single-branch network (Lu et al. 2021, ``CLAM_SB``) at HAF's sizes:

* per instance ``h = Dropout(ReLU(H w_l))`` with ``w_l``: ``in_dim -> d1`` (64);
* gated attention (Eq. 1): ``s = w_a^T [tanh(V h) * sigmoid(U h)]`` with ``U, V``: ``d1 -> d2`` (32), dropout
  after both branches as in CLAM's ``Attn_Net_Gated``; ``a = softmax(s)`` over the instances of each bag;
* bag embedding (Eq. 2): ``z = sum_i a_i h_i`` (``d1``-d);
* bag classifier: ``Linear(d1, 1)``, one logit.  CLAM uses two logits with a softmax cross-entropy; for two
  classes that equals a binary cross-entropy on the logit difference, so one logit is the same model with
  one redundant parameter row removed, and ``risk = logit``, ``prob = sigmoid(logit)`` directly.

Loss (Eq. 3, CLAM's ``bag_weight`` mix, binary ``subtyping=False`` branch)::

    L = bag_weight * BCE(logit, y) + (1 - bag_weight) * L_inst

``L_inst``: the instance classifier of the bag's *true* class (``Linear(d1, 1)`` per class, again one logit
for CLAM's two) is trained on the ``k`` most-attended instances as pseudo-positives and the ``k``
least-attended as pseudo-negatives, averaged over those ``2k`` instances.  ``k = min(k_sample, n // 2)``:
clamped so the two sets never overlap and a bag of 3 instances trains with ``k = 1``; a bag of one
instance has ``k = 0`` and contributes no instance loss (its ``L_inst`` is 0).  A batch's loss is the mean
of the per-bag losses, so it equals one-bag-at-a-time CLAM averaged over the batch.

Batched API (used by Stage 1 and by the Stage 3 no-detach trainer)::

    model = GatedAttentionMIL(in_dim, d1=64, d2=32, dropout=0.25)
    out = model(x, mask)        # x (B, N, D) float padded bags, mask (B, N) bool (True = real instance);
                                # or x (M, D) packed real instances (row-major in mask) with the same mask
    out.logit (B,), out.z (B, d1), out.attention (B, N) (0 on padding), out.scores (B, N), out.h (B, N, d1)
    loss = clam_loss(model, out, mask, label, bag_weight=0.7, k_sample=8, valid=None)
    loss.total.backward()       # loss.bag, loss.instance: the two (mean) terms, for logging

Many folds at once (:mod:`haf.runtime.stacked`): ``GatedAttentionMIL(..., layers=Layers(members))`` is
K such models stacked (member k: its own Xavier-normal init from its own generator).  Each member has
its own batch of bags: ``mask`` (K, B, N) and ``x`` packed (M, D), member 0's real instances (row-major
in ``mask[0]``), then member 1's, and so on (or padded (K, B, N, D)); every output gains a leading K and
:func:`clam_loss` returns (K,) losses, each the mean over that member's bags.  Member k's result is
what the single model ``member_state_dict(stacked, k)`` gives on member k's bags alone.

Where the work goes: the first layer ``w_l`` (in_dim -> d1 over every instance) dominates.  It runs on
each member's packed instances (one ``linear`` per member, no padding at all); padding every member's
instances to a common (K, M, D) and one ``bmm`` measured 2x slower on CPU (K = 10, 16 bags of 24-160
1024-d instances per member: 106 ms vs 55 ms per forward and backward), a fully padded (K, B, N, D)
3x slower (162 ms).  The gated attention also runs per member on its real instance rows; only the
per-bag softmax and pooling see the (..., B, N) padding.  Dropout masks are drawn over the real rows
only (member k: ``counts[k]`` rows from its own generator), so the draws never depend on padding or on
the other members.

Padding never influences the result: only rows with ``mask`` True are fed to ``w_l`` (padding values,
even NaN, are never read), padded scores are masked before the softmax and padded attention is 0.  A bag
with no instance (a patient without the modality) gets ``z = 0`` and ``attention = 0``; pass ``valid`` to
leave such bags (or bags without a label) out of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from haf.runtime.stacked import Layers


@dataclass
class MILOutput:
    """One batched forward pass (padded positions: ``attention`` 0, ``h`` 0; stacked: a leading K)."""

    logit: torch.Tensor  # (..., B)
    z: torch.Tensor  # (..., B, d1)
    attention: torch.Tensor  # (..., B, N)
    scores: torch.Tensor  # (..., B, N) pre-softmax attention scores (padding: dtype minimum)
    h: torch.Tensor  # (..., B, N, d1) instance features after w_l, ReLU, dropout


@dataclass
class ClamLoss:
    """Eq. 3 on a batch: ``total`` (backpropagate this), and its mean ``bag`` and ``instance`` terms."""

    total: torch.Tensor
    bag: torch.Tensor
    instance: torch.Tensor


class GatedAttentionMIL(nn.Module):
    """CLAM_SB gated-attention MIL with a batched, masked forward (see the module docstring).

    ``layers``: ``None`` / ``Layers()`` = one model; ``Layers(members)`` = K stacked members.
    """

    def __init__(
        self, in_dim: int, d1: int = 64, d2: int = 32, dropout: float = 0.25, layers: Layers | None = None
    ) -> None:
        super().__init__()
        layers = layers or Layers()
        self.stacked = layers.stacked
        self.hparams: dict[str, Any] = {
            "in_dim": int(in_dim),
            "d1": int(d1),
            "d2": int(d2),
            "dropout": float(dropout),
        }
        # CLAM's initialize_weights: Xavier-normal weights, zero biases (per member when stacked)
        xavier = {"init": "xavier_normal"}
        self.fc = nn.Sequential(layers.linear(in_dim, d1, **xavier), nn.ReLU(), layers.dropout(dropout))
        self.attention_a = nn.Sequential(layers.linear(d1, d2, **xavier), nn.Tanh(), layers.dropout(dropout))
        self.attention_b = nn.Sequential(
            layers.linear(d1, d2, **xavier), nn.Sigmoid(), layers.dropout(dropout)
        )
        self.attention_c = layers.linear(d2, 1, **xavier)
        self.classifier = layers.linear(d1, 1, **xavier)
        # column c = the instance classifier of class c (CLAM: one per class, binary -> two)
        self.instance_classifiers = layers.linear(d1, 2, **xavier)

    @property
    def d1(self) -> int:
        return self.hparams["d1"]

    def _packed(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Any accepted layout -> (packed real instances (M, D), bool mask (..., B, N))."""
        lead = 1 if self.stacked else 0
        shape = "(K, B, N, D)" if self.stacked else "(B, N, D)"
        if mask is None:
            if not self.stacked and x.dim() == 2:  # one bag
                x = x.unsqueeze(0)
            if x.dim() != 3 + lead:
                raise ValueError(
                    f"x must be {shape}, packed (M, D) with a mask"
                    + ("" if self.stacked else ", or (N, D)")
                    + f"; got {tuple(x.shape)}"
                )
            return x.reshape(-1, x.shape[-1]), torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        mask = mask.to(device=x.device, dtype=torch.bool)
        if x.dim() == 3 + lead:
            if mask.shape != x.shape[:-1]:
                raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(x.shape[:-1])}")
            # only real instances go through w_l: padding is never read, whatever its values
            return x[mask], mask
        if x.dim() == 2:
            if mask.dim() != 2 + lead:
                need = "(K, B, N)" if self.stacked else "(B, N)"
                raise ValueError(f"a packed x needs a {need} mask, got shape {tuple(mask.shape)}")
            return x, mask
        raise ValueError(
            f"x must be {shape}, packed (M, D) with a mask"
            + ("" if self.stacked else ", or (N, D)")
            + f"; got {tuple(x.shape)}"
        )

    def _linear(self, layer: nn.Module, rows: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """A linear layer on packed instance rows (M, d_in) -> (M, d_out); stacked: member k's rows
        (``counts[k]`` of them, member after member) with member k's weights, one ``linear`` per member
        (no padding; ``unbind`` so the backward stacks K gradient slices once)."""
        if not self.stacked:
            return layer(rows)
        parts = torch.split(rows, counts)  # fails unless rows has exactly mask.sum() rows
        weights, biases = layer.weight.unbind(0), layer.bias.unbind(0)
        return torch.cat([F.linear(part, w, b) for part, w, b in zip(parts, weights, biases, strict=True)])

    def _dropout(self, module: nn.Module, rows: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Dropout over packed instance rows: member k draws its mask for its ``counts[k]`` rows only, from
        its own generator and only while active (an inactive member's rows are zeroed, as
        ``StackedDropout`` does), so its draws depend neither on padding nor on the other members."""
        if not self.stacked or not module.training or module.p == 0.0:
            return module(rows)
        members = module.members[0]
        active = set(members.active_ids())
        keep = []
        for k, n in enumerate(counts):
            if k in active and n:
                gen = members.generators[k]
                keep.append(torch.rand((n, rows.shape[-1]), generator=gen, device=gen.device).to(rows.device))
            else:
                keep.append(torch.zeros((n, rows.shape[-1]), device=rows.device))  # never kept (p < 1)
        scale = (torch.cat(keep) >= module.p).to(rows.dtype).mul_(1.0 / (1.0 - module.p))
        return rows * scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        """Three layouts of the same bags (all give the same result):

        * padded: ``x`` (B, N, D) with ``mask`` (B, N) bool (None = no padding);
        * packed: ``x`` (M, D) = the real instances in ``mask``'s row-major order (``M = mask.sum()``),
          with ``mask`` (B, N): no padded D-wide tensor is ever built (what the Stage 1 trainer feeds);
        * one bag: ``x`` (N, D) with ``mask`` None.

        Stacked: ``mask`` (K, B, N), ``x`` packed (M, D) member after member, or padded (K, B, N, D).
        Every instance-level layer runs on the packed real rows; only the per-bag softmax and pooling see
        the (..., B, N) padding.
        """
        x, mask = self._packed(x, mask)
        counts = [int(c) for c in mask.flatten(-2).sum(-1).reshape(-1).tolist()] if self.stacked else []
        h_rows = self._dropout(self.fc[2], self.fc[1](self._linear(self.fc[0], x, counts)), counts)
        gate_a = self.attention_a[1](self._linear(self.attention_a[0], h_rows, counts))
        gate_b = self.attention_b[1](self._linear(self.attention_b[0], h_rows, counts))
        gated = self._dropout(self.attention_a[2], gate_a, counts) * self._dropout(
            self.attention_b[2], gate_b, counts
        )
        s_rows = self._linear(self.attention_c, gated, counts).squeeze(-1).float()
        h = h_rows.new_zeros(*mask.shape, h_rows.shape[-1])
        h[mask] = h_rows  # fails if x has not mask.sum() rows
        scores = torch.full(mask.shape, torch.finfo(s_rows.dtype).min, dtype=s_rows.dtype, device=mask.device)
        scores[mask] = s_rows
        attention = torch.softmax(scores, dim=-1) * mask  # an empty bag: uniform * 0 = 0
        with torch.autocast(device_type=h.device.type, enabled=False):  # z in fp32 even under bf16 autocast
            z = torch.einsum("...n,...nd->...d", attention, h.float())
        logit = self.classifier(z).squeeze(-1).float()
        return MILOutput(logit=logit, z=z, attention=attention, scores=scores, h=h)

    @torch.no_grad()
    def attend_one(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One bag ``x`` (N, D), N >= 1, in eval mode: ``(z (d1,), logit (), attention (N,))``.

        :meth:`forward`'s arithmetic for a batch of that one bag (the same kernels and shapes), without
        its batching machinery (masks, scatter into padding): the per-bag final embeddings and the
        attention (float32, sums to 1) that pooled them (Stage 1's ``attention.h5``).
        """
        if self.stacked or self.training:
            raise ValueError("attend_one / embed_one are for a plain model in eval mode")
        h = self.fc[1](self.fc[0](x))
        gated = self.attention_a[1](self.attention_a[0](h)) * self.attention_b[1](self.attention_b[0](h))
        scores = self.attention_c(gated).squeeze(-1).float().unsqueeze(0)
        attention = torch.softmax(scores, dim=-1)
        with torch.autocast(device_type=h.device.type, enabled=False):
            z = torch.einsum("...n,...nd->...d", attention, h.float().unsqueeze(0))
        return z[0], self.classifier(z).squeeze(-1).float()[0], attention[0]

    @torch.no_grad()
    def embed_one(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One bag ``x`` (N, D), N >= 1, in eval mode: ``(z (d1,), logit ())`` (:meth:`attend_one`)."""
        z, logit, _ = self.attend_one(x)
        return z, logit

    def checkpoint(self, **meta: Any) -> dict[str, Any]:
        """What ``model.pt`` holds: the weights, the sizes to rebuild the module, and ``meta``."""
        if self.stacked:
            raise ValueError("a stacked model has no checkpoint: save member_state_dict(model, k) per fold")
        return {"state_dict": self.state_dict(), "hparams": dict(self.hparams), "meta": meta}

    @classmethod
    def from_checkpoint(cls, payload: dict[str, Any] | str, map_location: str | torch.device = "cpu"):
        """Rebuild from :meth:`checkpoint`'s dict or a ``model.pt`` path."""
        if not isinstance(payload, dict):
            from haf.artifacts.stage1_model import read_stage1_model

            payload = read_stage1_model(payload, map_location=map_location)
        model = cls(**payload["hparams"])
        model.load_state_dict(payload["state_dict"])
        return model


def instance_k(n: torch.Tensor, k_sample: int) -> torch.Tensor:
    """Per-bag ``k = min(k_sample, n // 2)``: top-k and bottom-k never overlap; a bag of 3 gets 1."""
    return torch.clamp(n // 2, max=int(k_sample))


def instance_loss(
    model: GatedAttentionMIL, out: MILOutput, mask: torch.Tensor, label: torch.Tensor, k_sample: int
) -> torch.Tensor:
    """Per-bag CLAM instance-clustering loss (B,): 0 for bags with ``k = 0`` (fewer than 2 instances).

    ``label`` must be 0/1 for every bag (replace missing labels before calling; :func:`clam_loss` does).
    Any leading dims (a stacked model's (K, B, N) mask) carry through: the result is (..., B).
    """
    mask = mask.to(torch.bool)
    lead, n = mask.shape[:-1], mask.shape[-1]
    k = instance_k(mask.sum(dim=-1), k_sample)
    k_max = min(int(k_sample), n // 2)  # from the padded shape: no device sync
    if k_max == 0:
        return out.logit.new_zeros(lead) + 0.0 * out.h.sum()
    scores = out.scores.detach()
    lowest = torch.finfo(scores.dtype).min
    top = scores.masked_fill(~mask, lowest).topk(k_max, dim=-1).indices  # sorted: the first k_b are bag b's
    bottom = (-scores).masked_fill(~mask, lowest).topk(k_max, dim=-1).indices
    take = torch.arange(k_max, device=mask.device) < k.unsqueeze(-1)  # (..., B, k_max)
    d1 = out.h.shape[-1]
    # float32: the loss may run outside the forward's bf16 autocast (the instance classifier is fp32)
    weight = model.instance_classifiers.weight
    h_top = out.h.gather(-2, top.unsqueeze(-1).expand(*top.shape, d1)).to(weight.dtype)
    h_bottom = out.h.gather(-2, bottom.unsqueeze(-1).expand(*bottom.shape, d1)).to(weight.dtype)
    cls = label.long().reshape(*lead, 1, 1).expand(*top.shape, 1)
    logit_top = model.instance_classifiers(h_top).float().gather(-1, cls).squeeze(-1)
    logit_bottom = model.instance_classifiers(h_bottom).float().gather(-1, cls).squeeze(-1)
    loss = F.binary_cross_entropy_with_logits(
        logit_top, torch.ones_like(logit_top), reduction="none"
    ) + F.binary_cross_entropy_with_logits(logit_bottom, torch.zeros_like(logit_bottom), reduction="none")
    return (loss * take).sum(dim=-1) / (2 * k).clamp(min=1).to(loss.dtype)


def clam_loss(
    model: GatedAttentionMIL,
    out: MILOutput,
    mask: torch.Tensor,
    label: torch.Tensor,
    *,
    bag_weight: float = 0.7,
    k_sample: int = 8,
    valid: torch.Tensor | None = None,
) -> ClamLoss:
    """Eq. 3 averaged over the batch's valid bags (default: non-empty bags with a finite 0/1 label).

    A batch without a valid bag returns zeros that still carry a graph (``backward`` is a no-op).
    Stacked (mask (K, B, N), label (K, B)): (K,) terms, each the mean over that member's valid bags.
    """
    mask = mask.to(torch.bool)
    lead = mask.shape[:-1]
    label = label.to(device=out.logit.device, dtype=torch.float32).reshape(lead)
    ok = (mask.sum(dim=-1) > 0) & torch.isfinite(label)
    if valid is not None:
        ok = ok & valid.to(device=ok.device, dtype=torch.bool).reshape(lead)
    safe = torch.where(ok, label, torch.zeros_like(label))
    bag = F.binary_cross_entropy_with_logits(out.logit, safe, reduction="none")
    inst = instance_loss(model, out, mask, safe, k_sample)
    weight = ok.to(bag.dtype)
    count = weight.sum(dim=-1).clamp(min=1.0)
    bag_mean = (bag * weight).sum(dim=-1) / count
    inst_mean = (inst * weight).sum(dim=-1) / count
    total = bag_weight * bag_mean + (1.0 - bag_weight) * inst_mean
    return ClamLoss(total=total, bag=bag_mean, instance=inst_mean)
