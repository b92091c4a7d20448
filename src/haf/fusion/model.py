"""Stage 3: the fusion model (Eq. 8-9), random-modality subsets and the fusion loss (Eq. 10-11).

The fused representation is the concatenation of the method's modality slots, each the slot's
unit projection or zeros when the slot is absent, followed by the presence mask itself; a shared
MLP maps it to one logit (binary methods) or one log hazard (Cox methods).  Because an absent
slot contributes exactly zeros and its mask bit, the values of a masked modality cannot reach
the output (``haf.runtime`` zeroes them too, before the model sees them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from haf.alignment.projectors import ProjectorBank
from haf.losses import binary_loss, cox_partial_likelihood
from haf.runtime.stacked import Layers, Members, masked_mean


class FusionHead(nn.Module):
    """Shared fusion MLP: concat(M slots x d, mask M) -> hidden -> ReLU -> dropout -> 1."""

    def __init__(
        self, n_slots: int, d: int, hidden: int, dropout: float, layers: Layers | None = None
    ) -> None:
        super().__init__()
        layers = layers or Layers()
        self.net = nn.Sequential(
            layers.linear(n_slots * d + n_slots, hidden),
            nn.ReLU(),
            layers.dropout(dropout),
            layers.linear(hidden, 1),
        )

    def forward(self, u: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``u``: (..., B, M, d) (absent slots are re-zeroed here); ``mask``: (..., B, M) -> (..., B) scores."""
        m = mask.to(u.dtype)
        h = torch.cat([(u * m.unsqueeze(-1)).flatten(-2), m], dim=-1)
        return self.net(h).squeeze(-1)


class FusionModel(nn.Module):
    """Projectors of the method's modalities + the fusion head; ``forward(x, present7) -> (B,)``."""

    def __init__(
        self,
        projectors: ProjectorBank,
        hidden: int,
        dropout: float,
        slot_index: list[int],
        layers: Layers | None = None,
    ) -> None:
        super().__init__()
        self.projectors = projectors
        self.slot_index = list(slot_index)  # positions of this method's modalities in the 7-slot mask
        self.head = FusionHead(len(projectors.modalities), projectors.d_out, hidden, dropout, layers)

    def slots(self, present7: torch.Tensor) -> torch.Tensor:
        """The method's columns of a 7-slot presence mask."""
        return present7[..., self.slot_index].bool()

    def embed(self, x: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        return self.projectors(x, mask)

    def forward(self, x: dict[str, torch.Tensor], present7: torch.Tensor) -> torch.Tensor:
        mask = self.slots(present7)
        return self.head(self.embed(x, mask), mask)


def draw_reduced(
    present: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patient, a reduced set drawn uniformly among the non-empty proper subsets of its observed slots.

    Vectorised: a patient with k observed slots draws an integer r uniform in [1, 2^k - 2]; bit j of
    r keeps its j-th observed slot.  r >= 1 keeps at least one slot and r <= 2^k - 2 drops at least one,
    and every such subset has probability 1 / (2^k - 2) (SimMLM's scheme; MoFe pairs are strictly
    nested).  Returns ``(reduced (B, M) bool, has_reduced (B,) bool)``; a patient with fewer than two
    observed slots has no reduced set (``has_reduced`` False, ``reduced`` = its observed set).
    """
    present = present.bool()
    k = present.sum(dim=1)
    has = k >= 2
    n_subsets = (torch.ones_like(k) << k) - 2  # 2^k - 2
    draw = torch.rand(present.shape[0], generator=generator, device=present.device)
    r = (draw * n_subsets.clamp(min=1).to(draw.dtype)).long().clamp(max=(n_subsets - 1).clamp(min=0)) + 1
    rank = (torch.cumsum(present.long(), dim=1) - 1).clamp(min=0)
    keep = ((r.unsqueeze(1) >> rank) & 1).bool()
    reduced = torch.where(has.unsqueeze(1), present & keep, present)
    return reduced, has


def draw_reduced_authors(
    present: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The HAF authors' code's reduced set: a number of slots n uniform in [1, M - 1], then n of the M
    slots uniformly (absent ones included) are dropped. The reduced set may equal the observed set (only
    absent slots dropped) or be empty; every patient with an observed slot gets one (``has``).

    Reached with ``stage3.reduced_draw: authors`` (``config/presets/haf_authors_code.yaml``).
    """
    present = present.bool()
    b, m = present.shape
    n_drop = (torch.rand(b, generator=generator, device=present.device) * (m - 1)).long().clamp(max=m - 2) + 1
    noise = torch.rand(b, m, generator=generator, device=present.device)
    rank = noise.argsort(dim=1).argsort(dim=1)  # a uniform random permutation's rank of each slot
    dropped = rank < n_drop.unsqueeze(1)
    return present & ~dropped, present.any(dim=1)


REDUCED_DRAWS = {"subsets": draw_reduced, "authors": draw_reduced_authors}
"""``stage3.reduced_draw``: how MoFe's reduced modality set is drawn."""


def task_loss(
    score: torch.Tensor, target: dict[str, torch.Tensor], kind: str, reduction: str = "mean"
) -> torch.Tensor:
    """``bce``: binary cross-entropy on logits (per patient with ``reduction='none'``); ``cox``: Breslow."""
    if kind == "bce":
        return binary_loss(score, target["label"], reduction=reduction)
    if kind == "cox":
        return cox_partial_likelihood(score, target["time"], target["event"], ties="breslow")
    raise ValueError(f"task_loss must be bce or cox, got {kind!r}")


def fusion_loss(
    head: FusionHead,
    u: torch.Tensor,
    mask: torch.Tensor,
    target: dict[str, torch.Tensor],
    *,
    kind: str,
    drop: bool,
    lambda_mofe: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L_fusion (Eq. 11) with MoFe (Eq. 10), or the plain task loss without random-modality training.

    With ``drop``: L = l(y+, y) + l(y-, y) + lambda_MoFe * MoFe, where y+ uses every observed slot
    and y- a reduced set.  l(y+) averages over the batch; l(y-) and MoFe over the patients that
    have a reduced set (two or more observed slots).  MoFe for ``bce`` is the mean over those
    patients of max(l_i(y+) - l_i(y-), 0); for ``cox``, whose loss is defined on a set of patients,
    it is max(l(y+) - l(y-), 0) with both partial likelihoods taken over those patients.
    """
    full = head(u, mask)
    if not drop:
        loss = task_loss(full, target, kind)
        return loss, {"task": float(loss.detach())}
    reduced, has = draw_reduced(mask, generator)
    if not bool(has.any()):
        loss = task_loss(full, target, kind)
        return loss, {"task": float(loss.detach()), "reduced": 0.0, "mofe": 0.0}
    rows = torch.nonzero(has, as_tuple=False).reshape(-1)
    part = head(u[rows], reduced[rows])
    sub = {key: value[rows] for key, value in target.items()}
    if kind == "bce":
        l_full_each = task_loss(full, target, kind, reduction="none")
        l_full = l_full_each.mean()
        l_red_each = task_loss(part, sub, kind, reduction="none")
        l_red = l_red_each.mean()
        mofe = torch.clamp(l_full_each[rows] - l_red_each, min=0).mean()
    else:
        l_full = task_loss(full, target, kind)
        l_red = task_loss(part, sub, kind)
        mofe = torch.clamp(task_loss(full[rows], sub, kind) - l_red, min=0)
    loss = l_full + l_red + lambda_mofe * mofe
    return loss, {
        "task": float(l_full.detach()),
        "reduced": float(l_red.detach()),
        "mofe": float(mofe.detach()),
    }


def model_spec(model: FusionModel) -> dict[str, Any]:
    """What is needed to rebuild the model for prediction (saved in ``model.pt``)."""
    first = model.head.net[0]
    return {
        "projectors": model.projectors.spec(),
        "hidden": int(first.out_features),
        "dropout": float(model.head.net[2].p),
        "slot_index": list(model.slot_index),
    }


def build_model(spec: dict[str, Any]) -> FusionModel:
    return FusionModel(
        ProjectorBank.from_spec(spec["projectors"]), spec["hidden"], spec["dropout"], spec["slot_index"]
    )


def _member_rows(valid: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nonzero(valid[k]).reshape(-1)


def stacked_fusion_loss(
    head: FusionHead,
    u: torch.Tensor,
    mask: torch.Tensor,
    target: dict[str, torch.Tensor],
    valid: torch.Tensor,
    *,
    kind: str,
    drop: bool,
    lambda_mofe: float,
    members: Members,
    reduced_draw: str,
) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """:func:`fusion_loss` of every active member at once: ``u`` (K, B, M, d), ``mask`` (K, B, M),
    targets (K, B), ``valid`` (K, B) the member's real rows.  Returns (K,) losses and (K,) parts.

    Member k's reduced sets are drawn from member k's generator over its valid rows only, exactly the
    draws it would make trained alone; every mean runs over the member's own rows.
    """
    k_members = u.shape[0]
    full = head(u, mask)  # (K, B)
    active = members.active_ids()
    zero = full.sum(dim=1) * 0.0
    parts = {"task": np.zeros(k_members)}
    if kind == "bce":  # a padded row's label (NaN when it points at an unlabelled patient) must not
        # reach the loss: masked out of the mean it would still turn the gradient into NaN
        target = dict(target, label=torch.where(valid, target["label"], torch.zeros_like(target["label"])))

    def member_task(score: torch.Tensor, k: int, rows: torch.Tensor) -> torch.Tensor:
        sub = {key: value[k, rows] for key, value in target.items()}
        return task_loss(score[k, rows], sub, kind)

    if kind == "bce":
        per_row = task_loss(full, target, kind, reduction="none").reshape(full.shape)
        l_full = masked_mean(per_row, valid)
    else:
        l_full = torch.stack([member_task(full, k, _member_rows(valid, k)) if k in active else zero[k]
                              for k in range(k_members)])  # fmt: skip
    if not drop:
        parts["task"] = l_full.detach().cpu().numpy()
        return l_full, parts
    reduced = mask.clone()
    has = torch.zeros_like(valid)
    for k in active:
        rows = _member_rows(valid, k)
        red_k, has_k = REDUCED_DRAWS[reduced_draw](mask[k, rows], members.generators[k])
        reduced[k, rows] = red_k
        has[k, rows] = has_k
    has = has & valid
    part = head(u, reduced)
    if kind == "bce":
        red_row = task_loss(part, target, kind, reduction="none").reshape(part.shape)
        l_red = masked_mean(red_row, has)
        mofe = masked_mean(torch.clamp(per_row - red_row, min=0), has)
    else:
        l_red_list, mofe_list = [], []
        for k in range(k_members):
            rows = _member_rows(has, k)
            if k not in active or len(rows) == 0:
                l_red_list.append(zero[k])
                mofe_list.append(zero[k])
                continue
            red_k = member_task(part, k, rows)
            l_red_list.append(red_k)
            mofe_list.append(torch.clamp(member_task(full, k, rows) - red_k, min=0))
        l_red, mofe = torch.stack(l_red_list), torch.stack(mofe_list)
    loss = l_full + l_red + lambda_mofe * mofe
    parts = {
        "task": l_full.detach().cpu().numpy(),
        "reduced": l_red.detach().cpu().numpy(),
        "mofe": mofe.detach().cpu().numpy(),
    }
    return loss, parts
