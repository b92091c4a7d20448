"""Building blocks every comparator shares: per-modality adapters, masked pooling, the MHCA block.

Every comparator reads ``x`` (modality -> (..., B, d_m) features) and ``present`` ((..., B, 7) bool in
:data:`haf.modalities.MODALITIES` order).  The rule a masked modality follows is the same in every
model here: its values are replaced (``torch.where``, not a product, so even inf/NaN cannot leak) by
zeros or a learned token before anything mixes rows or modalities, and it is excluded from attention
keys and from pooling wherever the model attends or pools.  No layer mixes patients of a batch
(no BatchNorm), so a patient's score never depends on who else is in the batch.

Every block takes ``layers`` (:class:`~haf.runtime.stacked.Layers`; None: plain modules) and indexes
from the right, so one definition serves one fold (inputs (B, ...)) and K stacked folds
(inputs (K, B, ...)).  A learned tensor of shape S is S plain and (K, *S) stacked; where it meets a
batch it gets a batch dimension inserted just before S (``unsqueeze(-len(S) - 1)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from haf.modalities import modality_index
from haf.runtime.stacked import Layers
from haf.runtime.stacked_attention import MultiheadAttention

Width = int | Sequence[int]
"""A modality's input width: one int, or one per stacked member (folds may encode it differently)."""


def input_linear(layers: Layers, d_in: Width, d_out: int) -> nn.Module:
    """The first Linear of a modality's path; stacked members with different input widths each keep
    their own fan-in (their inputs are zero-padded to the widest)."""
    if isinstance(d_in, (list, tuple)):
        widths = [int(w) for w in d_in]
        return layers.linear(max(widths), d_out, in_widths=widths)
    return layers.linear(int(d_in), d_out)


def max_width(d_in: Width) -> int:
    return max(int(w) for w in d_in) if isinstance(d_in, (list, tuple)) else int(d_in)


def mlp(
    d_in: Width, d_hidden: int, d_out: int, dropout: float, layers: Layers | None = None
) -> nn.Sequential:
    """Linear -> ReLU -> Dropout -> Linear (PARACHUTE: every MLP block is ReLU followed by dropout)."""
    layers = layers or Layers()
    return nn.Sequential(
        input_linear(layers, d_in, d_hidden),
        nn.ReLU(),
        layers.dropout(dropout),
        layers.linear(d_hidden, d_out),
    )


def zeros_parameter(layers: Layers, *shape: int) -> nn.Parameter:
    """A learned tensor initialised at 0: ``shape`` plain, (K, *shape) stacked."""
    lead = (layers.members.k,) if layers.stacked else ()
    return nn.Parameter(torch.zeros(lead + tuple(shape)))


def presence(present: torch.Tensor, modalities: list[str] | tuple[str, ...]) -> torch.Tensor:
    """(..., B, len(modalities)) bool: the columns of the 7-slot mask for these modalities, in this order."""
    cols = [modality_index(m) for m in modalities]
    return present[..., cols].bool()


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens where ``mask`` is True; zeros for a row without any (never NaN).

    ``tokens`` (..., T, d), ``mask`` (..., T) bool.  Masked tokens are replaced, not multiplied, so a
    non-finite value in a masked token cannot reach the mean.
    """
    m = mask.unsqueeze(-1)
    total = torch.where(m, tokens, torch.zeros_like(tokens)).sum(dim=-2)
    count = mask.sum(dim=-1, keepdim=True).clamp(min=1).to(tokens.dtype)
    return total / count


class ModalityAdapters(nn.Module):
    """One adapter per modality mapping its features to a d-dimensional token.

    ``kind='linear'`` is a single Linear (attention tokens of PS3/MFMF-style models); ``kind='mlp'``
    is Linear -> ReLU -> Dropout -> Linear through ``d_hidden`` (PARACHUTE's adapters, late fusion's
    per-modality encoders).
    """

    def __init__(
        self,
        dims: dict[str, Width],
        modalities: list[str] | tuple[str, ...],
        d: int,
        *,
        kind: str = "linear",
        d_hidden: int | None = None,
        dropout: float = 0.0,
        layers: Layers | None = None,
    ) -> None:
        super().__init__()
        layers = layers or Layers()
        self.modalities = list(modalities)
        if kind not in ("linear", "mlp"):
            raise ValueError(f"adapter kind must be linear or mlp, got {kind!r}")
        self.adapters = nn.ModuleDict(
            {
                m: input_linear(layers, dims[m], d)
                if kind == "linear"
                else mlp(dims[m], d_hidden or d, d, dropout, layers)
                for m in self.modalities
            }
        )

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """(..., B, M, d) tokens in ``self.modalities`` order (absent rows still need replacing by the caller)."""
        return torch.stack([self.adapters[m](x[m]) for m in self.modalities], dim=-2)


def replace_absent(
    tokens: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor | None = None
) -> torch.Tensor:
    """Tokens (..., B, T, d) with the absent ones (mask False) replaced by ``fill`` ((..., T, d) learned) or zeros."""
    if fill is None:
        fill = torch.zeros_like(tokens)
    else:
        fill = fill.unsqueeze(-3).expand_as(tokens)
    return torch.where(mask.unsqueeze(-1), tokens, fill)


class MHCABlock(nn.Module):
    """Multi-head (cross-)attention block, pre-LayerNorm, as in PARACHUTE's Fig. 4a.

    ``q = q + Drop(MHA(LN_q(q), LN_kv(kv), LN_kv(kv)))`` then ``q = q + Drop(FFN(LN(q)))`` with a
    ReLU FFN.  Self-attention is the special case ``kv = q`` (``cross=False``: no ``LN_kv``).
    ``key_mask`` (..., T_kv) bool marks the keys that may be attended (True = present); a row without
    any attends to nothing (no NaN).
    """

    def __init__(
        self,
        d: int,
        heads: int,
        dropout: float,
        ffn: int | None = None,
        layers: Layers | None = None,
        *,
        cross: bool = True,
    ) -> None:
        super().__init__()
        layers = layers or Layers()
        if d % heads:
            raise ValueError(f"token width {d} is not divisible by the number of heads {heads}")
        self.norm_q = layers.layer_norm(d)
        self.norm_kv = layers.layer_norm(d) if cross else None
        self.attn = MultiheadAttention(d, heads, dropout, layers)
        self.drop = layers.dropout(dropout)
        self.norm_ffn = layers.layer_norm(d)
        self.ffn = mlp(d, ffn or 2 * d, d, dropout, layers)

    def forward(
        self, q: torch.Tensor, kv: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        qn = self.norm_q(q)
        if kv is None:
            kvn = qn
        elif self.norm_kv is None:
            raise ValueError("a self-attention block (cross=False) takes no separate key/value tokens")
        else:
            kvn = self.norm_kv(kv)
        h = q + self.drop(self.attn(qn, kvn, kvn, key_mask))
        return h + self.drop(self.ffn(self.norm_ffn(h)))
