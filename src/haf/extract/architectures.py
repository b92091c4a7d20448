"""Torch modules and checkpoint key maps that timm does not provide for the registry's encoders.

* :class:`ClsMeanPool`: Virchow-style pooling, ``concat(CLS, mean of the patch tokens)``. The register
  tokens are NOT patch tokens: the mean starts after ``num_prefix_tokens`` (1 CLS + the registers), as
  the Virchow2 model card does with ``output[:, 5:]`` ("tokens 1-4 are register tokens").
* :class:`AttentionalPooler` and :class:`ConchV15VisionTower`: CONCH v1.5's vision tower, a timm ViT-L/16
  trunk followed by a one-query attentional pooler (768-d, 8 heads, over all 1024-d trunk tokens) and a
  LayerNorm; parameter names ``trunk.*``, ``attn_pool_contrast.*``, ``ln_contrast.*`` as in the released
  ``pytorch_model_vision.bin`` (the layout of TRIDENT's ``CONCHVisionTower``; written here from that
  description, not copied).
* :func:`hf_dinov2_to_timm`: a Hugging Face ``transformers`` ``Dinov2Model`` state dict (Phikon-v2's
  ``model.safetensors``) renamed to timm's ``VisionTransformer`` names, so Phikon-v2 runs on timm
  without ``transformers`` (which is not a dependency). The mapping is listed in docs/extract.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn


class ClsMeanPool(nn.Module):
    """``concat(tokens[:, 0], tokens[:, num_prefix_tokens:].mean(1))`` of a timm ViT's final tokens."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_prefix_tokens = int(backbone.num_prefix_tokens)
        self.num_features = 2 * int(backbone.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.forward_features(x)  # (B, prefix + patches, D), after the final norm
        cls = tokens[:, 0]
        patches = tokens[:, self.num_prefix_tokens :]
        return torch.cat([cls, patches.mean(dim=1)], dim=-1)


class AttentionalPooler(nn.Module):
    """Cross-attention of ``n_queries`` learned queries (``d_model``) over the trunk's tokens (``context_dim``).

    Keys and values come from ``to_kv`` on the LayerNorm-ed tokens, the queries from ``to_q`` on the
    LayerNorm-ed learned queries; ``n_head`` heads of ``d_model / n_head``; output ``to_out``.
    """

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model {d_model} is not a multiple of n_head {n_head}")
        self.heads = n_head
        self.head_dim = d_model // n_head
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, context_dim) -> (B, n_queries, d_model)."""
        b, n, _ = x.shape
        kv = self.to_kv(self.ln_k(x))
        k, v = kv.chunk(2, dim=-1)
        q = self.to_q(self.ln_q(self.query)).unsqueeze(0).expand(b, -1, -1)
        h, d = self.heads, self.head_dim

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, L, h*d) -> (B, h, L, d)
            return t.reshape(b, t.shape[1], h, d).transpose(1, 2)

        weights = (split(q) @ split(k).transpose(-1, -2)) * d**-0.5
        weights = weights - weights.amax(dim=-1, keepdim=True).detach()
        out = weights.softmax(dim=-1) @ split(v)  # (B, h, Q, d)
        out = out.transpose(1, 2).reshape(b, -1, h * d)
        return self.to_out(out)


class ConchV15VisionTower(nn.Module):
    """CONCH v1.5 image encoder: ViT-L/16 trunk (LayerScale 1.0) -> attentional pooler -> LayerNorm, 768-d."""

    def __init__(self, trunk: nn.Module, d_model: int = 768, n_head: int = 8) -> None:
        super().__init__()
        self.trunk = trunk
        width = int(trunk.num_features)
        self.attn_pool_contrast = AttentionalPooler(d_model=d_model, context_dim=width, n_head=n_head)
        self.ln_contrast = nn.LayerNorm(d_model)
        self.num_features = d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(x)
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])


# ---------------------------------------------------------------------------------------------
# Hugging Face DINOv2 -> timm ViT key names

_HF_DINOV2_RENAMES: tuple[tuple[str, str], ...] = (
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
    (r"encoder\.layer\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
)
_HF_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)")
# Not part of inference: the masked-image-modelling token of DINOv2 training.
HF_DINOV2_IGNORED = ("embeddings.mask_token",)


def hf_dinov2_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``transformers`` Dinov2Model state dict to timm ``VisionTransformer`` names.

    ``query``, ``key`` and ``value`` of a layer are stacked in that order into timm's fused ``qkv``
    (timm splits ``qkv`` output as q, k, v). ``embeddings.mask_token`` is dropped. A key that matches
    no rule is kept as it is, so the strict check reports it as unexpected; an incomplete q/k/v triple
    is kept under its HF names too (and timm's ``qkv`` is then reported missing).
    """
    out: dict[str, torch.Tensor] = {}
    triples: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in HF_DINOV2_IGNORED:
            continue
        match = _HF_QKV.fullmatch(key)
        if match:
            triples.setdefault((match.group(1), match.group(3)), {})[match.group(2)] = value
            continue
        for pattern, repl in _HF_DINOV2_RENAMES:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            out[key] = value
    for (layer, kind), parts in triples.items():
        if set(parts) == {"query", "key", "value"}:
            out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat(
                [parts["query"], parts["key"], parts["value"]], dim=0
            )
        else:
            for which, value in parts.items():
                out[f"encoder.layer.{layer}.attention.attention.{which}.{kind}"] = value
    return out


KEY_MAPS = {"hf-dinov2": hf_dinov2_to_timm}
