"""PARACHUTE: adapters, hierarchical MHCA fusion, missing-modality tokens, Cox hazard net.

The PARACHUTE paper fixes: tokens of width d = 256 from adapter networks with intermediate width d_int = 256,
ReLU MLP blocks followed by dropout 0.1, MHCA blocks with 4 heads and LayerNorm before attention
and MLP (Fig. 4a), a hierarchy of four MHCA blocks whose first three "capture asymmetric cross-modal
attention among radiology, histopathology, and contextual embeddings", aggregated by a fourth,
"followed by a contextual skip connection" (Fig. 4b), missing-modality tokens, and an MLP hazard
net trained with the Cox partial likelihood.

Our adaptation to seven modalities (there is no radiology in HANCOCK):

* pathology tokens ``P`` = {wsi, tma} (the imaging side), tabular tokens ``T`` = {cell, clin,
  path, blood, icd} (the contextual side), each ``adapter_m(x_m) + type_m``; an absent modality's
  token is replaced by its own learned missing token (it stays a key: attending to "WSI is
  missing" is information);
* a context query ``c = q0 + Linear(m_b)``: a learned query plus an embedding of the patient's
  presence pattern ``m_b`` (Algorithm 2's FUSION takes ``m_b``);
* B1: ``P1 = MHCA(q=P, kv=T)`` (pathology reads the clinical context),
  B2: ``T2 = MHCA(q=T, kv=P)`` (context reads pathology),
  B3: ``C3 = MHCA(q=c, kv=[P; T])`` (the context query reads every modality token);
* B4 (aggregation): ``F = MHCA(q=C3, kv=[P1; T2; C3])``;
* contextual skip: ``f_final = LayerNorm(F + mean(T))`` (the mean of the tabular tokens, missing
  tokens included; the final LayerNorm belongs to the encoder so that f_final, where GCS measures
  curvature, has a fixed scale: with the norm inside the hazard net the curvature w.r.t. f shrinks
  as 1/||f||^2 while f grows, and steering fades out);
* hazard net: Linear(d, d_int) -> ReLU -> Dropout -> Linear(d_int, 1) = log hazard.

A method restricted to one group (``modalities`` without any pathology or without any tabular
modality) uses that group on both sides of B1 and B2 (they become self-attention blocks).
FFN width in the MHCA blocks is 2 d (about 3 M parameters with d = 256, close to the ~3.2 M seed
004 reports).
"""

from __future__ import annotations

import torch
from torch import nn

from haf.comparators.blocks import MHCABlock, ModalityAdapters, mlp, presence
from haf.comparators.models import ComparatorModel, Targets
from haf.losses import cox_partial_likelihood
from haf.modalities import PATHOLOGY, TABULAR


class Parachute(ComparatorModel):
    """``encode(x, present) -> f_final`` (B, d); ``hazard(f) -> (B,)`` log hazard; forward = both."""

    task_loss = "cox"

    def __init__(
        self,
        dims: dict[str, int],
        modalities: list[str],
        d: int = 256,
        d_int: int = 256,
        heads: int = 4,
        dropout: float = 0.1,
        ties: str = "breslow",
    ) -> None:
        super().__init__(modalities)
        if ties not in ("breslow", "efron"):
            raise ValueError(f"ties must be breslow or efron, got {ties!r}")
        self.ties = ties
        self.path_mods = [m for m in modalities if m in PATHOLOGY]
        self.tab_mods = [m for m in modalities if m in TABULAR]
        self.adapters = ModalityAdapters(dims, modalities, d, kind="mlp", d_hidden=d_int, dropout=dropout)
        self.type_embedding = nn.ParameterDict({m: nn.Parameter(torch.randn(d) * 0.02) for m in modalities})
        self.missing_token = nn.ParameterDict({m: nn.Parameter(torch.randn(d) * 0.02) for m in modalities})
        self.context_query = nn.Parameter(torch.randn(d) * 0.02)
        self.context_pattern = nn.Linear(len(modalities), d)
        self.block_path = MHCABlock(d, heads, dropout)  # B1: pathology <- tabular context
        self.block_tab = MHCABlock(d, heads, dropout)  # B2: tabular context <- pathology
        self.block_ctx = MHCABlock(d, heads, dropout)  # B3: context query <- all tokens
        self.block_agg = MHCABlock(d, heads, dropout)  # B4: aggregation
        self.final_norm = nn.LayerNorm(d)
        self.hazard_net = mlp(d, d_int, 1, dropout)

    def tokens(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """(B, M, d) modality tokens in ``self.modalities`` order; absent ones are the missing tokens."""
        mask = presence(present, self.modalities)
        raw = self.adapters(x)
        typed = raw + torch.stack([self.type_embedding[m] for m in self.modalities])
        missing = torch.stack([self.missing_token[m] for m in self.modalities]).unsqueeze(0).expand_as(typed)
        return torch.where(mask.unsqueeze(-1), typed, missing)

    def encode(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """The fused feature f_final (B, d) of Algorithm 2, line 3."""
        tokens = self.tokens(x, present)
        idx = {m: k for k, m in enumerate(self.modalities)}
        p = tokens[:, [idx[m] for m in self.path_mods]] if self.path_mods else None
        t = tokens[:, [idx[m] for m in self.tab_mods]] if self.tab_mods else None
        if p is None:
            p = t
        if t is None:
            t = p
        pattern = presence(present, self.modalities).to(tokens.dtype)
        c = (self.context_query + self.context_pattern(pattern)).unsqueeze(1)  # (B, 1, d)
        p1 = self.block_path(p, t)
        t2 = self.block_tab(t, p)
        c3 = self.block_ctx(c, tokens)
        fused = self.block_agg(c3, torch.cat([p1, t2, c3], dim=1)).squeeze(1)
        return self.final_norm(fused + t.mean(dim=1))

    def hazard(self, f: torch.Tensor) -> torch.Tensor:
        """Log hazard (B,) from fused features (Algorithm 2, line 4)."""
        return self.hazard_net(f).squeeze(-1)

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.hazard(self.encode(x, present))

    def cox_loss(self, risk: torch.Tensor, targets: Targets) -> torch.Tensor:
        return cox_partial_likelihood(risk, targets.time, targets.event, ties=self.ties)

    def loss(self, x: dict[str, torch.Tensor], present: torch.Tensor, targets: Targets) -> torch.Tensor:
        return self.cox_loss(self(x, present), targets)

    def hazard_parameters(self) -> list[nn.Parameter]:
        """The hazard net's parameters (theta in Algorithm 2 is everything else)."""
        return list(self.hazard_net.parameters())

    def encoder_parameters(self) -> list[nn.Parameter]:
        hazard = {id(p) for p in self.hazard_net.parameters()}
        return [p for p in self.parameters() if id(p) not in hazard]
