"""Building blocks every comparator shares: per-modality adapters, masked pooling, the MHCA block.

Every comparator reads ``x`` (modality -> (B, d_m) features) and ``present`` ((B, 7) bool in
:data:`haf.modalities.MODALITIES` order).  The rule a masked modality follows is the same in every
model here: its values are replaced (``torch.where``, not a product, so even inf/NaN cannot leak) by
zeros or a learned token before anything mixes rows or modalities, and it is excluded from attention
keys and from pooling wherever the model attends or pools.  No layer mixes patients of a batch
(no BatchNorm), so a patient's score never depends on who else is in the batch.
"""

from __future__ import annotations

import torch
from torch import nn

from haf.modalities import modality_index


def mlp(d_in: int, d_hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout -> Linear (PARACHUTE: every MLP block is ReLU followed by dropout)."""
    return nn.Sequential(
        nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out)
    )


def presence(present: torch.Tensor, modalities: list[str] | tuple[str, ...]) -> torch.Tensor:
    """(B, len(modalities)) bool: the columns of the 7-slot mask for these modalities, in this order."""
    cols = [modality_index(m) for m in modalities]
    return present[:, cols].bool()


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens where ``mask`` is True; zeros for a row without any (never NaN).

    ``tokens`` (B, T, d), ``mask`` (B, T) bool.  Masked tokens are replaced, not multiplied, so a
    non-finite value in a masked token cannot reach the mean.
    """
    m = mask.unsqueeze(-1)
    total = torch.where(m, tokens, torch.zeros_like(tokens)).sum(dim=1)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(tokens.dtype)
    return total / count


class ModalityAdapters(nn.Module):
    """One adapter per modality mapping its features to a d-dimensional token.

    ``kind='linear'`` is a single Linear (attention tokens of PS3/MFMF-style models); ``kind='mlp'``
    is Linear -> ReLU -> Dropout -> Linear through ``d_hidden`` (PARACHUTE's adapters, late fusion's
    per-modality encoders).
    """

    def __init__(
        self,
        dims: dict[str, int],
        modalities: list[str] | tuple[str, ...],
        d: int,
        *,
        kind: str = "linear",
        d_hidden: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.modalities = list(modalities)
        if kind not in ("linear", "mlp"):
            raise ValueError(f"adapter kind must be linear or mlp, got {kind!r}")
        self.adapters = nn.ModuleDict(
            {
                m: nn.Linear(dims[m], d) if kind == "linear" else mlp(dims[m], d_hidden or d, d, dropout)
                for m in self.modalities
            }
        )

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, M, d) tokens in ``self.modalities`` order (absent rows still need replacing by the caller)."""
        return torch.stack([self.adapters[m](x[m]) for m in self.modalities], dim=1)


def replace_absent(
    tokens: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor | None = None
) -> torch.Tensor:
    """Tokens (B, T, d) with the absent ones (mask False) replaced by ``fill`` ((T, d) learned) or zeros."""
    if fill is None:
        fill = torch.zeros_like(tokens)
    else:
        fill = fill.unsqueeze(0).expand_as(tokens)
    return torch.where(mask.unsqueeze(-1), tokens, fill)


class MHCABlock(nn.Module):
    """Multi-head (cross-)attention block, pre-LayerNorm, as in PARACHUTE's Fig. 4a.

    ``q = q + Drop(MHA(LN_q(q), LN_kv(kv), LN_kv(kv)))`` then ``q = q + Drop(FFN(LN(q)))`` with a
    ReLU FFN.  Self-attention is the special case ``kv = q``.  ``key_mask`` (B, T_kv) bool marks the
    keys that may be attended (True = present); it must leave at least one key per row.
    """

    def __init__(self, d: int, heads: int, dropout: float, ffn: int | None = None) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"token width {d} is not divisible by the number of heads {heads}")
        self.norm_q = nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm_ffn = nn.LayerNorm(d)
        self.ffn = mlp(d, ffn or 2 * d, d, dropout)

    def forward(
        self, q: torch.Tensor, kv: torch.Tensor | None = None, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        qn = self.norm_q(q)
        kvn = qn if kv is None else self.norm_kv(kv)
        padding = None if key_mask is None else ~key_mask.bool()
        attended, _ = self.attn(qn, kvn, kvn, key_padding_mask=padding, need_weights=False)
        h = q + self.drop(attended)
        return h + self.drop(self.ffn(self.norm_ffn(h)))
