"""One colour per method and per modality, the same in every figure.

Colours are keyed by name, never by position in a list, so a method keeps its colour whichever
subset of methods a figure shows.  Known methods get hand-picked colours (HAF stands out, its
no-detach ablation is a lighter shade of the same hue); any other name gets a stable colour from a
hash of the name.
"""

from __future__ import annotations

import hashlib

from haf.modalities import MODALITIES

_KNOWN: dict[str, str] = {
    "wsi_clam": "#8c564b",
    "tma_clam": "#c49c94",
    "wsi_tma_clam": "#7f7f7f",
    "fusion_mlp_wsi_tma": "#bcbd22",
    "fusion_mlp_all": "#1f77b4",
    "ga": "#2ca02c",
    "clip": "#9467bd",
    "drop": "#ff7f0e",
    "clip_drop": "#e377c2",
    "haf": "#d62728",
    "haf_cox": "#8b0000",
    "fusion_mlp_all_nodetach": "#aec7e8",
    "ga_nodetach": "#98df8a",
    "drop_nodetach": "#ffbb78",
    "haf_nodetach": "#ff9896",
    "late_fusion": "#17becf",
    "attention_fusion": "#393b79",
    "attention_fusion_tokens": "#7b7fd6",  # the token-level variants: lighter shades of the same hue
    "mfmf": "#637939",
    "mfmf_tokens": "#a3b86c",
    "feature_interaction": "#8c6d31",
    "parachute": "#000000",
}

_FALLBACK: tuple[str, ...] = (
    "#5254a3",
    "#6b6ecf",
    "#9c9ede",
    "#8ca252",
    "#b5cf6b",
    "#bd9e39",
    "#e7ba52",
    "#ad494a",
    "#d6616b",
    "#7b4173",
    "#a55194",
    "#ce6dbd",
    "#3182bd",
    "#e6550d",
    "#31a354",
    "#756bb1",
)

_MODALITY: dict[str, str] = {
    "wsi": "#d62728",
    "tma": "#ff7f0e",
    "cell": "#2ca02c",
    "clin": "#1f77b4",
    "path": "#9467bd",
    "blood": "#8c564b",
    "icd": "#e377c2",
}


def method_color(name: str) -> str:
    """The colour of ``name`` in every figure (hex string)."""
    if name in _KNOWN:
        return _KNOWN[name]
    digest = hashlib.md5(name.encode("utf-8")).digest()
    return _FALLBACK[digest[0] % len(_FALLBACK)]


def method_colors(names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Colours of several methods, keyed by name."""
    return {name: method_color(name) for name in names}


def method_linestyle(name: str) -> str:
    """Dashed lines for no-detach ablations and Cox variants, solid otherwise (readable in grey print)."""
    return "--" if name.endswith("_nodetach") or name.endswith("_cox") else "-"


def modality_color(name: str) -> str:
    """Colour of a modality (t-SNE and heatmap figures)."""
    if name not in MODALITIES:
        raise ValueError(f"unknown modality {name!r}; expected one of {', '.join(MODALITIES)}")
    return _MODALITY[name]
