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


@dataclass
class MILOutput:
    """One batched forward pass (padded positions: ``attention`` 0, ``h`` 0)."""

    logit: torch.Tensor  # (B,)
    z: torch.Tensor  # (B, d1)
    attention: torch.Tensor  # (B, N)
    scores: torch.Tensor  # (B, N) pre-softmax attention scores (padding: dtype minimum)
    h: torch.Tensor  # (B, N, d1) instance features after w_l, ReLU, dropout


@dataclass
class ClamLoss:
    """Eq. 3 on a batch: ``total`` (backpropagate this), and its mean ``bag`` and ``instance`` terms."""

    total: torch.Tensor
    bag: torch.Tensor
    instance: torch.Tensor


def _init_linear(module: nn.Module) -> None:
    # CLAM's initialize_weights: Xavier-normal weights, zero biases
    if isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class GatedAttentionMIL(nn.Module):
    """CLAM_SB gated-attention MIL with a batched, masked forward (see the module docstring)."""

    def __init__(self, in_dim: int, d1: int = 64, d2: int = 32, dropout: float = 0.25) -> None:
        super().__init__()
        self.hparams: dict[str, Any] = {
            "in_dim": int(in_dim),
            "d1": int(d1),
            "d2": int(d2),
            "dropout": float(dropout),
        }
        self.fc = nn.Sequential(nn.Linear(in_dim, d1), nn.ReLU(), nn.Dropout(dropout))
        self.attention_a = nn.Sequential(nn.Linear(d1, d2), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(d1, d2), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(d2, 1)
        self.classifier = nn.Linear(d1, 1)
        # column c = the instance classifier of class c (CLAM: one per class, binary -> two)
        self.instance_classifiers = nn.Linear(d1, 2)
        self.apply(_init_linear)

    @property
    def d1(self) -> int:
        return self.hparams["d1"]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> MILOutput:
        """Three layouts of the same bags (all give the same result):

        * padded: ``x`` (B, N, D) with ``mask`` (B, N) bool (None = no padding);
        * packed: ``x`` (M, D) = the real instances in ``mask``'s row-major order (``M = mask.sum()``),
          with ``mask`` (B, N): no padded D-wide tensor is ever built (what the Stage 1 trainer feeds);
        * one bag: ``x`` (N, D) with ``mask`` None.
        """
        if x.dim() == 2 and mask is None:
            x = x.unsqueeze(0)
        if x.dim() == 3:
            b, n, _ = x.shape
            if mask is None:
                mask = torch.ones(b, n, dtype=torch.bool, device=x.device)
            mask = mask.to(device=x.device, dtype=torch.bool)
            if mask.shape != (b, n):
                raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {(b, n)}")
            # only real instances go through w_l: padding is never read, whatever its values
            h_valid = self.fc(x[mask])
        elif x.dim() == 2:
            mask = mask.to(device=x.device, dtype=torch.bool)
            if mask.dim() != 2:
                raise ValueError(f"a packed x needs a (B, N) mask, got shape {tuple(mask.shape)}")
            b, n = mask.shape
            h_valid = self.fc(x)  # h[mask] = h_valid below fails if x has not mask.sum() rows
        else:
            raise ValueError(
                f"x must be (B, N, D), packed (M, D) with a mask, or (N, D); got {tuple(x.shape)}"
            )
        h = h_valid.new_zeros(b, n, h_valid.shape[-1])
        h[mask] = h_valid
        gated = self.attention_a(h) * self.attention_b(h)
        scores = self.attention_c(gated).squeeze(-1).float()
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        attention = torch.softmax(scores, dim=1) * mask  # an empty bag: uniform * 0 = 0
        with torch.autocast(device_type=h.device.type, enabled=False):  # z in fp32 even under bf16 autocast
            z = torch.einsum("bn,bnd->bd", attention, h.float())
        logit = self.classifier(z).squeeze(-1).float()
        return MILOutput(logit=logit, z=z, attention=attention, scores=scores, h=h)

    def checkpoint(self, **meta: Any) -> dict[str, Any]:
        """What ``model.pt`` holds: the weights, the sizes to rebuild the module, and ``meta``."""
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
    """
    mask = mask.to(torch.bool)
    b, n = mask.shape
    k = instance_k(mask.sum(dim=1), k_sample)
    k_max = min(int(k_sample), n // 2)  # from the padded shape: no device sync
    if k_max == 0:
        return out.logit.new_zeros(b) + 0.0 * out.h.sum()
    scores = out.scores.detach()
    lowest = torch.finfo(scores.dtype).min
    top = scores.masked_fill(~mask, lowest).topk(k_max, dim=1).indices  # sorted: the first k_b are bag b's
    bottom = (-scores).masked_fill(~mask, lowest).topk(k_max, dim=1).indices
    take = torch.arange(k_max, device=mask.device).unsqueeze(0) < k.unsqueeze(1)  # (B, k_max)
    d1 = out.h.shape[-1]
    # float32: the loss may run outside the forward's bf16 autocast (the instance classifier is fp32)
    weight = model.instance_classifiers.weight
    h_top = out.h.gather(1, top.unsqueeze(-1).expand(-1, -1, d1)).to(weight.dtype)
    h_bottom = out.h.gather(1, bottom.unsqueeze(-1).expand(-1, -1, d1)).to(weight.dtype)
    cls = label.long().view(b, 1, 1).expand(-1, k_max, 1)
    logit_top = model.instance_classifiers(h_top).float().gather(2, cls).squeeze(-1)
    logit_bottom = model.instance_classifiers(h_bottom).float().gather(2, cls).squeeze(-1)
    loss = F.binary_cross_entropy_with_logits(
        logit_top, torch.ones_like(logit_top), reduction="none"
    ) + F.binary_cross_entropy_with_logits(logit_bottom, torch.zeros_like(logit_bottom), reduction="none")
    return (loss * take).sum(dim=1) / (2 * k).clamp(min=1).to(loss.dtype)


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
    """
    mask = mask.to(torch.bool)
    label = label.to(device=out.logit.device, dtype=torch.float32).reshape(-1)
    ok = (mask.sum(dim=1) > 0) & torch.isfinite(label)
    if valid is not None:
        ok = ok & valid.to(device=ok.device, dtype=torch.bool).reshape(-1)
    safe = torch.where(ok, label, torch.zeros_like(label))
    bag = F.binary_cross_entropy_with_logits(out.logit, safe, reduction="none")
    inst = instance_loss(model, out, mask, safe, k_sample)
    weight = ok.to(bag.dtype)
    count = weight.sum().clamp(min=1.0)
    bag_mean = (bag * weight).sum() / count
    inst_mean = (inst * weight).sum() / count
    total = bag_weight * bag_mean + (1.0 - bag_weight) * inst_mean
    return ClamLoss(total=total, bag=bag_mean, instance=inst_mean)
