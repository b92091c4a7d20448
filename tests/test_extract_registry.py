"""Encoder registry: architectures equal timm's, strict local checkpoint loads, the no-weights message,
and the demo-texture encoder keeping the nuclear signal of H&E-like tiles.

ViT-L (UNI) is built for real once per session (~5 s on CPU); every other architecture check builds on
the meta device (shapes only, instant).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import yaml
from fakes.config import settings as config_settings
from fakes.extract import he_tile

from haf.errors import HafConfigError, HafInputError
from haf.extract import registry
from haf.extract.registry import (
    ENCODERS,
    check_state_dict,
    encoder_dim,
    file_digest,
    load_encoder,
    resolve_weights,
)
from haf.extract.texture import DIM, TextureEncoder

timm = pytest.importorskip("timm")


@pytest.fixture(scope="session")
def uni_model():
    torch.set_num_threads(1)
    return registry.build_model("uni")


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_uni_architecture_equals_a_fresh_timm_vit_large(uni_model):
    with torch.device("meta"):
        reference = timm.create_model(
            "vit_large_patch16_224",
            pretrained=False,
            img_size=224,
            patch_size=16,
            init_values=1e-5,
            num_classes=0,
            dynamic_img_size=True,
        )
    assert _shapes(uni_model) == _shapes(reference)
    assert [n for n, _ in uni_model.named_parameters()] == [n for n, _ in reference.named_parameters()]
    shapes = _shapes(uni_model)
    assert shapes["pos_embed"] == (1, 197, 1024) and shapes["patch_embed.proj.weight"] == (1024, 3, 16, 16)
    assert "blocks.23.ls1.gamma" in shapes and "blocks.24.ls1.gamma" not in shapes  # 24 blocks, LayerScale
    assert "head.weight" not in shapes  # num_classes=0
    assert encoder_dim("uni") == uni_model.num_features == 1024
    assert ENCODERS["uni"].mean == (0.485, 0.456, 0.406) and ENCODERS["uni"].std == (0.229, 0.224, 0.225)
    # dynamic_img_size: a 64-px tile (a multiple of 16) goes through and gives 1024 values
    with torch.inference_mode():
        assert uni_model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 1024)


def test_uni2h_architecture_follows_the_model_card():
    built = registry.build_model("uni2-h", device="meta")
    with torch.device("meta"):
        reference = timm.create_model(
            "vit_giant_patch14_224",
            pretrained=False,
            img_size=224,
            patch_size=14,
            depth=24,
            num_heads=24,
            init_values=1e-5,
            embed_dim=1536,
            mlp_ratio=2.66667 * 2,
            num_classes=0,
            no_embed_class=True,
            mlp_layer=timm.layers.SwiGLUPacked,
            act_layer=torch.nn.SiLU,
            reg_tokens=8,
            dynamic_img_size=True,
        )
    assert _shapes(built) == _shapes(reference)
    shapes = _shapes(built)
    assert shapes["reg_token"] == (1, 8, 1536) and shapes["patch_embed.proj.weight"] == (1536, 3, 14, 14)
    assert encoder_dim("uni2-h") == built.num_features == 1536


def test_registry_names_dims_and_schema_enum(repo_root):
    assert set(ENCODERS) == {
        "uni",
        "uni2-h",
        "conch-v1.5",
        "virchow2",
        "virchow2-cls",
        "h-optimus-0",
        "h-optimus-1",
        "prov-gigapath",
        "phikon-v2",
        "tiny-vit-test",
        "demo-texture",
    }
    assert encoder_dim("demo-texture") == DIM == 1024
    assert encoder_dim("tiny-vit-test") == registry.build_model("tiny-vit-test", device="meta").num_features
    with pytest.raises(HafConfigError, match="unknown encoder 'unii'.*uni2-h"):
        encoder_dim("unii")
    schema = yaml.safe_load((repo_root / "config" / "schema.yaml").read_text())
    enum = schema["properties"]["extract"]["properties"]["encoder"]["enum"]
    assert sorted(enum) == sorted(ENCODERS) and len(enum) == len(set(enum))
    registry.check_tile_px("uni", 224)
    with pytest.raises(
        HafConfigError, match="extract.tile_px = 200 is not a multiple of uni's patch size 16"
    ):
        registry.check_tile_px("uni", 200)


# ---------------------------------------------------------------------------------------------
# local checkpoints


def _perturbed_tiny_state() -> dict[str, torch.Tensor]:
    model = registry.build_model("tiny-vit-test")
    return {k: v + 0.5 for k, v in model.state_dict().items()}


def test_local_checkpoint_loads_strictly_and_is_digested(tmp_path):
    state = _perturbed_tiny_state()
    path = tmp_path / "tiny.bin"
    torch.save(state, path)
    loaded = load_encoder("tiny-vit-test", weights=path)
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert loaded.digest == file_digest(path) and loaded.digest.startswith("sha256:")
    assert loaded.source.origin == "local"
    random_init = load_encoder("tiny-vit-test")
    assert random_init.digest.startswith("random-init:vit_tiny_patch16_224:seed=0")
    assert random_init.digest != loaded.digest
    # the seeded random init is reproducible (tests and benchmarks compare runs)
    again = load_encoder("tiny-vit-test")
    for key, value in again.model.state_dict().items():
        assert torch.equal(value, random_init.model.state_dict()[key]), key
    # a wrapped checkpoint ({"state_dict": ...}) loads too
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pt")
    assert torch.equal(
        load_encoder("tiny-vit-test", weights=tmp_path / "wrapped.pt").model.state_dict()["cls_token"],
        state["cls_token"],
    )


def test_strict_load_names_missing_and_unexpected_keys(tmp_path):
    state = _perturbed_tiny_state()
    del state["blocks.1.mlp.fc2.bias"]
    state["blocks.9.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.bin"
    torch.save(state, path)
    with pytest.raises(HafInputError) as err:
        load_encoder("tiny-vit-test", weights=path)
    text = str(err.value)
    assert str(path) in text
    assert "1 missing key(s): blocks.1.mlp.fc2.bias" in text
    assert "1 unexpected key(s): blocks.9.extra.weight" in text


def test_weights_of_another_architecture_are_refused(tmp_path, uni_model):
    tiny = registry.build_model("tiny-vit-test").state_dict()
    path = tmp_path / "tiny_as_uni.bin"
    torch.save(tiny, path)
    with pytest.raises(HafInputError) as err:
        check_state_dict(uni_model, torch.load(path, weights_only=True), path, "uni")
    text = str(err.value)
    assert "shape mismatch" in text and "pos_embed (file (1, 197, 64), model (1, 197, 1024))" in text
    assert "missing key(s): blocks.2." in text  # ViT-L has 24 blocks, the tiny one 2
    assert "another architecture" in text and "UNI" in text
    # the same refusal through the public loader (small models only: no second ViT-L build)
    other = timm.create_model(
        "vit_tiny_patch16_224", img_size=224, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=0
    )
    torch.save(other.state_dict(), tmp_path / "other.bin")
    with pytest.raises(HafInputError, match="another architecture"):
        load_encoder("tiny-vit-test", weights=tmp_path / "other.bin")


def test_unloadable_and_missing_weights_files(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(HafInputError, match="junk.bin: cannot load as a PyTorch checkpoint"):
        load_encoder("tiny-vit-test", weights=junk)
    with pytest.raises(HafConfigError, match="extract.weights: file not found"):
        resolve_weights("uni", tmp_path / "nope.bin")
    with pytest.raises(HafConfigError, match="weight-free"):
        resolve_weights("demo-texture", junk)


# ---------------------------------------------------------------------------------------------
# the hub


def test_offline_without_weights_gives_one_message_with_both_ways(tmp_path, monkeypatch, caplog):
    hub = pytest.importorskip("huggingface_hub")
    secret = "hf_SECRETtoken1234567890"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HafConfigError) as err:
        resolve_weights("uni")
    text = str(err.value)
    assert "extract.weights" in text and "HF_TOKEN" in text  # way 1 and way 2
    assert "MahmoodLab/UNI" in text and "pytorch_model.bin" in text
    assert "LocalEntryNotFoundError" in text
    assert secret not in text and secret not in caplog.text
    assert "HF_TOKEN is set" in caplog.text
    # random weights on request (benchmarks) do not touch the hub
    assert resolve_weights("uni", allow_random=True).origin == "random"


def test_hub_errors_never_show_the_token(monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    secret = "hf_ANOTHERsecret987654321"
    monkeypatch.setenv("HF_TOKEN", secret)
    seen = {}

    def fake_download(repo_id, filename, token=None, **_):
        seen.update(repo_id=repo_id, filename=filename, token=token)
        raise RuntimeError(f"401 Client Error for token {token}: gated repo")

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    with pytest.raises(HafConfigError) as err:
        resolve_weights("uni2-h")
    assert seen == {"repo_id": "MahmoodLab/UNI2-h", "filename": "pytorch_model.bin", "token": secret}
    assert secret not in str(err.value) and "<HF_TOKEN>" in str(err.value)


def test_hub_download_is_digested(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    fake = tmp_path / "pytorch_model.bin"
    torch.save(_perturbed_tiny_state(), fake)
    monkeypatch.setattr(hub, "hf_hub_download", lambda **kw: str(fake))
    source = resolve_weights("uni")
    assert source.origin == "hub" and source.path == fake and source.digest == file_digest(fake)


# ---------------------------------------------------------------------------------------------
# demo-texture


def _tiles(rng, n, density, darkness, px=64):
    return (
        torch.tensor(
            np.stack([he_tile(rng, px, density=density, darkness=darkness, tissue=2.0) for _ in range(n)])
        )
        .permute(0, 3, 1, 2)
        .float()
        / 255.0
    )


def test_demo_texture_separates_dense_dark_nuclei_from_sparse_ones():
    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    enc = TextureEncoder()
    sparse = enc(_tiles(rng, 32, density=0.5, darkness=0.6))
    dense = enc(_tiles(rng, 32, density=2.5, darkness=0.9))
    assert sparse.shape == (32, 1024) and torch.isfinite(sparse).all()
    # nearest centroid, centroids from one half, accuracy on the other half
    cs, cd = sparse[:16].mean(0), dense[:16].mean(0)
    held = torch.cat([sparse[16:], dense[16:]])
    truth = torch.tensor([0] * 16 + [1] * 16)
    pred = ((held - cd).norm(dim=1) < (held - cs).norm(dim=1)).long()
    assert (pred == truth).float().mean() >= 0.9
    # and the centroids are far apart compared with the spread inside a group
    between = (cs - cd).pow(2).sum()
    within = (sparse.var(0).sum() + dense.var(0).sum()) / 2
    assert between > within
    # monotone in density: more nuclei -> more haematoxylin above the high thresholds (scale 1)
    mid = enc(_tiles(rng, 16, density=1.5, darkness=0.75))
    h_block = slice(3 * 16 + 8, 4 * 16)  # map 3 = haematoxylin, upper half of its thresholds

    def h_high(x):
        return x[:, h_block].mean().item()

    assert h_high(sparse) < h_high(mid) < h_high(dense)


def test_demo_texture_tracks_the_demo_cores_tma_view():
    from haf.demo.tma import render_core
    from haf.extract.tiling import TilingSettings, tile_core

    torch.set_num_threads(1)
    rng = np.random.default_rng(5)
    enc = TextureEncoder()
    settings = TilingSettings.from_section(
        config_settings("extract", tile_px=64, tile_mpp=0.25, core_mpp=0.25)
    )
    views = np.tile(np.linspace(-2, 2, 10), 2)
    feats = []
    for view in views:
        core = torch.from_numpy(render_core(rng, 256, float(view))).permute(2, 0, 1).contiguous()
        tiles = tile_core(core, settings)
        assert tiles.n >= 6
        feats.append(enc(tiles.tiles.float() / 255.0).mean(0).numpy())
    feats = np.stack(feats)
    train = np.arange(len(views)) % 2 == 0
    direction = feats[train][views[train] > 0].mean(0) - feats[train][views[train] < 0].mean(0)
    held_out = np.corrcoef(feats[~train] @ direction, views[~train])[0, 1]
    assert held_out > 0.8, held_out


def test_demo_texture_is_deterministic_and_ignores_autocast():
    rng = np.random.default_rng(3)
    x = _tiles(rng, 4, 1.0, 0.7, px=32)
    enc = TextureEncoder()
    a = enc(x)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        b = enc(x)
    assert b.dtype == torch.float32 and torch.equal(a, b)
    assert torch.equal(a, TextureEncoder()(x))
    # chunking does not change the result
    assert torch.allclose(a, TextureEncoder(max_values_per_chunk=1)(x), atol=1e-5)
    with pytest.raises(ValueError, match="at least 8 px"):
        enc(torch.rand(1, 3, 4, 4))
