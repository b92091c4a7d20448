"""The four binary comparators of the HAF paper (section 3.2, appendix A.1), re-implemented from their descriptions.

* :class:`LateFusion` (MDLM-style, paradigm B): one risk predictor per modality, combined at the
  prediction level over the modalities the patient has.
* :class:`AttentionFusion` (PS3-style, paradigm C): one token per modality plus a summary token,
  multi-head self-attention across them, pooled prediction.
* :class:`MFMF` (asymmetric attention): the auxiliary modalities are queries over the tokens of one
  value-providing modality (WSI by default).
* :class:`FeatureInteraction` (CustOmics-like, paradigm D): low-rank pairwise bilinear interactions
  of modality embeddings, present pairs only.
* :class:`AttentionFusionTokens`, :class:`MFMFTokens`: the token-level variants of the two attention
  models (declaration ``tokens: instance``): the WSI/TMA tokens are instances of the bags
  (:mod:`haf.mil.tokens`, the batch keys of :func:`haf.runtime.tensors.token_keys`) instead of one
  Stage 1 vector per modality.

All take ``(x, present)`` and return one logit per patient; :meth:`ComparatorModel.scores_and_losses`
gives the scores and the training loss the shared trainer minimises.  Every model is built through
``layers`` (:class:`~haf.runtime.stacked.Layers`): plain for one fold, or stacked over K folds
(inputs and outputs with a leading K, the loss one per member over that member's ``valid`` rows).
The design choices the descriptions leave open are listed in each class docstring and in
``docs/comparators.md``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from haf.comparators.blocks import (
    MHCABlock,
    ModalityAdapters,
    Width,
    input_linear,
    masked_mean,
    mlp,
    presence,
    replace_absent,
    zeros_parameter,
)
from haf.losses import binary_loss
from haf.modalities import PATHOLOGY
from haf.runtime.stacked import Layers
from haf.runtime.stacked_attention import MultiheadAttention
from haf.runtime.tensors import token_keys


@dataclass
class Targets:
    """Training targets of a batch of patients (label NaN = no binary label); (B,) or (K, B)."""

    label: torch.Tensor
    time: torch.Tensor
    event: torch.Tensor


def row_mean(values: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean over the last dimension, over the ``valid`` entries only (0 where there are none)."""
    if valid is None:
        return values.mean(dim=-1)
    total = torch.where(valid, values, torch.zeros_like(values)).sum(dim=-1)
    return total / valid.sum(dim=-1).clamp(min=1).to(values.dtype)


def masked_bce(logit: torch.Tensor, label: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """BCE on logits averaged over the valid rows of the last dimension.

    Labels outside ``valid`` (padding, which may point at an unlabelled patient) are replaced before
    the loss: a NaN label would give a NaN gradient even with a zero weight.
    """
    if valid is not None:
        label = torch.where(valid, label, torch.zeros_like(label))
    per = binary_loss(logit, label, reduction="none").reshape(logit.shape)
    return row_mean(per, valid)


class ComparatorModel(nn.Module):
    """Base: ``forward(x, present) -> (..., B)`` score; the loss is BCE of that logit (binary comparators)."""

    task_loss = "bce"

    def __init__(self, modalities: list[str]) -> None:
        super().__init__()
        self.modalities = list(modalities)

    def scores_and_losses(
        self,
        x: dict[str, torch.Tensor],
        present: torch.Tensor,
        targets: Targets,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (..., B) and the training loss over the last dimension's ``valid`` rows (all if None):
        a scalar for one fold, (K,) for K stacked members."""
        score = self(x, present)
        return score, masked_bce(score, targets.label, valid)

    def loss(self, x: dict[str, torch.Tensor], present: torch.Tensor, targets: Targets) -> torch.Tensor:
        return self.scores_and_losses(x, present, targets)[1]


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
        dims: dict[str, Width],
        modalities: list[str],
        hidden: int,
        dropout: float,
        aux_weight: float = 1.0,
        layers: Layers | None = None,
    ) -> None:
        super().__init__(modalities)
        layers = layers or Layers()
        self.predictors = ModalityAdapters(
            dims, modalities, 1, kind="mlp", d_hidden=hidden, dropout=dropout, layers=layers
        )
        self.weight_logits = zeros_parameter(layers, len(modalities))
        self.empty_bias = zeros_parameter(layers)
        self.aux_weight = aux_weight

    def modality_logits(
        self, x: dict[str, torch.Tensor], present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., B, M) per-modality logits (absent ones zeroed) and the (..., B, M) presence mask."""
        mask = presence(present, self.modalities)
        logits = self.predictors(x).squeeze(-1)
        return torch.where(mask, logits, torch.zeros_like(logits)), mask

    def combine(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.weight_logits.unsqueeze(-2).expand_as(logits)
        scores = torch.where(mask, scores, torch.full_like(scores, -torch.inf))
        any_present = mask.any(dim=-1)
        weights = torch.softmax(
            torch.where(any_present.unsqueeze(-1), scores, torch.zeros_like(scores)), dim=-1
        )
        fused = (torch.where(mask, weights, torch.zeros_like(weights)) * logits).sum(dim=-1)
        return torch.where(any_present, fused, self.empty_bias.unsqueeze(-1).expand_as(fused))

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.combine(*self.modality_logits(x, present))

    def scores_and_losses(
        self,
        x: dict[str, torch.Tensor],
        present: torch.Tensor,
        targets: Targets,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, mask = self.modality_logits(x, present)
        score = self.combine(logits, mask)
        loss = masked_bce(score, targets.label, valid)
        if self.aux_weight == 0:
            return score, loss
        # the mean over every (valid row, present modality) entry; 0 for a member without any
        entries = mask if valid is None else mask & valid.unsqueeze(-1)
        label = targets.label.unsqueeze(-1).expand_as(logits)
        label = torch.where(entries, label, torch.zeros_like(label))
        per = binary_loss(logits, label, reduction="none").reshape(logits.shape)
        aux = row_mean(per.flatten(-2), entries.flatten(-2))
        return score, loss + self.aux_weight * aux


class AttentionFusion(ComparatorModel):
    """PS3-style token fusion.

    Tokens: a Linear per modality to ``d`` plus a learned modality-type embedding, and one learned
    summary token that is always present.  ``layers`` pre-LN multi-head self-attention blocks over
    all tokens, absent modality tokens zeroed and removed from the keys (key padding mask); the
    summary token keeps every row's key set non-empty.  Pooling: mean of the outputs of the summary
    token and the present modality tokens, LayerNorm, Linear to the logit.  ``n_blocks`` is the
    declaration's ``layers``.
    """

    def __init__(
        self,
        dims: dict[str, Width],
        modalities: list[str],
        d: int,
        heads: int,
        dropout: float,
        n_blocks: int = 2,
        layers: Layers | None = None,
    ) -> None:
        super().__init__(modalities)
        layers = layers or Layers()
        self.d = d
        self.adapters = ModalityAdapters(dims, modalities, d, kind="linear", layers=layers)
        self.type_embedding = layers.parameter(len(modalities), d)
        self.summary = layers.parameter(1, d)
        self.blocks = nn.ModuleList(
            MHCABlock(d, heads, dropout, layers=layers, cross=False) for _ in range(n_blocks)
        )
        self.norm = layers.layer_norm(d)
        self.head = layers.linear(d, 1)

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        mask = presence(present, self.modalities)
        tokens = replace_absent(self.adapters(x) + self.type_embedding.unsqueeze(-3), mask)
        lead = tokens.shape[:-2]  # (..., B)
        tokens = torch.cat([self.summary.unsqueeze(-3).expand(*lead, 1, self.d), tokens], dim=-2)
        keys = torch.cat([torch.ones(*lead, 1, dtype=torch.bool, device=mask.device), mask], dim=-1)
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
        dims: dict[str, Width],
        modalities: list[str],
        value_modality: str,
        d: int,
        heads: int,
        dropout: float,
        value_tokens: int = 8,
        layers: Layers | None = None,
    ) -> None:
        if value_modality not in modalities:
            raise ValueError(f"value modality {value_modality!r} is not among the modalities {modalities}")
        super().__init__(modalities)
        layers = layers or Layers()
        self.value_modality = value_modality
        self.aux = [m for m in modalities if m != value_modality]
        self.n_value = value_tokens
        self.d = d
        self.value_proj = input_linear(layers, dims[value_modality], value_tokens * d)
        self.value_pos = layers.parameter(value_tokens, d)
        self.value_missing = layers.parameter(value_tokens, d)
        self.value_norm = layers.layer_norm(d)
        self.query_norm = layers.layer_norm(d)
        self.attn = MultiheadAttention(d, heads, dropout, layers)
        self.ffn_norm = layers.layer_norm(d)
        self.ffn = mlp(d, 2 * d, d, dropout, layers)
        self.drop = layers.dropout(dropout)
        if self.aux:
            self.queries = ModalityAdapters(dims, self.aux, d, kind="linear", layers=layers)
            self.query_type = layers.parameter(len(self.aux), d)
        self.head = mlp(2 * d + 1, d, 1, dropout, layers)

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        xv = x[self.value_modality]
        has_value = presence(present, [self.value_modality])  # (..., B, 1)
        value = self.value_proj(xv).reshape(*xv.shape[:-1], self.n_value, self.d)
        value = value + self.value_pos.unsqueeze(-3)
        missing = self.value_missing.unsqueeze(-3).expand_as(value)
        value = self.value_norm(torch.where(has_value.unsqueeze(-1), value, missing))
        if self.aux:
            aux_mask = presence(present, self.aux)
            queries = replace_absent(self.queries(x) + self.query_type.unsqueeze(-3), aux_mask)
            attended = self.drop(self.attn(self.query_norm(queries), value, value))
            attended = attended + self.drop(self.ffn(self.ffn_norm(attended)))
            aux_summary = masked_mean(attended, aux_mask)
            any_aux = aux_mask.any(dim=-1, keepdim=True).to(value.dtype)
        else:
            aux_summary = value.new_zeros(*value.shape[:-2], self.d)
            any_aux = value.new_zeros(*value.shape[:-2], 1)
        features = torch.cat([aux_summary, value.mean(dim=-2), any_aux], dim=-1)
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
        self,
        dims: dict[str, Width],
        modalities: list[str],
        d: int,
        rank: int,
        dropout: float,
        layers: Layers | None = None,
    ) -> None:
        super().__init__(modalities)
        layers = layers or Layers()
        self.embed = ModalityAdapters(
            dims, modalities, d, kind="mlp", d_hidden=d, dropout=dropout, layers=layers
        )
        self.factors = nn.ModuleDict({m: layers.linear(d, rank, bias=False) for m in modalities})
        self.pairs = list(itertools.combinations(range(len(modalities)), 2))
        n = len(modalities)
        width = len(self.pairs) * rank + n * d + n
        self.head = mlp(width, d, 1, dropout, layers)

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        mask = presence(present, self.modalities)
        emb = replace_absent(self.embed(x), mask)  # (..., B, M, d)
        proj = [self.factors[m](emb[..., k, :]) for k, m in enumerate(self.modalities)]
        parts = []
        for i, j in self.pairs:
            both = (mask[..., i] & mask[..., j]).unsqueeze(-1)
            term = proj[i] * proj[j]
            parts.append(torch.where(both, term, torch.zeros_like(term)))
        parts.append(emb.flatten(-2))
        parts.append(mask.to(emb.dtype))
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)


def token_dim_key(modality: str) -> str:
    """The ``dims`` key of a pathology modality's instance token width (checkpoints record it)."""
    return token_keys(modality)[0]


def gather_entries(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table`` (..., U, *S) per distinct batch entry, ``index`` (..., B) -> (..., B, *S) per row."""
    lead = index.dim()
    idx = index.reshape(*index.shape, *([1] * (table.dim() - lead)))
    return torch.gather(table, lead - 1, idx.expand(*index.shape, *table.shape[lead:]))


def type_token(embedding: torch.Tensor, k: int) -> torch.Tensor:
    """Row k of a (..., M, d) learned table, shaped to add to (..., B, T, d) tokens."""
    return embedding[..., k, :].unsqueeze(-2).unsqueeze(-2)


class _InstanceTokens(nn.Module):
    """A Linear per pathology modality from the instance token width to ``d`` (the token-level models' input)."""

    def __init__(self, dims: dict[str, Width], modalities: list[str], d: int, layers: Layers) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({m: input_linear(layers, dims[token_dim_key(m)], d) for m in modalities})

    def forward(
        self, x: dict[str, torch.Tensor], m: str, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Modality m's projected tokens (..., B, N, d) and their validity (..., B, N): a real instance of a
        patient whose ``present`` (..., B, 1) says m is there.  Projected once per distinct patient."""
        key_x, key_mask, key_index = token_keys(m)
        if key_x not in x:
            raise KeyError(f"the batch has no instance tokens of {m} ({key_x}): a token-level comparator "
                           "needs the fold's instance tokens (haf.mil.tokens)")  # fmt: skip
        index = x[key_index]
        tokens = gather_entries(self.proj[m](x[key_x]), index)
        valid = gather_entries(x[key_mask].bool(), index) & present
        return tokens, valid


class AttentionFusionTokens(ComparatorModel):
    """PS3-style token fusion over the instances of the bags (``attention_fusion`` with ``tokens: instance``).

    Tokens: for each pathology modality (wsi, tma) of the method, its patient's instance tokens (a fixed,
    seeded subsample of at most ``instance_tokens`` frozen UNI patch features: :mod:`haf.mil.tokens`)
    through a Linear per modality to ``d``; for each tabular modality one token (Linear to ``d``) as in
    :class:`AttentionFusion`; every token plus its modality's learned type embedding; one learned summary
    token, always present.  ``n_blocks`` pre-LN multi-head self-attention blocks over all tokens with a key
    padding mask: padding instances and every token of an absent modality (observed or dropped by a
    masked evaluation's ``present``) are zeroed, never attended and re-zeroed after each block.  Pooling:
    one vote per present modality, the mean over the summary token's output and each present modality's
    mean output token (the masked mean over its instances for wsi/tma), so 64 WSI instances weigh what one
    tabular token weighs; with one token per modality this is :class:`AttentionFusion`'s pooling.
    LayerNorm -> Linear to the logit.
    """

    def __init__(
        self,
        dims: dict[str, Width],
        modalities: list[str],
        d: int,
        heads: int,
        dropout: float,
        n_blocks: int = 2,
        layers: Layers | None = None,
    ) -> None:
        super().__init__(modalities)
        layers = layers or Layers()
        self.d = d
        # a pathology modality the run has no bags of (no token width: e.g. a download without TMA cores)
        # is absent for every patient; it gets no projection and no token
        self.instance = [m for m in modalities if m in PATHOLOGY and token_dim_key(m) in dims]
        self.vector = [m for m in modalities if m not in PATHOLOGY]
        self.tokens = _InstanceTokens(dims, self.instance, d, layers)
        if self.vector:
            self.adapters = ModalityAdapters(dims, self.vector, d, kind="linear", layers=layers)
        self.type_embedding = layers.parameter(len(modalities), d)
        self.summary = layers.parameter(1, d)
        self.blocks = nn.ModuleList(
            MHCABlock(d, heads, dropout, layers=layers, cross=False) for _ in range(n_blocks)
        )
        self.norm = layers.layer_norm(d)
        self.head = layers.linear(d, 1)

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        mask = presence(present, self.modalities)  # (..., B, M)
        lead = mask.shape[:-1]
        vectors = self.adapters(x) if self.vector else None  # (..., B, M_vec, d)
        parts = [self.summary.unsqueeze(-3).expand(*lead, 1, self.d)]
        valid = [torch.ones(*lead, 1, dtype=torch.bool, device=mask.device)]
        for k, m in enumerate(self.modalities):
            if m in self.instance:
                tokens, ok = self.tokens(x, m, mask[..., k : k + 1])
            elif m in self.vector:
                tokens = vectors[..., self.vector.index(m) : self.vector.index(m) + 1, :]
                ok = mask[..., k : k + 1]
            else:
                continue
            parts.append(tokens + type_token(self.type_embedding, k))
            valid.append(ok)
        sizes = [p.shape[-2] for p in parts]
        keys = torch.cat(valid, dim=-1)  # (..., B, T)
        tokens = replace_absent(torch.cat(parts, dim=-2), keys)
        for block in self.blocks:
            tokens = block(tokens, key_mask=keys)
            tokens = replace_absent(tokens, keys)
        groups = torch.split(tokens, sizes, dim=-2)
        flags = torch.split(keys, sizes, dim=-1)
        pooled = torch.stack([masked_mean(g, f) for g, f in zip(groups, flags, strict=True)], dim=-2)
        voted = torch.stack([f.any(dim=-1) for f in flags], dim=-1)  # (..., B, 1 + M)
        return self.head(self.norm(masked_mean(pooled, voted))).squeeze(-1)


class MFMFTokens(ComparatorModel):
    """MFMF over the value modality's instance tokens (``mfmf`` with ``tokens: instance``).

    Keys/values: the value modality's instance tokens (WSI by default; a fixed subsample of at most
    ``instance_tokens`` frozen UNI patch features, :mod:`haf.mil.tokens`) through a Linear to ``d`` and a
    LayerNorm, with a key padding mask (padding instances never attended); a patient without the value
    modality (observed or dropped by the masked evaluation) gets ``value_tokens`` learned missing tokens
    instead, as :class:`MFMF`.  Queries: each present auxiliary modality, one token per tabular modality
    (Linear + type embedding) and one per instance for an auxiliary pathology modality (TMA when WSI gives
    the values: its instance tokens through their own Linear + type embedding).  Multi-head attention of
    the queries over the value tokens with no residual from the query, an FFN with residual, then the
    mean over each auxiliary modality's query tokens and the mean over the present auxiliary modalities
    (one vote per modality).  The head sees that summary, the masked mean of the value tokens and the flag
    "any auxiliary present".  The value modality must be a pathology modality (it provides the instances).
    """

    def __init__(
        self,
        dims: dict[str, Width],
        modalities: list[str],
        value_modality: str,
        d: int,
        heads: int,
        dropout: float,
        value_tokens: int = 8,
        layers: Layers | None = None,
    ) -> None:
        if value_modality not in modalities:
            raise ValueError(f"value modality {value_modality!r} is not among the modalities {modalities}")
        if value_modality not in PATHOLOGY or token_dim_key(value_modality) not in dims:
            raise ValueError(
                f"token-level MFMF takes its keys/values from instance tokens: value modality "
                f"{value_modality!r} must be one of {', '.join(PATHOLOGY)} and the run must have its bags"
            )
        super().__init__(modalities)
        layers = layers or Layers()
        self.value_modality = value_modality
        # an auxiliary pathology modality without bags in the run is absent for everyone: no query
        self.aux = [
            m for m in modalities if m != value_modality and (m not in PATHOLOGY or token_dim_key(m) in dims)
        ]
        self.aux_instance = [m for m in self.aux if m in PATHOLOGY]
        self.aux_vector = [m for m in self.aux if m not in PATHOLOGY]
        self.n_missing = value_tokens
        self.d = d
        self.tokens = _InstanceTokens(dims, [value_modality, *self.aux_instance], d, layers)
        self.value_missing = layers.parameter(value_tokens, d)
        self.value_norm = layers.layer_norm(d)
        self.query_norm = layers.layer_norm(d)
        self.attn = MultiheadAttention(d, heads, dropout, layers)
        self.ffn_norm = layers.layer_norm(d)
        self.ffn = mlp(d, 2 * d, d, dropout, layers)
        self.drop = layers.dropout(dropout)
        if self.aux_vector:
            self.queries = ModalityAdapters(dims, self.aux_vector, d, kind="linear", layers=layers)
        if self.aux:
            self.query_type = layers.parameter(len(self.aux), d)
        self.head = mlp(2 * d + 1, d, 1, dropout, layers)

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        has_value = presence(present, [self.value_modality])  # (..., B, 1)
        lead = has_value.shape[:-1]
        value, value_ok = self.tokens(x, self.value_modality, has_value)  # (..., B, N, d), (..., B, N)
        missing = self.value_missing.unsqueeze(-3).expand(*lead, self.n_missing, self.d)
        keys = torch.cat([value, missing], dim=-2)
        key_ok = torch.cat([value_ok, (~has_value).expand(*lead, self.n_missing)], dim=-1)
        keys = replace_absent(self.value_norm(keys), key_ok)
        if self.aux:
            aux_mask = presence(present, self.aux)
            vectors = self.queries(x) if self.aux_vector else None
            parts, valid = [], []
            for k, m in enumerate(self.aux):
                if m in self.aux_instance:
                    q, ok = self.tokens(x, m, aux_mask[..., k : k + 1])
                else:
                    j = self.aux_vector.index(m)
                    q, ok = vectors[..., j : j + 1, :], aux_mask[..., k : k + 1]
                parts.append(q + type_token(self.query_type, k))
                valid.append(ok)
            sizes = [p.shape[-2] for p in parts]
            q_ok = torch.cat(valid, dim=-1)
            queries = replace_absent(torch.cat(parts, dim=-2), q_ok)
            attended = self.drop(self.attn(self.query_norm(queries), keys, keys, key_ok))
            attended = attended + self.drop(self.ffn(self.ffn_norm(attended)))
            groups = torch.split(attended, sizes, dim=-2)
            flags = torch.split(q_ok, sizes, dim=-1)
            per = torch.stack([masked_mean(g, f) for g, f in zip(groups, flags, strict=True)], dim=-2)
            voted = torch.stack([f.any(dim=-1) for f in flags], dim=-1)
            aux_summary = masked_mean(per, voted)
            any_aux = voted.any(dim=-1, keepdim=True).to(keys.dtype)
        else:
            aux_summary = keys.new_zeros(*lead, self.d)
            any_aux = keys.new_zeros(*lead, 1)
        features = torch.cat([aux_summary, masked_mean(keys, key_ok), any_aux], dim=-1)
        return self.head(features).squeeze(-1)
