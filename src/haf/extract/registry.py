"""The encoder registry: the one place that names every tile encoder and how its weights load.

Each entry (:class:`EncoderSpec`) says how the architecture is built (a factory of timm kwargs, one per
encoder, as TRIDENT's ``trident/patch_encoder_models/load.py`` has one class per encoder), its native
input size, its normalisation, its output width and pooling, where its weights come from (hub repository
and file, or a local ``.bin``/``.pth``/``.pt``/``.safetensors``), and the published facts about the
architecture (:class:`ArchFacts`: patch size, depth, width, heads, registers, MLP, LayerScale, parameter
count) with their source. ``tests/test_extract_registry.py`` builds every entry on the meta device and
checks its parameter shapes, parameter count and output width against these facts.

| name | architecture | dim | pooling | weights |
|---|---|---|---|---|
| ``uni`` | ViT-L/16 | 1024 | CLS | ``MahmoodLab/UNI`` ``pytorch_model.bin`` |
| ``uni2-h`` | ViT-H/14, 8 registers, SwiGLU | 1536 | CLS | ``MahmoodLab/UNI2-h`` ``pytorch_model.bin`` |
| ``conch-v1.5`` | ViT-L/16 + attentional pooler (vision tower) | 768 | attention pool | ``MahmoodLab/conchv1_5`` ``pytorch_model_vision.bin`` |
| ``virchow2`` | ViT-H/14, 4 registers, SwiGLU | 2560 | concat(CLS, mean of patch tokens) | ``paige-ai/Virchow2`` ``pytorch_model.bin`` |
| ``virchow2-cls`` | same weights as ``virchow2`` | 1280 | CLS | same |
| ``h-optimus-0`` / ``h-optimus-1`` | ViT-g/14, 4 registers, SwiGLU | 1536 | CLS | ``bioptimus/H-optimus-0`` / ``-1`` ``pytorch_model.bin`` |
| ``prov-gigapath`` | ViT-g/16 (DINOv2 giant with 16-px patches), SwiGLU | 1536 | CLS | ``prov-gigapath/prov-gigapath`` ``pytorch_model.bin`` |
| ``phikon-v2`` | ViT-L/16 (DINOv2, published for HF ``transformers``) | 1024 | CLS | ``owkin/phikon-v2`` ``model.safetensors`` (HF names mapped to timm) |
| ``tiny-vit-test`` | 2-block 64-d ViT/16, seeded random | 64 | CLS | none (tests, benchmarks) |
| ``demo-texture`` | weight-free colour/texture statistics | 1024 | - | none (SYNTHETIC demo only) |

Pooling. ``cls``: the final-norm CLS token (timm ``global_pool='token'``). ``cls+mean``: Virchow's
``concat(CLS, mean of the patch tokens)``, registers excluded (:class:`haf.extract.architectures.ClsMeanPool`).
The pooling belongs to the entry, so ``virchow2`` and ``virchow2-cls`` are two names (as in TRIDENT) and
their features go to different folders (``features/tma/{encoder}``). Another ViT entry gets a
``cls+mean`` twin by one more entry with ``pooling="cls+mean"`` and twice the dim.

Weights. A local file (config ``extract.weights``) is read by its suffix: ``.safetensors`` with
``safetensors.torch.load_file``, anything else with ``torch.load(weights_only=True)`` (plain or
``{"state_dict"|"model": ...}``-wrapped). An entry's key map (Phikon-v2: Hugging Face DINOv2 names ->
timm) is applied, then the state dict is checked strictly: the error names the file, the missing and
unexpected keys and the shape mismatches. The one shape change allowed is the position embedding of an
entry marked ``resample_pos_embed`` (CONCH v1.5), resampled to the entry's native grid with timm's
``resample_abs_pos_embed`` and logged. With no local file the hub encoders download ``hub_file`` through
``huggingface_hub`` (token from ``HF_TOKEN``, never logged); offline and without a file, one message
names both ways to provide the weights.

Tile size. The tiles are fed at ``extract.tile_px`` (``dynamic_img_size``: any multiple of the patch
size); a tile size other than the entry's native ``input_px`` is allowed and logged as a warning.

The weights digest (``sha256:<hex>`` of the file, or a description of a random/weight-free encoder) goes
into every h5 the extraction writes, so features made with other weights are never mixed or resumed.

This module imports no torch at top level: :func:`encoder_dim` is cheap and usable from any env.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from haf.errors import HafConfigError, HafInputError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# H-optimus-0/1 model cards (transforms.Normalize in the "How to use" block; TRIDENT HOptimus0InferenceEncoder)
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)

POOLINGS = ("cls", "cls+mean", "attention", "none")


# ---------------------------------------------------------------------------------------------
# published facts


@dataclass(frozen=True)
class ArchFacts:
    """What the model card (or the reference implementation it points to) says about an architecture.

    ``mlp_hidden`` is the row count of ``mlp.fc1`` (for timm's packed SwiGLU that is both halves, gate
    and value, i.e. ``2 x`` the hidden width). ``card_params`` is the parameter count the source states
    (a string as written there, e.g. ``"1.1B"``; ``None`` where it states none); ``params`` is the count of
    this registry's build (meta device, timm 1.0.31), which the test checks exactly and against
    ``card_params`` within the card's rounding or 1 %.
    """

    architecture: str
    patch_size: int
    depth: int
    width: int
    heads: int
    registers: int
    mlp: str  # "gelu" | "swiglu"
    mlp_hidden: int
    layerscale: float | None
    params: int
    card_params: str | None
    sources: tuple[str, ...]


def card_param_count(text: str) -> tuple[float, float]:
    """``"632M"`` -> (632e6, 0.5e6), ``"1.1B"`` -> (1.1e9, 0.05e9): the value and half its last digit."""
    match = re.fullmatch(r"\s*(\d+(?:\.(\d+))?)\s*([MB])\s*", text)
    if not match:
        raise ValueError(f"cannot read a parameter count from {text!r} (expected e.g. 632M or 1.1B)")
    scale = 1e6 if match.group(3) == "M" else 1e9
    decimals = len(match.group(2) or "")
    return float(match.group(1)) * scale, 0.5 * 10.0**-decimals * scale


# ---------------------------------------------------------------------------------------------
# one factory of timm kwargs per encoder


def _uni_kwargs() -> dict[str, Any]:
    # mahmoodlab/UNI README ("Downloading weights + Creating model"), uni/get_encoder/get_encoder.py and
    # TRIDENT UNIInferenceEncoder: timm.create_model("vit_large_patch16_224", **kwargs)
    return {
        "img_size": 224,
        "patch_size": 16,
        "init_values": 1e-5,
        "num_classes": 0,
        "dynamic_img_size": True,
    }


def _uni2h_kwargs() -> dict[str, Any]:
    # The UNI2-h model card (https://huggingface.co/MahmoodLab/UNI2-h, "timm_kwargs", the same block in
    # the mahmoodlab/UNI README and TRIDENT UNIv2InferenceEncoder):
    # timm.create_model('vit_giant_patch14_224', pretrained=False, **kwargs).
    import timm
    import torch

    return {
        "img_size": 224,
        "patch_size": 14,
        "depth": 24,
        "num_heads": 24,
        "init_values": 1e-5,
        "embed_dim": 1536,
        "mlp_ratio": 2.66667 * 2,
        "num_classes": 0,
        "no_embed_class": True,
        "mlp_layer": timm.layers.SwiGLUPacked,
        "act_layer": torch.nn.SiLU,
        "reg_tokens": 8,
        "dynamic_img_size": True,
    }


def _conch15_trunk_kwargs() -> dict[str, Any]:
    # CONCH v1.5 vision tower (https://huggingface.co/MahmoodLab/conchv1_5; TRIDENT
    # model_zoo/conchv1_5/conchv1_5.py: trunk = vit_large(patch_size=16, embed_dim=1024, depth=24,
    # num_heads=16, mlp_ratio=4, qkv_bias=True, init_values=1.0), evaluated at 448 px). Built here at its
    # native 448 px; timm's vit_large_patch16_224 is exactly that ViT-L/16.
    return {
        "img_size": 448,
        "patch_size": 16,
        "init_values": 1.0,
        "num_classes": 0,
        "dynamic_img_size": True,
    }


def _virchow2_kwargs() -> dict[str, Any]:
    # The Virchow2 model card (https://huggingface.co/paige-ai/Virchow2, "Model usage") and TRIDENT
    # Virchow2InferenceEncoder: timm.create_model("vit_huge_patch14_224", mlp_layer=SwiGLUPacked,
    # act_layer=SiLU, img_size=224, init_values=1e-5, num_classes=0, reg_tokens=4, mlp_ratio=5.3375,
    # global_pool="", dynamic_img_size=True). global_pool="" returns all tokens; pooling is ours.
    import timm
    import torch

    return {
        "img_size": 224,
        "init_values": 1e-5,
        "num_classes": 0,
        "reg_tokens": 4,
        "mlp_ratio": 5.3375,
        "global_pool": "",
        "dynamic_img_size": True,
        "mlp_layer": timm.layers.SwiGLUPacked,
        "act_layer": torch.nn.SiLU,
    }


def _virchow2_cls_kwargs() -> dict[str, Any]:
    # virchow2 with timm's CLS pooling (global_pool="token" adds no parameter): TRIDENT's virchow2-cls
    return {**_virchow2_kwargs(), "global_pool": "token"}


def _hoptimus_kwargs() -> dict[str, Any]:
    # The H-optimus-0 / H-optimus-1 model cards (https://huggingface.co/bioptimus/H-optimus-0,
    # timm.create_model("hf-hub:bioptimus/H-optimus-0", init_values=1e-5, dynamic_img_size=False)) and
    # TRIDENT HOptimus0InferenceEncoder: vit_giant_patch14_reg4_dinov2 (ViT-g/14, 4 registers, SwiGLU,
    # no_embed_class), num_classes=0, img_size=224, global_pool="token", init_values=1e-5.
    return {
        "num_classes": 0,
        "img_size": 224,
        "global_pool": "token",
        "init_values": 1e-5,
        "dynamic_img_size": True,
    }


def _gigapath_kwargs() -> dict[str, Any]:
    # Prov-GigaPath's hub config.json (https://huggingface.co/prov-gigapath/prov-gigapath: architecture
    # vit_giant_patch14_dinov2, model_args img_size 224, in_chans 3, patch_size 16, embed_dim 1536, depth
    # 40, num_heads 24, init_values 1e-5, mlp_ratio 5.33334) and TRIDENT GigaPathInferenceEncoder. The
    # dinov2-giant factory brings SwiGLUPacked/SiLU; patch_size=16 overrides its 14.
    return {
        "img_size": 224,
        "in_chans": 3,
        "patch_size": 16,
        "embed_dim": 1536,
        "depth": 40,
        "num_heads": 24,
        "init_values": 1e-5,
        "mlp_ratio": 5.33334,
        "num_classes": 0,
        "dynamic_img_size": True,
    }


def _phikon2_kwargs() -> dict[str, Any]:
    # Phikon-v2 (https://huggingface.co/owkin/phikon-v2; Filiot et al. 2024, arXiv:2409.09173): a DINOv2
    # ViT-L/16 published as a transformers Dinov2Model (hidden_size 1024, 24 layers, 16 heads, patch 16,
    # image 224, LayerScale 1e-5, GELU MLP x4, no registers, LayerNorm eps 1e-6); TRIDENT takes
    # last_hidden_state[:, 0]. The same network in timm is vit_large_patch16_224 with LayerScale.
    return {
        "img_size": 224,
        "patch_size": 16,
        "init_values": 1e-5,
        "num_classes": 0,
        "dynamic_img_size": True,
    }


def _tiny_kwargs() -> dict[str, Any]:
    return {
        "img_size": 224,
        "patch_size": 16,
        "embed_dim": 64,
        "depth": 2,
        "num_heads": 2,
        "init_values": 1e-5,
        "num_classes": 0,
        "dynamic_img_size": True,
    }


@dataclass(frozen=True)
class EncoderSpec:
    """What the extraction needs to know about an encoder, without building it."""

    name: str
    dim: int  # width of the features it writes
    description: str
    kind: str  # "timm" | "conch-v1.5" | "texture"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    timm_model: str | None = None
    timm_kwargs: Callable[[], dict[str, Any]] | None = field(default=None, repr=False)
    patch_size: int = 1  # tiles must be a multiple of this many pixels
    input_px: int | None = None  # the native input size (tiles of another size are allowed, logged)
    pooling: str = "cls"  # one of POOLINGS
    hub_repo: str | None = None
    hub_file: str | None = None
    key_map: str | None = None  # a name in haf.extract.architectures.KEY_MAPS
    resample_pos_embed: bool = False
    needs_weights: bool = False  # True: random weights only on explicit request (benchmarks)
    init_seed: int = 0  # seeded random init (tests, benchmarks)
    facts: ArchFacts | None = None


_SRC_TRIDENT = "TRIDENT trident/patch_encoder_models/load.py (mahmoodlab/TRIDENT)"

ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec(
            name="uni",
            dim=1024,
            description="UNI (ViT-L/16, Chen et al. 2024), timm vit_large_patch16_224",
            kind="timm",
            timm_model="vit_large_patch16_224",
            timm_kwargs=_uni_kwargs,
            patch_size=16,
            input_px=224,
            hub_repo="MahmoodLab/UNI",
            hub_file="pytorch_model.bin",
            needs_weights=True,
            facts=ArchFacts(
                architecture="ViT-L/16 (DINOv2 training)",
                patch_size=16,
                depth=24,
                width=1024,
                heads=16,
                registers=0,
                mlp="gelu",
                mlp_hidden=4096,
                layerscale=1e-5,
                params=303_350_784,
                card_params=None,
                sources=("https://huggingface.co/MahmoodLab/UNI", "mahmoodlab/UNI README", _SRC_TRIDENT),
            ),
        ),
        EncoderSpec(
            name="uni2-h",
            dim=1536,
            description="UNI2-h (ViT-H/14, 8 register tokens), timm vit_giant_patch14_224 with the model card's kwargs",
            kind="timm",
            timm_model="vit_giant_patch14_224",
            timm_kwargs=_uni2h_kwargs,
            patch_size=14,
            input_px=224,
            hub_repo="MahmoodLab/UNI2-h",
            hub_file="pytorch_model.bin",
            needs_weights=True,
            facts=ArchFacts(
                architecture="ViT-H/14, 8 registers, SwiGLU",
                patch_size=14,
                depth=24,
                width=1536,
                heads=24,
                registers=8,
                mlp="swiglu",
                mlp_hidden=8192,  # int(1536 * 5.33334): gate + value halves of 4096
                layerscale=1e-5,
                params=681_394_176,
                card_params="681M",
                sources=("https://huggingface.co/MahmoodLab/UNI2-h (timm_kwargs)", _SRC_TRIDENT),
            ),
        ),
        EncoderSpec(
            name="conch-v1.5",
            dim=768,
            description=(
                "CONCH v1.5 vision tower (ViT-L/16 trunk + one-query attentional pooler + LayerNorm, 768-d)"
            ),
            kind="conch-v1.5",
            timm_model="vit_large_patch16_224",
            timm_kwargs=_conch15_trunk_kwargs,
            patch_size=16,
            input_px=448,
            pooling="attention",
            hub_repo="MahmoodLab/conchv1_5",
            hub_file="pytorch_model_vision.bin",
            resample_pos_embed=True,
            needs_weights=True,
            facts=ArchFacts(
                architecture="ViT-L/16 trunk (LayerScale 1.0) + attentional pooler (768-d, 8 heads, 1 query)",
                patch_size=16,
                depth=24,
                width=1024,
                heads=16,
                registers=0,
                mlp="gelu",
                mlp_hidden=4096,
                layerscale=1.0,
                params=306_711_296,
                card_params=None,
                sources=(
                    "https://huggingface.co/MahmoodLab/conchv1_5",
                    "TRIDENT trident/patch_encoder_models/model_zoo/conchv1_5/conchv1_5.py (CONCHVisionTower)",
                ),
            ),
        ),
        EncoderSpec(
            name="virchow2",
            dim=2560,
            description="Virchow2 (ViT-H/14, 4 registers, SwiGLU), concat(CLS, mean of patch tokens)",
            kind="timm",
            timm_model="vit_huge_patch14_224",
            timm_kwargs=_virchow2_kwargs,
            patch_size=14,
            input_px=224,
            pooling="cls+mean",
            hub_repo="paige-ai/Virchow2",
            hub_file="pytorch_model.bin",
            needs_weights=True,
            facts=ArchFacts(
                architecture="ViT-H/14, 4 registers, SwiGLU",
                patch_size=14,
                depth=32,
                width=1280,
                heads=16,
                registers=4,
                mlp="swiglu",
                mlp_hidden=6832,  # int(1280 * 5.3375)
                layerscale=1e-5,
                params=631_239_424,
                card_params="632M",
                sources=("https://huggingface.co/paige-ai/Virchow2 (Model usage)", _SRC_TRIDENT),
            ),
        ),
        EncoderSpec(
            name="virchow2-cls",
            dim=1280,
            description="Virchow2 (ViT-H/14, 4 registers, SwiGLU), CLS token only",
            kind="timm",
            timm_model="vit_huge_patch14_224",
            timm_kwargs=_virchow2_cls_kwargs,
            patch_size=14,
            input_px=224,
            pooling="cls",
            hub_repo="paige-ai/Virchow2",
            hub_file="pytorch_model.bin",
            needs_weights=True,
            # facts: the same architecture as virchow2 (set below)
        ),
        EncoderSpec(
            name="h-optimus-0",
            dim=1536,
            description="H-optimus-0 (ViT-g/14, 4 registers, SwiGLU), timm vit_giant_patch14_reg4_dinov2",
            kind="timm",
            timm_model="vit_giant_patch14_reg4_dinov2",
            timm_kwargs=_hoptimus_kwargs,
            patch_size=14,
            input_px=224,
            mean=HOPTIMUS_MEAN,
            std=HOPTIMUS_STD,
            hub_repo="bioptimus/H-optimus-0",
            hub_file="pytorch_model.bin",
            needs_weights=True,
            facts=ArchFacts(
                architecture="ViT-g/14, 4 registers, SwiGLU",
                patch_size=14,
                depth=40,
                width=1536,
                heads=24,
                registers=4,
                mlp="swiglu",
                mlp_hidden=8192,
                layerscale=1e-5,
                params=1_134_774_272,
                card_params="1.1B",
                sources=("https://huggingface.co/bioptimus/H-optimus-0", _SRC_TRIDENT),
            ),
        ),
        EncoderSpec(
            name="h-optimus-1",
            dim=1536,
            description="H-optimus-1 (ViT-g/14, 4 registers, SwiGLU), timm vit_giant_patch14_reg4_dinov2",
            kind="timm",
            timm_model="vit_giant_patch14_reg4_dinov2",
            timm_kwargs=_hoptimus_kwargs,
            patch_size=14,
            input_px=224,
            mean=HOPTIMUS_MEAN,
            std=HOPTIMUS_STD,
            hub_repo="bioptimus/H-optimus-1",
            hub_file="pytorch_model.bin",
            needs_weights=True,
            # facts: the same architecture as h-optimus-0 (set below)
        ),
        EncoderSpec(
            name="prov-gigapath",
            dim=1536,
            description="Prov-GigaPath tile encoder (ViT-g/16, SwiGLU), timm vit_giant_patch14_dinov2 with patch 16",
            kind="timm",
            timm_model="vit_giant_patch14_dinov2",
            timm_kwargs=_gigapath_kwargs,
            patch_size=16,
            input_px=224,
            hub_repo="prov-gigapath/prov-gigapath",
            hub_file="pytorch_model.bin",
            needs_weights=True,
            facts=ArchFacts(
                architecture="ViT-g/16 (DINOv2 giant, 16-px patches), SwiGLU",
                patch_size=16,
                depth=40,
                width=1536,
                heads=24,
                registers=0,
                mlp="swiglu",
                mlp_hidden=8192,
                layerscale=1e-5,
                params=1_134_953_984,
                card_params="1.1B",
                sources=("https://huggingface.co/prov-gigapath/prov-gigapath (config.json)", _SRC_TRIDENT),
            ),
        ),
        EncoderSpec(
            name="phikon-v2",
            dim=1024,
            description="Phikon-v2 (DINOv2 ViT-L/16), HF Dinov2Model weights mapped onto timm vit_large_patch16_224",
            kind="timm",
            timm_model="vit_large_patch16_224",
            timm_kwargs=_phikon2_kwargs,
            patch_size=16,
            input_px=224,
            hub_repo="owkin/phikon-v2",
            hub_file="model.safetensors",
            key_map="hf-dinov2",
            needs_weights=True,
            facts=ArchFacts(
                architecture="ViT-L/16 (DINOv2 training)",
                patch_size=16,
                depth=24,
                width=1024,
                heads=16,
                registers=0,
                mlp="gelu",
                mlp_hidden=4096,
                layerscale=1e-5,
                params=303_350_784,
                card_params=None,
                sources=(
                    "https://huggingface.co/owkin/phikon-v2 (config.json)",
                    "arXiv:2409.09173",
                    _SRC_TRIDENT,
                ),
            ),
        ),
        EncoderSpec(
            name="tiny-vit-test",
            dim=64,
            description="TEST/BENCHMARK encoder: a 2-block, 64-d timm ViT/16 with seeded random weights",
            kind="timm",
            timm_model="vit_tiny_patch16_224",
            timm_kwargs=_tiny_kwargs,
            patch_size=16,
            input_px=None,  # any tile size
            facts=ArchFacts(
                architecture="ViT/16, 2 blocks, 64-d (this project's test encoder)",
                patch_size=16,
                depth=2,
                width=64,
                heads=2,
                registers=0,
                mlp="gelu",
                mlp_hidden=256,
                layerscale=1e-5,
                params=162_240,
                card_params=None,
                sources=("haf.extract.registry._tiny_kwargs",),
            ),
        ),
        EncoderSpec(
            name="demo-texture",
            dim=1024,
            description=(
                "SYNTHETIC-demo encoder: weight-free colour/texture histograms (haf.extract.texture), "
                "1024-d like UNI"
            ),
            kind="texture",
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            pooling="none",
        ),
    )
}
ENCODERS["virchow2-cls"] = replace(ENCODERS["virchow2-cls"], facts=ENCODERS["virchow2"].facts)
ENCODERS["h-optimus-1"] = replace(
    ENCODERS["h-optimus-1"],
    facts=replace(
        ENCODERS["h-optimus-0"].facts, sources=("https://huggingface.co/bioptimus/H-optimus-1", _SRC_TRIDENT)
    ),
)


def get_spec(name: str) -> EncoderSpec:
    """The registry entry of ``name``; an unknown name is a config error listing the known ones."""
    try:
        return ENCODERS[name]
    except KeyError:
        raise HafConfigError(
            f"extract.encoder: unknown encoder {name!r}; known: {', '.join(sorted(ENCODERS))}"
        ) from None


def encoder_dim(name: str) -> int:
    """Width of the features ``name`` writes (the TMA bag width other stages expect)."""
    return get_spec(name).dim


def check_tile_px(name: str, tile_px: int) -> None:
    """ViT encoders need tiles that are a multiple of their patch size (dynamic position embedding).

    A multiple other than the encoder's native input size works (the position embedding is resampled)
    but gives other features than the model card's; that is logged as a warning, not refused.
    """
    spec = get_spec(name)
    if tile_px % spec.patch_size:
        raise HafConfigError(
            f"extract.tile_px = {tile_px} is not a multiple of {spec.name}'s patch size {spec.patch_size} "
            f"(e.g. {spec.patch_size * max(1, round(tile_px / spec.patch_size))})"
        )
    if spec.input_px is not None and tile_px != spec.input_px:
        log.warning(
            "extract.tile_px = %d but %s was trained on %d-px inputs: the tiles are encoded at %d px "
            "(position embedding resampled), so the features differ from the model card's setting",
            tile_px,
            spec.name,
            spec.input_px,
            tile_px,
        )


# ---------------------------------------------------------------------------------------------
# weights


def file_digest(path: str | Path, chunk: int = 1 << 24) -> str:
    """``sha256:<hex>`` of a file (streamed: UNI's 1.2 GB checkpoint hashes in a few seconds)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def random_digest(spec: EncoderSpec) -> str:
    """The digest of a seeded random init: tied to the library versions that drew it."""
    import timm
    import torch

    arch = spec.timm_model if spec.kind == "timm" else f"{spec.kind}:{spec.timm_model}"
    return f"random-init:{arch}:seed={spec.init_seed}:torch={torch.__version__}:timm={timm.__version__}"


TEXTURE_DIGEST = "weight-free:demo-texture:v1"


@dataclass(frozen=True)
class WeightsSource:
    """Where an encoder's weights come from: a file (local or hub cache) or none (random/weight-free)."""

    path: Path | None
    digest: str
    origin: str  # "local" | "hub" | "random" | "weight-free"


def _no_weights_message(spec: EncoderSpec, problem: str) -> str:
    return (
        f"extract.encoder = {spec.name!r} needs its pretrained weights, and none could be obtained ({problem}). "
        f"Provide them one of two ways: (1) set extract.weights to a local copy of {spec.hub_file} "
        f"(download it from https://huggingface.co/{spec.hub_repo} after accepting the model's terms), or "
        f"(2) run where huggingface.co is reachable with HF_TOKEN set in the environment to a token that "
        f"has access to {spec.hub_repo}; the file is then downloaded into the Hugging Face cache."
    )


def resolve_weights(
    name: str, weights: str | Path | None = None, *, allow_random: bool = False
) -> WeightsSource:
    """Find an encoder's weights and their digest without building the model.

    ``weights``: a local file (wins over the hub). ``allow_random``: the hub encoders fall back to a
    seeded random init instead of the hub (benchmarks measure speed, which does not need weights).
    """
    spec = get_spec(name)
    if spec.kind == "texture":
        if weights:
            raise HafConfigError(
                f"extract.weights is set ({weights}) but {spec.name!r} is weight-free; set it to null"
            )
        return WeightsSource(None, TEXTURE_DIGEST, "weight-free")
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise HafConfigError(f"extract.weights: file not found: {path}")
        return WeightsSource(path, file_digest(path), "local")
    if not spec.needs_weights or allow_random:
        return WeightsSource(None, random_digest(spec), "random")
    path = _hub_download(spec)
    return WeightsSource(path, file_digest(path), "hub")


def _hub_download(spec: EncoderSpec) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - the extract env has it
        raise HafConfigError(_no_weights_message(spec, f"huggingface_hub is not installed: {exc}")) from None
    token = os.environ.get("HF_TOKEN") or None
    log.info(
        "downloading %s/%s from the Hugging Face hub (HF_TOKEN %s)",
        spec.hub_repo,
        spec.hub_file,
        "is set" if token else "is not set",
    )
    try:
        path = hf_hub_download(repo_id=spec.hub_repo, filename=spec.hub_file, token=token)
    except Exception as exc:  # offline, gated, no token, network error: one message, token never shown
        text = str(exc).splitlines()[0] if str(exc) else ""
        if token:
            text = text.replace(token, "<HF_TOKEN>")
        raise HafConfigError(_no_weights_message(spec, f"hub: {type(exc).__name__}: {text}")) from None
    return Path(path)


# ---------------------------------------------------------------------------------------------
# building and loading


def _timm_kwargs(spec: EncoderSpec, depth: int | None) -> dict[str, Any]:
    kwargs = spec.timm_kwargs() if spec.timm_kwargs else {}
    if depth is not None:
        kwargs["depth"] = int(depth)
    return kwargs


def _build(spec: EncoderSpec, depth: int | None):
    import timm

    if spec.kind == "texture":
        from haf.extract.texture import TextureEncoder

        return TextureEncoder()
    trunk = timm.create_model(spec.timm_model, pretrained=False, **_timm_kwargs(spec, depth))
    if spec.kind == "conch-v1.5":
        from haf.extract.architectures import ConchV15VisionTower

        return ConchV15VisionTower(trunk)
    if spec.kind != "timm":  # pragma: no cover - registry consistency
        raise HafConfigError(f"encoder {spec.name!r}: unknown kind {spec.kind!r}")
    return trunk


def build_model(name: str, device: str | None = None, *, depth: int | None = None):
    """The encoder's architecture (parameter names = its checkpoint's, after the key map), default init.

    ``device='meta'`` builds shapes only (no memory, instant): used to compare architectures, even of
    the 1.1B-parameter ones. ``depth``: fewer transformer blocks of the same configuration (tests run a
    real forward of the large configurations this way). The random init is seeded (``init_seed``).
    Pooling is not part of this module for ``cls+mean`` entries: see :func:`pooled_model`.
    """
    import torch

    spec = get_spec(name)
    if device == "meta":
        with torch.device("meta"):
            return _build(spec, depth)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        return _build(spec, depth)


def pooled_model(name: str, backbone):
    """The module that maps tiles to the entry's features: the backbone, or ``ClsMeanPool(backbone)``."""
    spec = get_spec(name)
    if spec.pooling == "cls+mean":
        from haf.extract.architectures import ClsMeanPool

        return ClsMeanPool(backbone)
    return backbone


def read_state_dict(path: str | Path) -> dict:
    """A checkpoint's state dict: ``.safetensors`` via safetensors, anything else ``torch.load`` with
    ``weights_only`` (no code runs); errors name the file."""
    path = Path(path)
    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise HafInputError(
                path, f"cannot load as a safetensors file: {type(exc).__name__}: {exc}"
            ) from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise HafInputError(
                path, f"cannot load as a PyTorch checkpoint: {type(exc).__name__}: {exc}"
            ) from None
    if isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for key in ("state_dict", "model"):  # common wrappers of a plain state dict
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise HafInputError(
            path, "the checkpoint holds no state dict (a mapping of parameter names to tensors)"
        )
    return dict(state)


def prepare_state_dict(name: str, state: Mapping, model, path: str | Path) -> dict:
    """Apply the entry's key map and (only where the entry allows it) resample the position embedding."""
    spec = get_spec(name)
    state = dict(state)
    if spec.key_map:
        from haf.extract.architectures import KEY_MAPS

        state = KEY_MAPS[spec.key_map](state)
    if spec.resample_pos_embed:
        state = _resample_pos_embed(spec, state, model, path)
    return state


def _resample_pos_embed(spec: EncoderSpec, state: dict, model, path: str | Path) -> dict:
    from timm.layers import resample_abs_pos_embed

    trunk = getattr(model, "trunk", model)
    key = "trunk.pos_embed" if hasattr(model, "trunk") else "pos_embed"
    have = state.get(key)
    want = trunk.pos_embed
    if have is None or not hasattr(have, "shape") or tuple(have.shape) == tuple(want.shape):
        return state
    prefix = 0 if getattr(trunk, "no_embed_class", False) else int(trunk.num_prefix_tokens)
    n_grid = int(have.shape[1]) - prefix
    side = math.isqrt(n_grid)
    if have.ndim != 3 or side * side != n_grid or have.shape[2] != want.shape[2]:
        return state  # not a square grid of the right width: the strict check reports the shape
    state[key] = resample_abs_pos_embed(
        have.float(),
        new_size=list(trunk.patch_embed.grid_size),
        old_size=[side, side],
        num_prefix_tokens=prefix,
    ).to(have.dtype)
    log.info(
        "%s: %s position embedding resampled from a %dx%d to the native %dx%d grid (%s)",
        path,
        spec.name,
        side,
        side,
        *trunk.patch_embed.grid_size,
        key,
    )
    return state


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(model, state: Mapping, path: str | Path, name: str) -> None:
    """Strict check before loading: missing keys, unexpected keys and shape mismatches, all named."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    spec = get_spec(name)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_names(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): {_names(shapes, 4)}")
    hint = (
        f"this looks like a checkpoint of another architecture, not {spec.description}"
        if shapes or (missing and unexpected)
        else f"the file does not match {spec.description} exactly"
    )
    if spec.key_map:
        hint += f"; key names were mapped with {spec.key_map!r} first"
    raise HafInputError(
        path,
        f"strict load into encoder {name!r} failed: {'; '.join(parts)} ({hint})",
        field="extract.weights",
    )


@dataclass
class LoadedEncoder:
    """A ready-to-run encoder (eval mode, CPU) with the facts the h5 attributes record.

    ``model`` maps normalised tiles to ``spec.dim`` features (pooling included); ``backbone`` is the
    module the weights were loaded into (the same object unless the entry pools ``cls+mean``).
    """

    name: str
    model: Any
    spec: EncoderSpec
    source: WeightsSource
    backbone: Any = None

    @property
    def digest(self) -> str:
        return self.source.digest


def load_encoder(
    name: str,
    weights: str | Path | None = None,
    *,
    allow_random: bool = False,
    source: WeightsSource | None = None,
) -> LoadedEncoder:
    """Build ``name`` and load its weights (strict), on CPU in eval mode.

    ``source``: a :func:`resolve_weights` result already computed (the file is then not hashed again).
    """
    spec = get_spec(name)
    if source is None:
        source = resolve_weights(name, weights, allow_random=allow_random)
    backbone = build_model(name)
    if source.path is not None:
        state = prepare_state_dict(name, read_state_dict(source.path), backbone, source.path)
        check_state_dict(backbone, state, source.path, name)
        backbone.load_state_dict(state, strict=True)
        log.info("encoder %s: %s weights %s (%s)", name, source.origin, source.path, source.digest)
    else:
        log.info("encoder %s: %s (%s)", name, source.origin, source.digest)
        if source.origin == "random" and spec.needs_weights:
            log.warning("encoder %s runs with RANDOM weights: for speed measurements only", name)
    model = pooled_model(name, backbone)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return LoadedEncoder(name=name, model=model, spec=spec, source=source, backbone=backbone)
