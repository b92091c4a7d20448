"""Multi-head attention and row-aware dropout for models written against :class:`~haf.runtime.stacked.Layers`.

:class:`MultiheadAttention` replaces ``torch.nn.MultiheadAttention`` in the comparators: its q/k/v/out
projections are ``Layers.linear`` layers, so one definition runs plain (inputs (B, T, d)) or stacked
over K members (inputs (K, B, T, d)); member k loads into the plain module with
:func:`~haf.runtime.stacked.member_state_dict`.  The key-padding rule is explicit: a masked key gets
weight exactly 0 (``exp(-inf)``), and a query whose keys are all masked attends to nothing (its
attention output is the zero vector, so the block returns the output projection's bias), never NaN.

:class:`RowLayers` is a :class:`~haf.runtime.stacked.Layers` whose stacked dropout draws member k's
mask over member k's valid rows only (:class:`RowDropout`).  ``StackedDropout`` draws over the padded
width of the step, and that width is the largest batch of *any* member of the epoch, so a member's
dropout stream would depend on the other members (a trailing batch of one joins the previous batch,
so widths can differ by one).  With the valid counts of the step (:meth:`StepRows.set`, rows a
prefix along dim 1, as :func:`~haf.runtime.stacked.stacked_epoch` lays them out) member k draws
exactly the numbers it draws when trained alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from haf.runtime.stacked import Layers, Members


class StepRows:
    """The valid row count of every member in the current step, shared by a model's :class:`RowDropout` layers.

    ``counts`` None means every row along dim 1 is valid (e.g. a stacked forward outside a training step).
    """

    def __init__(self) -> None:
        self.counts: list[int] | None = None

    def set(self, valid: torch.Tensor | None) -> None:
        """``valid`` (K, B) bool with each member's valid rows first; None: all rows valid."""
        self.counts = None if valid is None else [int(c) for c in valid.sum(dim=1).tolist()]


class RowDropout(nn.Module):
    """Dropout on (K, B, ...) activations: member k's mask is drawn from member k's generator, only while
    k is active, and only for its first ``counts[k]`` rows (padded rows are zeroed, never drawn for)."""

    def __init__(self, members: Members, p: float, rows: StepRows) -> None:
        super().__init__()
        self.members = [members]  # lists: not submodules
        self.rows = [rows]
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        members, counts = self.members[0], self.rows[0].counts
        draws = torch.zeros_like(x)  # 0 < p: inactive members and padded rows are dropped (zeroed)
        for i in members.active_ids():
            n = x.shape[1] if counts is None else counts[i]
            torch.rand((n, *x.shape[2:]), generator=members.generators[i], out=draws[i, :n])
        return x * draws.ge_(self.p).div_(1.0 - self.p)  # x * mask / (1 - p), as nn.Dropout scales


class RowLayers(Layers):
    """:class:`~haf.runtime.stacked.Layers` with row-aware stacked dropout (:class:`RowDropout`).

    The trainer calls ``layers.rows.set(batch.valid)`` before each step's forward passes.
    """

    def __init__(self, members: Members | None = None) -> None:
        super().__init__(members)
        self.rows = StepRows()

    def dropout(self, p: float) -> nn.Module:
        return RowDropout(self.members, p, self.rows) if self.members is not None else nn.Dropout(p)


def _init_like_torch_mha(
    layers: Layers, q: nn.Module, k: nn.Module, v: nn.Module, out: nn.Module, d: int
) -> None:
    """``nn.MultiheadAttention``'s initialisation: Xavier-uniform over the stacked (3d, d) in-projection,
    zero in-projection and output biases (the output weight keeps ``nn.Linear``'s default)."""
    with torch.no_grad():
        gens = layers.members.init_generators if layers.stacked else [None]
        for i, gen in enumerate(gens):
            w = torch.empty(3 * d, d)
            nn.init.xavier_uniform_(w, generator=gen)
            for j, layer in enumerate((q, k, v)):
                target = layer.weight[i] if layers.stacked else layer.weight
                target.copy_(w[j * d : (j + 1) * d])
        for layer in (q, k, v, out):
            layer.bias.zero_()


class MultiheadAttention(nn.Module):
    """Scaled dot-product multi-head attention with a key mask, built from ``Layers`` (plain or stacked).

    ``forward(query (..., Tq, d), key (..., Tk, d), value (..., Tk, d), key_mask (..., Tk) bool or
    None) -> (..., Tq, d)``: ``softmax(q k^T / sqrt(d / heads))`` over the keys where ``key_mask`` is
    True, dropout on the attention weights (as ``nn.MultiheadAttention``), heads concatenated, output
    projection.  Every dimension is indexed from the right, so the same code serves (B, ...) and
    (K, B, ...) inputs.
    """

    def __init__(self, d: int, heads: int, dropout: float, layers: Layers | None = None) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"token width {d} is not divisible by the number of heads {heads}")
        layers = layers or Layers()
        self.d, self.heads = int(d), int(heads)
        self.q = layers.linear(d, d)
        self.k = layers.linear(d, d)
        self.v = layers.linear(d, d)
        self.out = layers.linear(d, d)
        self.drop = layers.dropout(dropout)
        _init_like_torch_mha(layers, self.q, self.k, self.v, self.out, d)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T, d) -> (..., heads, T, d / heads)."""
        return x.reshape(*x.shape[:-1], self.heads, self.d // self.heads).transpose(-2, -3)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q, k, v = self._split(self.q(query)), self._split(self.k(key)), self._split(self.v(value))
        if key_mask is not None:
            # masked keys and values are replaced before any product: a zero weight times a non-finite
            # value (or its gradient) would still be NaN
            hidden = ~key_mask.bool()[..., None, :, None]  # (..., 1, Tk, 1)
            k, v = k.masked_fill(hidden, 0.0), v.masked_fill(hidden, 0.0)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d // self.heads)  # (..., H, Tq, Tk)
        if key_mask is None:
            weights = torch.softmax(scores, dim=-1)
        else:
            allowed = key_mask.bool()[..., None, None, :]  # (..., 1, 1, Tk)
            any_key = allowed.any(dim=-1, keepdim=True)  # (..., 1, 1, 1)
            scores = scores.masked_fill(~allowed, float("-inf"))
            if bool(any_key.all()):
                weights = torch.softmax(scores, dim=-1)
            else:  # a query without any key: finite scores, then no attention at all
                scores = torch.where(any_key, scores, torch.zeros_like(scores))
                weights = torch.where(any_key, torch.softmax(scores, dim=-1), torch.zeros_like(scores))
        attended = self.drop(weights) @ v  # (..., H, Tq, d / H)
        return self.out(attended.transpose(-2, -3).flatten(-2))
