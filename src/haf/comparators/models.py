"""The four binary comparators of the HAF paper (section 3.2, appendix A.1), re-implemented from their descriptions.

* :class:`LateFusion` (MDLM-style, paradigm B): one risk predictor per modality, combined at the
  prediction level over the modalities the patient has.
* :class:`AttentionFusion` (PS3-style, paradigm C): one token per modality plus a summary token,
  multi-head self-attention across them, pooled prediction.
* :class:`MFMF` (asymmetric attention): the auxiliary modalities are queries over the tokens of one
  value-providing modality (WSI by default).
* :class:`FeatureInteraction` (CustOmics-like, paradigm D): low-rank pairwise bilinear interactions
  of modality embeddings, present pairs only.

All take ``(x, present)`` and return one logit per patient; :meth:`ComparatorModel.loss` is the
training loss the shared trainer minimises.  The design choices the descriptions leave open are
listed in each class docstring and in ``docs/comparators.md``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from haf.comparators.blocks import (
    MHCABlock,
    ModalityAdapters,
    masked_mean,
    mlp,
    presence,
    replace_absent,
)
from haf.losses import binary_loss


@dataclass
class Targets:
    """Training targets of a batch of patients (label NaN = no binary label)."""

    label: torch.Tensor
    time: torch.Tensor
    event: torch.Tensor


class ComparatorModel(nn.Module):
    """Base: ``forward(x, present) -> (B,)`` score; ``loss`` = BCE of that logit (binary comparators)."""

    task_loss = "bce"

    def __init__(self, modalities: list[str]) -> None:
        super().__init__()
        self.modalities = list(modalities)

    def loss(self, x: dict[str, torch.Tensor], present: torch.Tensor, targets: Targets) -> torch.Tensor:
        return binary_loss(self(x, present), targets.label)


class LateFusion(ComparatorModel):
    """MDLM-style late fusion.

    Each modality m has its own predictor ``s_m = MLP_m(x_m)`` (a logit).  The fused logit is a
    weighted average of the present modalities' logits, ``sum_m w_m s_m`` with
    ``w = softmax(a)`` renormalised over the present modalities (``a`` learned, initialised equal, so
    training starts from the plain average of the present modalities' logits).  A patient with none
    of the method's modalities gets a learned bias.  Loss: BCE of the fused logit plus ``aux_weight``
    times the mean BCE of every present per-modality logit, so each predictor stays a valid unimodal
    risk model, as MDLM's modality-specific risk scores are.
    """

    def __init__(
        self,
        dims: dict[str, int],
        modalities: list[str],
        hidden: int,
        dropout: float,
        aux_weight: float = 1.0,
    ) -> None:
        super().__init__(modalities)
        self.predictors = ModalityAdapters(dims, modalities, 1, kind="mlp", d_hidden=hidden, dropout=dropout)
        self.weight_logits = nn.Parameter(torch.zeros(len(modalities)))
        self.empty_bias = nn.Parameter(torch.zeros(()))
        self.aux_weight = aux_weight

    def modality_logits(
        self, x: dict[str, torch.Tensor], present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M) per-modality logits (absent ones zeroed) and the (B, M) presence mask."""
        mask = presence(present, self.modalities)
        logits = self.predictors(x).squeeze(-1)
        return torch.where(mask, logits, torch.zeros_like(logits)), mask

    def combine(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.weight_logits.unsqueeze(0).expand_as(logits)
        scores = torch.where(mask, scores, torch.full_like(scores, -torch.inf))
        any_present = mask.any(dim=1)
        weights = torch.softmax(
            torch.where(any_present.unsqueeze(1), scores, torch.zeros_like(scores)), dim=1
        )
        fused = (torch.where(mask, weights, torch.zeros_like(weights)) * logits).sum(dim=1)
        return torch.where(any_present, fused, self.empty_bias.expand_as(fused))

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.combine(*self.modality_logits(x, present))

    def loss(self, x: dict[str, torch.Tensor], present: torch.Tensor, targets: Targets) -> torch.Tensor:
        logits, mask = self.modality_logits(x, present)
        fused = binary_loss(self.combine(logits, mask), targets.label)
        if self.aux_weight == 0 or not mask.any():
            return fused
        label = targets.label.unsqueeze(1).expand_as(logits)
        per = binary_loss(logits[mask], label[mask], reduction="mean")
        return fused + self.aux_weight * per


class AttentionFusion(ComparatorModel):
    """PS3-style token fusion.

    Tokens: a Linear per modality to ``d`` plus a learned modality-type embedding, and one learned
    summary token that is always present.  ``layers`` pre-LN multi-head self-attention blocks over
    all tokens, absent modality tokens zeroed and removed from the keys (key padding mask); the
    summary token keeps every row's key set non-empty.  Pooling: mean of the outputs of the summary
    token and the present modality tokens, LayerNorm, Linear to the logit.
    """

    def __init__(
        self, dims: dict[str, int], modalities: list[str], d: int, heads: int, dropout: float, layers: int = 2
    ) -> None:
        super().__init__(modalities)
        self.adapters = ModalityAdapters(dims, modalities, d, kind="linear")
        self.type_embedding = nn.Parameter(torch.randn(len(modalities), d) * 0.02)
        self.summary = nn.Parameter(torch.randn(1, d) * 0.02)
        self.blocks = nn.ModuleList(MHCABlock(d, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        mask = presence(present, self.modalities)
        tokens = replace_absent(self.adapters(x) + self.type_embedding, mask)
        b = tokens.shape[0]
        tokens = torch.cat([self.summary.expand(b, 1, -1), tokens], dim=1)
        keys = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        for block in self.blocks:
            tokens = block(tokens, key_mask=keys)
            tokens = replace_absent(tokens, keys)
        return self.head(self.norm(masked_mean(tokens, keys))).squeeze(-1)


class MFMF(ComparatorModel):
    """Asymmetric attention over one value-providing modality (MFMF as the HAF paper's appendix A.1 describes it).

    The value modality's embedding (one vector: the detached Stage 1 z for WSI) is expanded by a
    Linear into ``value_tokens`` tokens of width ``d`` (plus position embeddings), so attention has
    more than one key to choose among.  Each present auxiliary modality is a query token (Linear +
    type embedding) that attends over these value tokens (multi-head, pre-LN, no residual from the
    query: the auxiliary modalities only steer *which* value information is extracted); an FFN with
    residual refines each attended vector, and they are averaged over the present auxiliary
    modalities.  The head sees that average, the mean value token and a flag "any auxiliary present".
    A patient without the value modality gets ``value_tokens`` learned missing tokens in its place,
    so its auxiliaries attend over learned constants (its score still depends on them through the
    attention weights); a patient without any auxiliary modality has a zero auxiliary summary.
    """

    def __init__(
        self,
        dims: dict[str, int],
        modalities: list[str],
        value_modality: str,
        d: int,
        heads: int,
        dropout: float,
        value_tokens: int = 8,
    ) -> None:
        if value_modality not in modalities:
            raise ValueError(f"value modality {value_modality!r} is not among the modalities {modalities}")
        super().__init__(modalities)
        self.value_modality = value_modality
        self.aux = [m for m in modalities if m != value_modality]
        self.n_value = value_tokens
        self.d = d
        self.value_proj = nn.Linear(dims[value_modality], value_tokens * d)
        self.value_pos = nn.Parameter(torch.randn(value_tokens, d) * 0.02)
        self.value_missing = nn.Parameter(torch.randn(value_tokens, d) * 0.02)
        self.value_norm = nn.LayerNorm(d)
        self.query_norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = mlp(d, 2 * d, d, dropout)
        self.drop = nn.Dropout(dropout)
        if self.aux:
            self.queries = ModalityAdapters(dims, self.aux, d, kind="linear")
            self.query_type = nn.Parameter(torch.randn(len(self.aux), d) * 0.02)
        self.head = mlp(2 * d + 1, d, 1, dropout)

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        b = present.shape[0]
        has_value = presence(present, [self.value_modality])  # (B, 1)
        value = self.value_proj(x[self.value_modality]).reshape(b, self.n_value, self.d) + self.value_pos
        value = torch.where(has_value.unsqueeze(-1), value, self.value_missing.unsqueeze(0).expand(b, -1, -1))
        value = self.value_norm(value)
        if self.aux:
            aux_mask = presence(present, self.aux)
            queries = replace_absent(self.queries(x) + self.query_type, aux_mask)
            attended, _ = self.attn(self.query_norm(queries), value, value, need_weights=False)
            attended = self.drop(attended)
            attended = attended + self.drop(self.ffn(self.ffn_norm(attended)))
            aux_summary = masked_mean(attended, aux_mask)
            any_aux = aux_mask.any(dim=1, keepdim=True).to(value.dtype)
        else:
            aux_summary = value.new_zeros(b, self.d)
            any_aux = value.new_zeros(b, 1)
        features = torch.cat([aux_summary, value.mean(dim=1), any_aux], dim=1)
        return self.head(features).squeeze(-1)


class FeatureInteraction(ComparatorModel):
    """Simple feature interaction: low-rank pairwise bilinear terms of modality embeddings.

    ``e_m = MLP_m(x_m)`` (width ``d``); per modality a projection ``P_m`` to ``rank`` dims; the
    interaction of a pair (i, j) is ``(P_i e_i) * (P_j e_j)`` (elementwise: a rank-``rank`` factorisation
    of the bilinear form on the outer product ``e_i e_j^T``).  Features: the ``rank``-vector of every
    pair in a fixed order (zeros unless both modalities are present), the first-order embeddings
    of present modalities (zeros otherwise) and the presence mask; an MLP head gives the logit.
    """

    def __init__(
        self, dims: dict[str, int], modalities: list[str], d: int, rank: int, dropout: float
    ) -> None:
        super().__init__(modalities)
        self.embed = ModalityAdapters(dims, modalities, d, kind="mlp", d_hidden=d, dropout=dropout)
        self.factors = nn.ModuleDict({m: nn.Linear(d, rank, bias=False) for m in modalities})
        self.pairs = list(itertools.combinations(range(len(modalities)), 2))
        n = len(modalities)
        width = len(self.pairs) * rank + n * d + n
        self.head = mlp(width, d, 1, dropout)

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        mask = presence(present, self.modalities)
        emb = replace_absent(self.embed(x), mask)  # (B, M, d)
        proj = [self.factors[m](emb[:, k]) for k, m in enumerate(self.modalities)]
        parts = []
        for i, j in self.pairs:
            both = (mask[:, i] & mask[:, j]).unsqueeze(1)
            term = proj[i] * proj[j]
            parts.append(torch.where(both, term, torch.zeros_like(term)))
        parts.append(emb.flatten(1))
        parts.append(mask.to(emb.dtype))
        return self.head(torch.cat(parts, dim=1)).squeeze(-1)
