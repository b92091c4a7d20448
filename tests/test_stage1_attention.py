"""Stage 1 attention (``attention.h5``): the contract round trip, the instance provenance it records (files,
coords, TMA cores), and that it is the attention of the model's own forward over the full bag, summing to 1."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from haf.artifacts.attention import BagAttention, attention_index, read_attention, write_attention
from haf.artifacts.bags import trident_coords_attrs, write_bag
from haf.artifacts.files import write_tsv
from haf.artifacts.tma_index import write_tma_index
from haf.errors import HafInputError
from haf.mil.bags import BagStore
from haf.mil.clam import GatedAttentionMIL
from haf.mil.train import attend_bags, bag_attention, embed_bags

torch.set_num_threads(1)
DIM = 12


def _softmax(rng: np.random.Generator, n: int) -> np.ndarray:
    s = rng.normal(size=n)
    e = np.exp(s - s.max())
    return (e / e.sum()).astype(np.float32)


def _bag(pid: str, n: int, rng: np.random.Generator, **over) -> BagAttention:
    fields = dict(
        patient_id=pid,
        part="test",
        risk=float(rng.normal()),
        attention=_softmax(rng, n),
        coords=rng.integers(0, 5000, size=(n, 2)),
        source=np.zeros(n, dtype=np.int32),
        core=np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(np.int32),
        source_files=(f"tma/{pid}.h5",),
        source_modality=("tma",),
        source_patch_size=(448.0,),
        core_files=("a.png", "b.png"),
        core_images=("/data/a.png", ""),
    )
    return BagAttention(**{**fields, **over})


def test_attention_file_round_trip_is_byte_stable_and_checked(tmp_path):
    rng = np.random.default_rng(0)
    bags = [
        _bag("007", 9, rng),
        _bag("002", 1, rng, part="train", core_files=(), core_images=(), core=[-1]),
        _bag("010", 1500, rng, part="val"),  # stored compressed (>= COMPRESS_FROM instances)
    ]
    assert write_attention(tmp_path / "a.h5", bags, pmod="tma", fold=3) == 3
    back = read_attention(tmp_path / "a.h5")
    assert (back.pmod, back.fold, back.method) == ("tma", 3, "tma_clam")
    assert list(back.patients) == ["002", "007", "010"]  # patient-id order
    for bag in bags:
        got = back.patients[bag.patient_id]
        for name in (
            "patient_id",
            "part",
            "risk",
            "source_files",
            "source_modality",
            "core_files",
            "core_images",
        ):
            assert getattr(got, name) == getattr(bag, name), name
        for name in ("attention", "coords", "source", "core"):
            np.testing.assert_array_equal(getattr(got, name), getattr(bag, name), err_msg=name)
        assert got.source_patch_size == bag.source_patch_size
    index = attention_index(tmp_path / "a.h5")
    assert index.to_dict("records") == [
        dict(patient_id="002", part="train", risk=bags[1].risk, n_instances=1),
        dict(patient_id="007", part="test", risk=bags[0].risk, n_instances=9),
        dict(patient_id="010", part="val", risk=bags[2].risk, n_instances=1500),
    ]
    with h5py.File(tmp_path / "a.h5") as handle:
        assert handle["patients/010/coords"].compression == "gzip"
        assert handle["patients/007/coords"].compression is None
    assert list(read_attention(tmp_path / "a.h5", ["007"]).patients) == ["007"]
    # byte-stable: the same attention a second later (HDF5 time fields have 1 s resolution), other order
    time.sleep(1.1)
    write_attention(tmp_path / "b.h5", bags[::-1], pmod="tma", fold=3)
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()

    with pytest.raises(HafInputError, match=r"no attention for patient\(s\) 404"):
        read_attention(tmp_path / "a.h5", ["007", "404"])
    with pytest.raises(HafInputError, match="sums to 0.9"):
        write_attention(
            tmp_path / "c.h5", [_bag("1", 4, rng, attention=np.full(4, 0.225))], pmod="tma", fold=0
        )
    with pytest.raises(HafInputError, match=r"patient 1.*field 'core'"):
        write_attention(tmp_path / "c.h5", [_bag("1", 4, rng, core=[0, 1, 2, 0])], pmod="tma", fold=0)
    with pytest.raises(HafInputError, match="without '/'"):
        write_attention(tmp_path / "c.h5", [_bag("a/b", 4, rng)], pmod="tma", fold=0)
    with pytest.raises(ValueError, match="patient 007 appears twice"):
        write_attention(tmp_path / "c.h5", [bags[0], bags[0]], pmod="tma", fold=0)
    assert not (tmp_path / "c.h5").exists()  # nothing half-written
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle.create_dataset("features", data=np.zeros((2, 2)))
    with pytest.raises(HafInputError, match="not a Stage 1 attention file"):
        read_attention(tmp_path / "other.h5")
    # a file edited so that a bag's attention no longer sums to 1 is refused on reading, naming the patient
    with h5py.File(tmp_path / "b.h5", "r+") as handle:
        handle["patients/007/attention"][0] += 0.5
    with pytest.raises(HafInputError, match="patient 007.*sums to"):
        read_attention(tmp_path / "b.h5")


@pytest.fixture()
def pooled(tmp_path):
    """Patient 001: a WSI slide (4 patches) and a TMA bag of 5 tiles from cores a (2), b (0), c (3); core b
    has no image file; patient 002: TMA only, a bag without per-core records."""
    rng = np.random.default_rng(1)
    (tmp_path / "cores").mkdir()
    for name in ("a", "c"):
        from PIL import Image

        Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "cores" / f"{name}.png")
    wsi_coords = np.array([[0, 0], [256, 0], [0, 256], [512, 512]])
    write_bag(tmp_path / "wsi" / "001.h5", rng.normal(size=(4, DIM)), wsi_coords)
    tma_coords = np.array([[0, 0], [448, 0], [0, 0], [448, 0], [0, 448]])
    write_bag(
        tmp_path / "tma" / "001.h5",
        rng.normal(size=(5, DIM)),
        tma_coords,
        {
            "core_files": np.array(["cores/a.png", "cores/b.png", "cores/c.png"], dtype=h5py.string_dtype()),
            "core_tiles": np.array([2, 0, 3]),
            "tile_px_core": 448.0,
        },
        trident_coords_attrs(224, 0.5, 0.25),  # patch_size_level0 = 448
    )
    write_bag(tmp_path / "tma" / "002.h5", rng.normal(size=(3, DIM)), np.arange(6).reshape(3, 2))
    manifest = tmp_path / "manifest.tsv"
    write_tsv(
        manifest,
        pd.DataFrame(
            dict(
                patient_id=["001", "002"],
                has_wsi=[1, 0],
                has_tma=[1, 1],
                wsi_files=[str(tmp_path / "wsi" / "001.h5"), ""],
                tma_files=["cores/a.png;cores/b.png;cores/c.png", "x.png"],
                n_modalities=[2, 1],
            )
        ),
    )
    index = tmp_path / "index.tsv"
    write_tma_index(
        index,
        [
            dict(patient_id=p, h5_path=str(tmp_path / "tma" / f"{p}.h5"), n_cores=c, n_tiles=n, n_empty_cores=e,
                 status="ok", n_failed_cores=0)
            for p, c, n, e in (("001", 3, 5, 1), ("002", 1, 3, 0))
        ],
    )  # fmt: skip
    return dict(root=tmp_path, manifest=manifest, index=index, wsi_coords=wsi_coords, tma_coords=tma_coords)


def test_bag_attention_records_each_instances_file_coords_and_core(pooled):
    store = BagStore.for_pathology_model(
        "wsi_tma", manifest=pooled["manifest"], tma_index=pooled["index"], wsi_dim=DIM
    )
    a = _softmax(np.random.default_rng(2), 9)
    bag = bag_attention(store, "001", a, part="val", risk=0.3, manifest=pooled["manifest"])
    root = pooled["root"]
    assert bag.source_files == (str(root / "wsi" / "001.h5"), str(root / "tma" / "001.h5"))
    assert bag.source_modality == ("wsi", "tma")
    assert np.isnan(bag.source_patch_size[0]) and bag.source_patch_size[1] == 448.0
    np.testing.assert_array_equal(bag.source, [0, 0, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(bag.coords, np.vstack([pooled["wsi_coords"], pooled["tma_coords"]]))
    # tiles 0-1 from core a, 2-4 from core c (core b gave none); WSI patches have no core
    np.testing.assert_array_equal(bag.core, [-1, -1, -1, -1, 0, 0, 2, 2, 2])
    assert bag.core_files == ("cores/a.png", "cores/b.png", "cores/c.png")
    assert bag.core_images == (str(root / "cores" / "a.png"), "", str(root / "cores" / "c.png"))
    np.testing.assert_array_equal(bag.attention, a)
    tma = BagStore.for_pathology_model("tma", tma_index=pooled["index"])
    plain = bag_attention(tma, "002", _softmax(np.random.default_rng(3), 3), part="test", risk=0.0)
    assert plain.core_files == () and (plain.core == -1).all() and np.isnan(plain.source_patch_size[0])
    with pytest.raises(ValueError, match="2 attention weights for a bag of 3"):
        bag_attention(tma, "002", np.array([0.5, 0.5]), part="test", risk=0.0)


def test_saved_attention_is_the_forward_attention_and_sums_to_one(pooled, tmp_path):
    store = BagStore.for_pathology_model(
        "wsi_tma", manifest=pooled["manifest"], tma_index=pooled["index"], wsi_dim=DIM
    )
    torch.manual_seed(0)
    model = GatedAttentionMIL(DIM, d1=16, d2=8, dropout=0.25).train()  # attend_bags must switch to eval
    pids = ["001", "002", "999"]  # 999 has no bag
    z, logit, attention = attend_bags(model, store, pids, torch.device("cpu"))
    assert model.training and attention[2] is None
    z_ref, logit_ref = embed_bags(model, store, pids, torch.device("cpu"))
    np.testing.assert_array_equal(z, z_ref)
    np.testing.assert_array_equal(logit, logit_ref)
    path = tmp_path / "attention.h5"
    write_attention(
        path,
        [bag_attention(store, p, attention[i], part="test", risk=logit[i]) for i, p in enumerate(pids[:2])],
        pmod="wsi_tma",
        fold=0,
    )
    saved = read_attention(path).patients
    model.eval()
    with torch.no_grad():
        for i, pid in enumerate(pids[:2]):
            out = model(store.bag(pid))  # the model's own forward of the one full bag
            got = saved[pid].attention
            assert got.shape == (store.n_instances(pid),)
            np.testing.assert_allclose(got, out.attention[0].numpy(), rtol=0, atol=1e-7)
            assert abs(float(got.astype(np.float64).sum()) - 1.0) < 1e-6
            # and it is the attention that pooled the saved embedding: z = sum_i a_i h_i
            np.testing.assert_allclose(got @ out.h[0].numpy(), z[i], rtol=0, atol=1e-6)
            assert saved[pid].risk == pytest.approx(float(out.logit[0]), abs=1e-6)
