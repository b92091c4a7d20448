"""The encoder registry: the one place that names every tile encoder and how its weights load.

* ``uni`` (1024-d): timm ``vit_large_patch16_224`` (ViT-L/16, LayerScale 1e-5), ImageNet normalisation;
  weights from a local file or the hub repo ``MahmoodLab/UNI`` (``pytorch_model.bin``).
* ``uni2-h`` (1536-d): timm ``vit_giant_patch14_224`` with the UNI2-h model card's kwargs (ViT-H/14,
  8 register tokens, SwiGLU); weights from a local file or ``MahmoodLab/UNI2-h``.
* ``tiny-vit-test`` (64-d): a 2-block timm ViT/16 for TESTS and benchmarks only; seeded random init
  (or a local file).
* ``demo-texture`` (1024-d): weight-free colour/texture statistics for the SYNTHETIC demo cores only
  (:mod:`haf.extract.texture`); 1024-d so the demo's TMA bags pool with its 1024-d WSI bags.

Weights. A local file (config ``extract.weights``: a ``torch.save`` state dict like UNI's ``pytorch_model.bin``) is
loaded strictly: the error names the missing and unexpected keys and the shape mismatches, so a
checkpoint of another architecture is refused with a message saying so. With no local file the hub
encoders download ``pytorch_model.bin`` through ``huggingface_hub`` (gated repositories: the token comes
from the environment, ``HF_TOKEN``, and is never logged); offline and without a file, asking for them
fails with one message naming both ways to provide the weights.

The weights digest (``sha256:<hex>`` of the file, or a description of a random/weight-free encoder) goes
into every h5 the extraction writes, so features made with other weights are never mixed or resumed.

This module imports no torch at top level: :func:`encoder_dim` is cheap and usable from any env.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from haf.errors import HafConfigError, HafInputError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _uni_kwargs() -> dict[str, Any]:
    # mahmoodlab/UNI README ("Downloading weights + Creating model") and uni/get_encoder/get_encoder.py
    return {
        "img_size": 224,
        "patch_size": 16,
        "init_values": 1e-5,
        "num_classes": 0,
        "dynamic_img_size": True,
    }


def _uni2h_kwargs() -> dict[str, Any]:
    # The UNI2-h model card (https://huggingface.co/MahmoodLab/UNI2-h, "timm_kwargs", the same block in
    # the mahmoodlab/UNI README): timm.create_model('vit_giant_patch14_224', pretrained=False, **kwargs).
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
    dim: int
    description: str
    kind: str  # "timm" | "texture"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    timm_model: str | None = None
    timm_kwargs: Callable[[], dict[str, Any]] | None = field(default=None, repr=False)
    patch_size: int = 1  # tiles must be a multiple of this many pixels
    hub_repo: str | None = None
    hub_file: str | None = None
    needs_weights: bool = False  # True: random weights only on explicit request (benchmarks)
    init_seed: int = 0  # seeded random init (tests, benchmarks)


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
            hub_repo="MahmoodLab/UNI",
            hub_file="pytorch_model.bin",
            needs_weights=True,
        ),
        EncoderSpec(
            name="uni2-h",
            dim=1536,
            description="UNI2-h (ViT-H/14, 8 register tokens), timm vit_giant_patch14_224 with the model card's kwargs",
            kind="timm",
            timm_model="vit_giant_patch14_224",
            timm_kwargs=_uni2h_kwargs,
            patch_size=14,
            hub_repo="MahmoodLab/UNI2-h",
            hub_file="pytorch_model.bin",
            needs_weights=True,
        ),
        EncoderSpec(
            name="tiny-vit-test",
            dim=64,
            description="TEST/BENCHMARK encoder: a 2-block, 64-d timm ViT/16 with seeded random weights",
            kind="timm",
            timm_model="vit_tiny_patch16_224",
            timm_kwargs=_tiny_kwargs,
            patch_size=16,
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
        ),
    )
}


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
    """ViT encoders need tiles that are a multiple of their patch size (dynamic position embedding)."""
    spec = get_spec(name)
    if tile_px % spec.patch_size:
        raise HafConfigError(
            f"extract.tile_px = {tile_px} is not a multiple of {spec.name}'s patch size {spec.patch_size} "
            f"(e.g. {spec.patch_size * max(1, round(tile_px / spec.patch_size))})"
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

    return f"random-init:{spec.timm_model}:seed={spec.init_seed}:torch={torch.__version__}:timm={timm.__version__}"


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


def build_model(name: str, device: str | None = None):
    """The encoder's architecture with its default init (seeded for the random-weight encoders).

    ``device='meta'`` builds shapes only (no memory, instant): used to compare architectures.
    """
    import torch

    spec = get_spec(name)
    if spec.kind == "texture":
        from haf.extract.texture import TextureEncoder

        return TextureEncoder()
    import timm

    kwargs = spec.timm_kwargs() if spec.timm_kwargs else {}
    if device == "meta":
        with torch.device("meta"):
            return timm.create_model(spec.timm_model, pretrained=False, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        return timm.create_model(spec.timm_model, pretrained=False, **kwargs)


def read_state_dict(path: str | Path) -> dict:
    """A checkpoint's state dict (``torch.load`` with ``weights_only``: no code runs); errors name the file."""
    path = Path(path)
    import torch

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
    raise HafInputError(
        path,
        f"strict load into encoder {name!r} failed: {'; '.join(parts)} ({hint})",
        field="extract.weights",
    )


@dataclass
class LoadedEncoder:
    """A ready-to-run encoder (eval mode, CPU) with the facts the h5 attributes record."""

    name: str
    model: Any
    spec: EncoderSpec
    source: WeightsSource

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
    model = build_model(name)
    if source.path is not None:
        state = read_state_dict(source.path)
        check_state_dict(model, state, source.path, name)
        model.load_state_dict(state, strict=True)
        log.info("encoder %s: %s weights %s (%s)", name, source.origin, source.path, source.digest)
    else:
        log.info("encoder %s: %s (%s)", name, source.origin, source.digest)
        if source.origin == "random" and spec.needs_weights:
            log.warning("encoder %s runs with RANDOM weights: for speed measurements only", name)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return LoadedEncoder(name=name, model=model, spec=spec, source=source)
