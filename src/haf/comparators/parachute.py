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
* hazard net: Linear(d, d_int) -> ReLU -> Dropout -> Linear(d_int, 1) = log hazard;
* Cox loss normalised as Algorithm 2, line 6 prints it, ``-1/B sum_b delta_b (...)``: divided by the
  batch size B (``cox_normalisation: batch``, the default); ``events`` divides by the batch's events
  instead (what this comparator did before; the HAF Cox variant ``haf_cox`` keeps that).

A method restricted to one group (``modalities`` without any pathology or without any tabular
modality) uses that group on both sides of B1 and B2 (they become self-attention blocks).
FFN width in the MHCA blocks is 2 d (about 3 M parameters with d = 256, close to the ~3.2 M seed
004 reports).

Built through ``layers`` (:class:`~haf.runtime.stacked.Layers`), plain for one fold or stacked over K
folds; every dimension is indexed from the right.
"""

from __future__ import annotations

import torch
from torch import nn

from haf.comparators.blocks import MHCABlock, ModalityAdapters, Width, mlp, presence
from haf.comparators.models import ComparatorModel, Targets
from haf.losses import COX_NORMALISATIONS, cox_partial_likelihood
from haf.modalities import PATHOLOGY, TABULAR
from haf.runtime.stacked import Layers


class Parachute(ComparatorModel):
    """``encode(x, present) -> f_final`` (..., B, d); ``hazard(f) -> (..., B)`` log hazard; forward = both."""

    task_loss = "cox"

    def __init__(
        self,
        dims: dict[str, Width],
        modalities: list[str],
        d: int = 256,
        d_int: int = 256,
        heads: int = 4,
        dropout: float = 0.1,
        ties: str = "breslow",
        layers: Layers | None = None,
        cox_normalisation: str = "batch",
    ) -> None:
        super().__init__(modalities)
        if ties not in ("breslow", "efron"):
            raise ValueError(f"ties must be breslow or efron, got {ties!r}")
        if cox_normalisation not in COX_NORMALISATIONS:
            raise ValueError(
                f"cox_normalisation must be one of {', '.join(COX_NORMALISATIONS)}, got {cox_normalisation!r}"
            )
        layers = layers or Layers()
        self.ties = ties
        self.cox_normalisation = cox_normalisation
        self.path_mods = [m for m in modalities if m in PATHOLOGY]
        self.tab_mods = [m for m in modalities if m in TABULAR]
        self.adapters = ModalityAdapters(
            dims, modalities, d, kind="mlp", d_hidden=d_int, dropout=dropout, layers=layers
        )
        self.type_embedding = nn.ParameterDict({m: layers.parameter(d) for m in modalities})
        self.missing_token = nn.ParameterDict({m: layers.parameter(d) for m in modalities})
        self.context_query = layers.parameter(d)
        self.context_pattern = layers.linear(len(modalities), d)
        self.block_path = MHCABlock(d, heads, dropout, layers=layers)  # B1: pathology <- tabular context
        self.block_tab = MHCABlock(d, heads, dropout, layers=layers)  # B2: tabular context <- pathology
        self.block_ctx = MHCABlock(d, heads, dropout, layers=layers)  # B3: context query <- all tokens
        self.block_agg = MHCABlock(d, heads, dropout, layers=layers)  # B4: aggregation
        self.final_norm = layers.layer_norm(d)
        self.hazard_net = mlp(d, d_int, 1, dropout, layers)

    def tokens(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """(..., B, M, d) modality tokens in ``self.modalities`` order; absent ones are the missing tokens."""
        mask = presence(present, self.modalities)
        raw = self.adapters(x)
        typed = raw + torch.stack([self.type_embedding[m] for m in self.modalities], dim=-2).unsqueeze(-3)
        missing = torch.stack([self.missing_token[m] for m in self.modalities], dim=-2).unsqueeze(-3)
        return torch.where(mask.unsqueeze(-1), typed, missing.expand_as(typed))

    def encode(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """The fused feature f_final (..., B, d) of Algorithm 2, line 3."""
        tokens = self.tokens(x, present)
        idx = {m: k for k, m in enumerate(self.modalities)}
        p = tokens[..., [idx[m] for m in self.path_mods], :] if self.path_mods else None
        t = tokens[..., [idx[m] for m in self.tab_mods], :] if self.tab_mods else None
        if p is None:
            p = t
        if t is None:
            t = p
        pattern = presence(present, self.modalities).to(tokens.dtype)
        c = (self.context_query.unsqueeze(-2) + self.context_pattern(pattern)).unsqueeze(-2)  # (..., B, 1, d)
        p1 = self.block_path(p, t)
        t2 = self.block_tab(t, p)
        c3 = self.block_ctx(c, tokens)
        fused = self.block_agg(c3, torch.cat([p1, t2, c3], dim=-2)).squeeze(-2)
        return self.final_norm(fused + t.mean(dim=-2))

    def hazard(self, f: torch.Tensor) -> torch.Tensor:
        """Log hazard (..., B) from fused features (Algorithm 2, line 4)."""
        return self.hazard_net(f).squeeze(-1)

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.hazard(self.encode(x, present))

    def cox_loss(self, risk: torch.Tensor, targets: Targets) -> torch.Tensor:
        return cox_partial_likelihood(
            risk, targets.time, targets.event, ties=self.ties, normalise=self.cox_normalisation
        )

    def member_cox(self, risk: torch.Tensor, targets: Targets, valid: torch.Tensor | None) -> torch.Tensor:
        """The Cox loss of each member over its valid rows: (B,) risk -> scalar; (K, B) -> (K,).

        The partial likelihood is defined on a set of patients, so it is taken member by member (a
        member without valid rows gets 0 with a gradient graph, as a batch without events does).
        """
        if risk.dim() == 1:
            if valid is None:
                return self.cox_loss(risk, targets)
            return cox_partial_likelihood(
                risk[valid],
                targets.time[valid],
                targets.event[valid],
                ties=self.ties,
                normalise=self.cox_normalisation,
            )
        if valid is None:
            valid = torch.ones_like(risk, dtype=torch.bool)
        return torch.stack(
            [
                cox_partial_likelihood(
                    risk[k][valid[k]],
                    targets.time[k][valid[k]],
                    targets.event[k][valid[k]],
                    ties=self.ties,
                    normalise=self.cox_normalisation,
                )
                for k in range(risk.shape[0])
            ]
        )

    def scores_and_losses(
        self,
        x: dict[str, torch.Tensor],
        present: torch.Tensor,
        targets: Targets,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        risk = self(x, present)
        return risk, self.member_cox(risk, targets, valid)

    def hazard_parameters(self) -> list[nn.Parameter]:
        """The hazard net's parameters (theta in Algorithm 2 is everything else)."""
        return list(self.hazard_net.parameters())

    def encoder_parameters(self) -> list[nn.Parameter]:
        hazard = {id(p) for p in self.hazard_net.parameters()}
        return [p for p in self.parameters() if id(p) not in hazard]
