"""Every registry encoder's architecture against its published facts, pooling, and the weight formats.

The large architectures (up to 1.1B parameters) are built on the meta device (shapes only, no memory)
and run a meta forward for the output width; real CPU forwards use the same configuration with one or
two blocks. Weights: ``.bin`` and ``.safetensors`` of small models load strictly, wrong key sets fail
naming the file and the keys, Phikon-v2's Hugging Face DINOv2 names are mapped onto timm and checked
against an independent re-implementation of the HF layer, CONCH v1.5's position embedding is resampled.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from haf.errors import HafInputError
from haf.extract import registry
from haf.extract.architectures import HF_DINOV2_IGNORED, hf_dinov2_to_timm
from haf.extract.registry import ENCODERS, card_param_count, load_encoder

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

NETWORKS = sorted(n for n, s in ENCODERS.items() if s.kind != "texture")

# Key tensors typed out from the model cards' kwargs (closed forms: width, patch, mlp_ratio x width,
# registers, grid = (input / patch)^2 [+ 1 CLS slot unless no_embed_class]).
KEY_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "uni": {
        "patch_embed.proj.weight": (1024, 3, 16, 16),
        "pos_embed": (1, 197, 1024),
        "blocks.23.mlp.fc1.weight": (4096, 1024),
        "blocks.0.ls1.gamma": (1024,),
    },
    "uni2-h": {
        "patch_embed.proj.weight": (1536, 3, 14, 14),
        "pos_embed": (1, 256, 1536),  # no_embed_class: 16 x 16 patches only
        "reg_token": (1, 8, 1536),
        "blocks.23.mlp.fc1.weight": (8192, 1536),  # SwiGLU packed: int(1536 * 5.33334)
        "blocks.23.mlp.fc2.weight": (1536, 4096),
    },
    "conch-v1.5": {
        "trunk.patch_embed.proj.weight": (1024, 3, 16, 16),
        "trunk.pos_embed": (1, 785, 1024),  # 448 px: 28 x 28 + CLS
        "trunk.blocks.23.ls2.gamma": (1024,),
        "attn_pool_contrast.query": (1, 768),
        "attn_pool_contrast.to_kv.weight": (1536, 1024),
        "attn_pool_contrast.to_q.weight": (768, 768),
        "ln_contrast.weight": (768,),
    },
    "virchow2": {
        "patch_embed.proj.weight": (1280, 3, 14, 14),
        "pos_embed": (1, 261, 1280),  # 256 patches + CLS + 4 registers
        "reg_token": (1, 4, 1280),
        "blocks.31.mlp.fc1.weight": (6832, 1280),  # int(1280 * 5.3375)
        "blocks.31.mlp.fc2.weight": (1280, 3416),
    },
    "h-optimus-0": {
        "patch_embed.proj.weight": (1536, 3, 14, 14),
        "pos_embed": (1, 256, 1536),
        "reg_token": (1, 4, 1536),
        "blocks.39.mlp.fc1.weight": (8192, 1536),
    },
    "prov-gigapath": {
        "patch_embed.proj.weight": (1536, 3, 16, 16),
        "pos_embed": (1, 197, 1536),
        "blocks.39.mlp.fc1.weight": (8192, 1536),
        "blocks.39.ls1.gamma": (1536,),
    },
    "phikon-v2": {
        "patch_embed.proj.weight": (1024, 3, 16, 16),
        "pos_embed": (1, 197, 1024),
        "blocks.23.attn.qkv.weight": (3072, 1024),
    },
    "tiny-vit-test": {"patch_embed.proj.weight": (64, 3, 16, 16), "blocks.1.mlp.fc1.weight": (256, 64)},
}
KEY_SHAPES["virchow2-cls"] = KEY_SHAPES["virchow2"]
KEY_SHAPES["h-optimus-1"] = KEY_SHAPES["h-optimus-0"]


def _trunk(model):
    return getattr(model, "trunk", model)


@pytest.mark.parametrize("name", NETWORKS)
def test_architecture_matches_the_published_facts(name):
    spec = ENCODERS[name]
    facts = spec.facts
    assert facts is not None and facts.sources, f"{name}: no facts or no source"
    model = registry.build_model(name, device="meta")
    trunk = _trunk(model)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, shape in KEY_SHAPES[name].items():
        assert shapes.get(key) == shape, (name, key, shapes.get(key))
    prefix = "trunk." if hasattr(model, "trunk") else ""
    assert shapes[f"{prefix}patch_embed.proj.weight"] == (facts.width, 3, facts.patch_size, facts.patch_size)
    assert spec.patch_size == facts.patch_size
    assert len(trunk.blocks) == facts.depth
    assert f"{prefix}blocks.{facts.depth - 1}.norm1.weight" in shapes
    assert trunk.blocks[0].attn.num_heads == facts.heads
    if facts.registers:
        assert shapes[f"{prefix}reg_token"] == (1, facts.registers, facts.width)
    else:
        assert f"{prefix}reg_token" not in shapes
    assert shapes[f"{prefix}blocks.0.mlp.fc1.weight"] == (facts.mlp_hidden, facts.width)
    mlp = type(trunk.blocks[0].mlp).__name__
    assert (mlp == "GluMlp") == (facts.mlp == "swiglu"), (name, mlp)
    if facts.layerscale is None:
        assert f"{prefix}blocks.0.ls1.gamma" not in shapes
    else:
        assert f"{prefix}blocks.0.ls1.gamma" in shapes
    assert not any(k.startswith(("head.", f"{prefix}head.")) and shapes[k] for k in shapes)  # no classifier
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == facts.params, (name, n_params)
    if facts.card_params:
        value, half_digit = card_param_count(facts.card_params)
        assert abs(n_params - value) <= max(half_digit, 0.01 * value), (name, n_params, facts.card_params)
    # output width on the meta device, at the native input size
    px = spec.input_px or 2 * spec.patch_size
    with torch.device("meta"):
        out = registry.pooled_model(name, model)(torch.empty(2, 3, px, px))
    assert tuple(out.shape) == (2, spec.dim), (name, out.shape)
    assert spec.dim == {"cls": facts.width, "cls+mean": 2 * facts.width, "attention": 768}[spec.pooling]


def test_card_parameter_counts_are_read_with_their_rounding():
    assert card_param_count("632M") == (632e6, 0.5e6)
    assert card_param_count("1.1B") == pytest.approx((1.1e9, 0.05e9))
    with pytest.raises(ValueError, match="632 million"):
        card_param_count("632 million")


@pytest.mark.parametrize("name", [n for n in NETWORKS if n != "tiny-vit-test"])
def test_depth_reduced_variant_runs_on_cpu_with_the_right_width(name):
    torch.set_num_threads(1)
    spec = ENCODERS[name]
    backbone = registry.build_model(name, depth=1)
    assert len(_trunk(backbone).blocks) == 1
    model = registry.pooled_model(name, backbone).eval()
    px = 2 * spec.patch_size  # dynamic_img_size: a 2 x 2 grid of patches
    with torch.inference_mode():
        out = model(torch.rand(2, 3, px, px))
    assert out.shape == (2, spec.dim) and torch.isfinite(out).all()


def test_virchow2_pools_cls_and_the_mean_of_patch_tokens_without_registers():
    torch.set_num_threads(1)
    backbone = registry.build_model("virchow2", depth=1).eval()
    model = registry.pooled_model("virchow2", backbone)
    x = torch.rand(2, 3, 56, 56)  # 4 x 4 patches
    with torch.inference_mode():
        tokens = backbone.forward_features(x)
        out = model(x)
    assert tokens.shape == (2, 1 + 4 + 16, 1280)
    torch.testing.assert_close(out[:, :1280], tokens[:, 0])
    torch.testing.assert_close(out[:, 1280:], tokens[:, 5:].mean(1))  # model card: output[:, 5:]
    assert not torch.allclose(out[:, 1280:], tokens[:, 1:].mean(1), atol=1e-4)  # registers are not patches
    # virchow2-cls: the same weights, the CLS token only
    cls_model = registry.build_model("virchow2-cls", depth=1).eval()
    cls_model.load_state_dict(backbone.state_dict(), strict=True)
    with torch.inference_mode():
        torch.testing.assert_close(cls_model(x), tokens[:, 0])


def _reference_attention_pool(pool, tokens: torch.Tensor) -> torch.Tensor:
    """CONCH's attentional pooler written head by head (loops, no reshape tricks)."""
    ln_k = torch.nn.functional.layer_norm(tokens, (tokens.shape[-1],), pool.ln_k.weight, pool.ln_k.bias)
    q = pool.to_q(torch.nn.functional.layer_norm(pool.query, (768,), pool.ln_q.weight, pool.ln_q.bias))[0]
    kv = ln_k @ pool.to_kv.weight.T
    k, v = kv[..., :768], kv[..., 768:]
    heads = []
    for h in range(8):
        sl = slice(96 * h, 96 * (h + 1))
        scores = (k[:, :, sl] @ q[sl]) / 96**0.5  # (B, N)
        weights = torch.softmax(scores, dim=1)
        heads.append((weights.unsqueeze(-1) * v[:, :, sl]).sum(1))
    return torch.cat(heads, dim=-1) @ pool.to_out.weight.T


def test_conch_vision_tower_pools_with_one_query_attention():
    torch.set_num_threads(1)
    tower = registry.build_model("conch-v1.5", depth=1).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        tokens = tower.trunk.forward_features(x)
        out = tower(x)
        pooled = _reference_attention_pool(tower.attn_pool_contrast, tokens)
        expected = torch.nn.functional.layer_norm(
            pooled, (768,), tower.ln_contrast.weight, tower.ln_contrast.bias
        )
    assert tokens.shape == (2, 5, 1024) and out.shape == (2, 768)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# weight files


def _tiny_state(offset: float = 0.5) -> dict[str, torch.Tensor]:
    return {k: v + offset for k, v in registry.build_model("tiny-vit-test").state_dict().items()}


@pytest.mark.parametrize("suffix", [".bin", ".pth", ".safetensors"])
def test_bin_pth_and_safetensors_load_strictly(tmp_path, suffix):
    state = _tiny_state()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    loaded = load_encoder("tiny-vit-test", weights=path)
    for key, value in loaded.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert loaded.digest == registry.file_digest(path)


def test_safetensors_with_a_wrong_key_set_names_the_file_and_the_keys(tmp_path):
    state = _tiny_state()
    del state["blocks.0.attn.qkv.bias"]
    state["blocks.0.attn.qkv_extra.bias"] = torch.zeros(3)
    path = tmp_path / "bad.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(HafInputError) as err:
        load_encoder("tiny-vit-test", weights=path)
    text = str(err.value)
    assert str(path) in text and "extract.weights" in text
    assert "1 missing key(s): blocks.0.attn.qkv.bias" in text
    assert "1 unexpected key(s): blocks.0.attn.qkv_extra.bias" in text


def test_unreadable_safetensors_names_the_file(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(HafInputError, match="junk.safetensors: cannot load as a safetensors file"):
        load_encoder("tiny-vit-test", weights=junk)


# ---------------------------------------------------------------------------------------------
# Phikon-v2: Hugging Face DINOv2 names on a timm ViT

SMALL_DINOV2 = dict(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2, init_values=1e-5)


def _small_vit():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = timm.create_model("vit_large_patch16_224", pretrained=False, num_classes=0, **SMALL_DINOV2)
    with torch.no_grad():
        for p in model.parameters():  # LayerScale 1e-5 would hide the blocks; make them count
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _to_hf_names(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """timm -> transformers Dinov2Model names, typed out independently of the code under test."""
    hf = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.mask_token": torch.zeros(1, state["cls_token"].shape[-1]),
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    for i in range(depth):
        t, h = f"blocks.{i}.", f"encoder.layer.{i}."
        q, k, v = state[t + "attn.qkv.weight"].chunk(3)
        qb, kb, vb = state[t + "attn.qkv.bias"].chunk(3)
        hf.update(
            {
                h + "norm1.weight": state[t + "norm1.weight"],
                h + "norm1.bias": state[t + "norm1.bias"],
                h + "attention.attention.query.weight": q,
                h + "attention.attention.query.bias": qb,
                h + "attention.attention.key.weight": k,
                h + "attention.attention.key.bias": kb,
                h + "attention.attention.value.weight": v,
                h + "attention.attention.value.bias": vb,
                h + "attention.output.dense.weight": state[t + "attn.proj.weight"],
                h + "attention.output.dense.bias": state[t + "attn.proj.bias"],
                h + "layer_scale1.lambda1": state[t + "ls1.gamma"],
                h + "norm2.weight": state[t + "norm2.weight"],
                h + "norm2.bias": state[t + "norm2.bias"],
                h + "mlp.fc1.weight": state[t + "mlp.fc1.weight"],
                h + "mlp.fc1.bias": state[t + "mlp.fc1.bias"],
                h + "mlp.fc2.weight": state[t + "mlp.fc2.weight"],
                h + "mlp.fc2.bias": state[t + "mlp.fc2.bias"],
                h + "layer_scale2.lambda1": state[t + "ls2.gamma"],
            }
        )
    return {k: v.clone().contiguous() for k, v in hf.items()}


def _hf_dinov2_cls(w: dict[str, torch.Tensor], x: torch.Tensor, depth: int, heads: int) -> torch.Tensor:
    """transformers' Dinov2Model forward (CLS of last_hidden_state), from the HF-named tensors."""
    f = torch.nn.functional
    d = w["embeddings.cls_token"].shape[-1]
    patches = f.conv2d(
        x,
        w["embeddings.patch_embeddings.projection.weight"],
        w["embeddings.patch_embeddings.projection.bias"],
        stride=16,
    )
    h = torch.cat([w["embeddings.cls_token"].expand(len(x), -1, -1), patches.flatten(2).transpose(1, 2)], 1)
    h = h + w["embeddings.position_embeddings"]
    for i in range(depth):
        p = f"encoder.layer.{i}."
        y = f.layer_norm(h, (d,), w[p + "norm1.weight"], w[p + "norm1.bias"], eps=1e-6)

        def proj(name, y=y, p=p):
            z = y @ w[p + f"attention.attention.{name}.weight"].T + w[p + f"attention.attention.{name}.bias"]
            return z.reshape(len(x), -1, heads, d // heads).transpose(1, 2)

        att = torch.softmax(proj("query") @ proj("key").transpose(-1, -2) / (d // heads) ** 0.5, -1)
        y = (att @ proj("value")).transpose(1, 2).reshape(len(x), -1, d)
        y = y @ w[p + "attention.output.dense.weight"].T + w[p + "attention.output.dense.bias"]
        h = h + w[p + "layer_scale1.lambda1"] * y
        y = f.layer_norm(h, (d,), w[p + "norm2.weight"], w[p + "norm2.bias"], eps=1e-6)
        y = f.gelu(y @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"])
        y = y @ w[p + "mlp.fc2.weight"].T + w[p + "mlp.fc2.bias"]
        h = h + w[p + "layer_scale2.lambda1"] * y
    return f.layer_norm(h, (d,), w["layernorm.weight"], w["layernorm.bias"], eps=1e-6)[:, 0]


def test_hf_dinov2_names_map_onto_timm_and_compute_the_same_features(tmp_path):
    torch.set_num_threads(1)
    source = _small_vit()
    hf = _to_hf_names(source.state_dict(), depth=2)
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(hf, str(path))
    mapped = hf_dinov2_to_timm(registry.read_state_dict(path))
    assert set(mapped) == set(source.state_dict())  # mask_token dropped, nothing left over
    assert all(k not in mapped for k in HF_DINOV2_IGNORED)
    target = timm.create_model("vit_large_patch16_224", pretrained=False, num_classes=0, **SMALL_DINOV2)
    target.load_state_dict(mapped, strict=True)
    x = torch.rand(3, 3, 32, 32)
    with torch.inference_mode():
        reference = _hf_dinov2_cls(hf, x, depth=2, heads=2)
        torch.testing.assert_close(target.eval()(x), reference, rtol=1e-4, atol=1e-5)
        # a swapped key/value would not compute the same features
        swapped = dict(hf)
        for kind in ("weight", "bias"):
            a, b = (
                "encoder.layer.0.attention.attention.key." + kind,
                "encoder.layer.0.attention.attention.value." + kind,
            )
            swapped[a], swapped[b] = hf[b], hf[a]
        wrong = timm.create_model("vit_large_patch16_224", pretrained=False, num_classes=0, **SMALL_DINOV2)
        wrong.load_state_dict(hf_dinov2_to_timm(swapped), strict=True)
        assert not torch.allclose(wrong.eval()(x), reference, atol=1e-4)


@pytest.fixture
def small_phikon(monkeypatch):
    """phikon-v2's entry (key map and all) with a 2-block 32-d ViT, so load_encoder runs in a second."""
    spec = dataclasses.replace(
        ENCODERS["phikon-v2"],
        timm_kwargs=lambda: dict(SMALL_DINOV2, num_classes=0, dynamic_img_size=True),
        dim=32,
    )
    monkeypatch.setitem(ENCODERS, "phikon-v2", spec)
    return spec


def test_phikon_v2_loads_hf_safetensors_through_the_registry(tmp_path, small_phikon):
    source = _small_vit()
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(_to_hf_names(source.state_dict(), depth=2), str(path))
    loaded = load_encoder("phikon-v2", weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[key], value), key
    # a file missing one projection and with a stray key: named, with the mapping mentioned
    broken = _to_hf_names(source.state_dict(), depth=2)
    del broken["encoder.layer.1.attention.attention.value.bias"]
    broken["encoder.layer.1.extra.weight"] = torch.zeros(2)
    safetensors_torch.save_file(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(HafInputError) as err:
        load_encoder("phikon-v2", weights=tmp_path / "broken.safetensors")
    text = str(err.value)
    assert "broken.safetensors" in text and "missing key(s): blocks.1.attn.qkv.bias" in text
    assert "encoder.layer.1.extra.weight" in text and "encoder.layer.1.attention.attention.key.bias" in text
    assert "'hf-dinov2'" in text


# ---------------------------------------------------------------------------------------------
# CONCH v1.5: position embedding resampled to the native grid


@pytest.fixture
def small_conch(monkeypatch):
    base = ENCODERS["conch-v1.5"]
    spec = dataclasses.replace(
        base,
        timm_kwargs=lambda: dict(
            img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, init_values=1.0, num_classes=0
        ),
    )
    monkeypatch.setitem(ENCODERS, "conch-v1.5", spec)
    return spec


def test_conch_position_embedding_of_another_grid_is_resampled(tmp_path, small_conch, caplog):
    model = registry.build_model("conch-v1.5")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert state["trunk.pos_embed"].shape == (1, 17, 32)  # 4 x 4 + CLS at the native size
    state["trunk.pos_embed"] = torch.randn(1, 5, 32)  # saved at 2 x 2 + CLS
    torch.save(state, tmp_path / "pytorch_model_vision.bin")
    caplog.set_level(logging.INFO)
    loaded = load_encoder("conch-v1.5", weights=tmp_path / "pytorch_model_vision.bin")
    pos = loaded.backbone.state_dict()["trunk.pos_embed"]
    assert pos.shape == (1, 17, 32)
    torch.testing.assert_close(pos[:, 0], state["trunk.pos_embed"][:, 0])  # the CLS slot is kept
    assert "resampled from a 2x2 to the native 4x4 grid" in caplog.text
    # not a square grid: no resampling, the strict check names the shape
    state["trunk.pos_embed"] = torch.randn(1, 7, 32)
    torch.save(state, tmp_path / "odd.bin")
    with pytest.raises(HafInputError, match=r"trunk.pos_embed \(file \(1, 7, 32\), model \(1, 17, 32\)\)"):
        load_encoder("conch-v1.5", weights=tmp_path / "odd.bin")
    # other encoders never resample: uni-style strictness for tiny-vit-test
    tiny = _tiny_state()
    tiny["pos_embed"] = torch.zeros(1, 5, 64)
    torch.save(tiny, tmp_path / "tiny.bin")
    with pytest.raises(HafInputError, match="shape mismatch"):
        load_encoder("tiny-vit-test", weights=tmp_path / "tiny.bin")


def test_a_tile_size_other_than_the_native_input_is_logged(caplog):
    caplog.set_level(logging.WARNING)
    registry.check_tile_px("virchow2", 224)
    assert not caplog.text
    registry.check_tile_px("virchow2", 112)
    assert "virchow2 was trained on 224-px inputs" in caplog.text
