"""``extract.precomputed``: TRIDENT/CLAM feature files used instead of extraction.

Per-patient TRIDENT h5 (with its coords attributes), per-core h5 named by HANCOCK core names and
checked against the TMA maps, CLAM ``.pt`` tensors and a ``patient_id, file`` table all end as the
extraction's index and per-patient h5; a missing patient, a wrong width, bad values, a map
disagreement and files outside the cohort are each counted or refused with the file named.
"""

from __future__ import annotations

import logging
import os

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from fakes.config import load_config

from haf.artifacts.bags import read_bag, trident_coords_attrs
from haf.artifacts.tma_index import INDEX_COLUMNS
from haf.errors import HafConfigError, HafInputError
from haf.extract.precomputed import import_precomputed, read_feature_file

DIM = 64  # tiny-vit-test's registry width
SECTION = load_config(
    {
        "extract": {
            "encoder": "tiny-vit-test",
            "markers": ["HE"],
            "tile_px": 224,
            "tile_mpp": 0.5,
            "core_mpp": 0.25,
        }
    }
)["extract"]
TRIDENT_ATTRS = {
    "patch_size": 256,
    "patch_size_level0": 512,
    "level0_magnification": 40,
    "target_magnification": 20,
}


def core_name(marker: str, block: int, x: int, y: int, pid: str) -> str:
    return f"TumorCenter_{marker}_block{block}_x{x}_y{y}_patient{pid}"


def write_trident_h5(path, features, coords=None, attrs=TRIDENT_ATTRS):
    """A file as TRIDENT writes it: features (N, D) float32, coords (N, 2) with attributes on coords."""
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", data=features)
        if coords is not None:
            dset = handle.create_dataset("coords", data=coords)
            for key, value in (attrs or {}).items():
                dset.attrs[key] = value


def write_manifest(root, cores: dict[str, list[str]], others=("009",)):
    rows = [{"patient_id": pid, "tma_files": ";".join(c)} for pid, c in cores.items()]
    rows += [{"patient_id": pid, "tma_files": ""} for pid in others]
    path = root / "manifest.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def write_map(maps_dir, block: int, positions: dict[str, str]):
    maps_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"core": list(positions), "Case ID": list(positions.values())})
    frame.to_csv(maps_dir / f"TMA_Map_block{block}.csv", index=False)


def run(root, manifest, precomputed, **kw):
    section = dict(SECTION, precomputed=dict(SECTION["precomputed"], **precomputed))
    return import_precomputed(manifest, root / "out" / "index.tsv", root / "out" / "h5", section, **kw)


def index(root):
    return pd.read_csv(root / "out" / "index.tsv", sep="\t", dtype={"patient_id": str}, keep_default_na=False)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_trident_coords_attrs_of_a_tma_core():
    # HANCOCK on real data: 224-px tiles at 0.5 um/px (20x) from cores at 0.25 um/px (40x)
    assert trident_coords_attrs(224, 0.5, 0.25) == {
        "patch_size": 224,
        "patch_size_level0": 448,
        "level0_magnification": 40.0,
        "target_magnification": 20.0,
    }
    # the demo: native resolution
    assert trident_coords_attrs(64, 0.25, 0.25)["patch_size_level0"] == 64


def test_per_patient_and_per_core_files_become_the_extraction_layout(tmp_path, rng, caplog):
    feats = tmp_path / "features"
    feats.mkdir()
    a = rng.normal(size=(5, DIM)).astype(np.float32)
    write_trident_h5(feats / "001.h5", a, np.arange(10).reshape(5, 2) * 256)
    # patient 002: two cores named like HANCOCK core images; manifest order is y5 then y2
    c1, c2 = core_name("HE", 1, 3, 5, "002"), core_name("HE", 1, 4, 2, "002")
    b1, b2 = rng.normal(size=(3, DIM)).astype(np.float32), rng.normal(size=(2, DIM)).astype(np.float16)
    write_trident_h5(feats / f"{c1}.h5", b1, np.zeros((3, 2), np.int64))
    write_trident_h5(feats / f"{c2}.h5", b2, np.ones((2, 2), np.int64))
    write_trident_h5(feats / f"{core_name('CD3', 1, 3, 5, '002')}.h5", b1, np.zeros((3, 2)))  # other marker
    # patient 003: a CLAM .pt tensor
    c = rng.normal(size=(4, DIM)).astype(np.float32)
    torch.save(torch.from_numpy(c), feats / "003.pt")
    write_trident_h5(feats / "777.h5", a, np.zeros((5, 2)))  # not in the cohort
    (feats / "notes.txt").write_text("x")
    write_map(tmp_path / "maps", 1, {"5-3": "002", "2-4": "002"})
    manifest = write_manifest(
        tmp_path,
        {"001": ["c/a.png"], "002": [f"c/{c1}.png", f"c/{c2}.png"], "003": ["c/b.png"], "004": ["c/d.png"]},
    )
    caplog.set_level(logging.INFO)
    counts = run(tmp_path, manifest, {"dir": str(feats)}, tma_maps=tmp_path / "maps")
    idx = index(tmp_path)
    assert tuple(idx.columns) == INDEX_COLUMNS
    assert idx["patient_id"].tolist() == ["001", "002", "003", "004"]  # 009 has no TMA at all
    assert idx["status"].tolist() == ["ok", "ok", "ok", "missing"]
    assert idx["n_tiles"].tolist() == [5, 5, 4, 0] and idx["n_cores"].tolist() == [1, 2, 1, 0]
    assert counts["patients_missing_precomputed"] == 1 and counts["patients_without_tma"] == 1
    assert counts["files_outside_cohort"] == 1 and counts["core_files_other_marker_left_out"] == 1
    assert counts["files_not_features"] == 1
    assert "no precomputed feature file" in caplog.text and "004" in caplog.text and "777.h5" in caplog.text

    rows = idx.set_index("patient_id")
    features, coords = read_bag(rows.loc["001", "h5_path"], expected_dim=DIM)
    np.testing.assert_array_equal(features, a)
    np.testing.assert_array_equal(coords, np.arange(10).reshape(5, 2) * 256)
    with h5py.File(rows.loc["001", "h5_path"]) as handle:
        assert dict(handle["coords"].attrs) == TRIDENT_ATTRS  # read from the file and carried over
        assert handle.attrs["encoder"] == "tiny-vit-test" and handle.attrs["weights_digest"] == "precomputed"
        assert handle.attrs["feature_dim"] == DIM and handle.attrs["precomputed_kind"] == "patient"
        assert handle.attrs["tile_px"] == 256  # TRIDENT's patch_size wins over the config's tile_px
    features, coords = read_bag(rows.loc["002", "h5_path"], expected_dim=DIM)
    np.testing.assert_allclose(features, np.concatenate([b1, b2.astype(np.float32)]))  # manifest core order
    assert coords[:3].tolist() == [[0, 0]] * 3 and coords[3:].tolist() == [[1, 1]] * 2
    features, coords = read_bag(rows.loc["003", "h5_path"], expected_dim=DIM)
    np.testing.assert_array_equal(features, c)
    assert (coords == -1).all()  # a .pt has no coordinates
    with h5py.File(rows.loc["003", "h5_path"]) as handle:  # no TRIDENT attrs: the config's
        assert dict(handle["coords"].attrs) == trident_coords_attrs(224, 0.5, 0.25)

    # resume: nothing changed -> nothing rewritten; a touched file -> only its patient redone
    again = run(tmp_path, manifest, {"dir": str(feats)}, tma_maps=tmp_path / "maps")
    assert again["patients_resumed"] == 3 and again.get("patients_ok", 0) == 0
    pd.testing.assert_frame_equal(index(tmp_path), idx)
    stat = (feats / "003.pt").stat()
    os.utime(feats / "003.pt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = run(tmp_path, manifest, {"dir": str(feats)}, tma_maps=tmp_path / "maps")
    assert third["patients_resumed"] == 2 and third["patients_ok"] == 1


def test_a_table_maps_files_to_patients(tmp_path, rng):
    feats = tmp_path / "features"
    feats.mkdir()
    x, y = rng.normal(size=(2, DIM)).astype(np.float32), rng.normal(size=(3, DIM)).astype(np.float32)
    write_trident_h5(feats / "slideA.h5", x, np.zeros((2, 2)))
    write_trident_h5(feats / "slideB.h5", y, np.zeros((3, 2)))
    pd.DataFrame(
        {"patient_id": ["001", "001", "050"], "file": ["slideB.h5", "slideA.h5", "slideA.h5"]}
    ).to_csv(tmp_path / "map.tsv", sep="\t", index=False)
    manifest = write_manifest(tmp_path, {"001": ["c/a.png"]})
    counts = run(tmp_path, manifest, {"dir": str(feats), "table": str(tmp_path / "map.tsv")})
    features, _ = read_bag(index(tmp_path).loc[0, "h5_path"], expected_dim=DIM)
    np.testing.assert_array_equal(features, np.concatenate([y, x]))  # table order
    assert counts["table_rows_outside_cohort"] == 1
    pd.DataFrame({"patient_id": ["001"], "file": ["gone.h5"]}).to_csv(
        tmp_path / "bad.tsv", sep="\t", index=False
    )
    with pytest.raises(HafInputError, match=r"bad.tsv, line 2, field 'file': file not found: .*gone.h5"):
        run(tmp_path, manifest, {"dir": str(feats), "table": str(tmp_path / "bad.tsv")})


def test_a_wrong_width_is_an_error_naming_the_file(tmp_path, rng):
    feats = tmp_path / "features"
    feats.mkdir()
    write_trident_h5(feats / "001.h5", rng.normal(size=(4, 1024)).astype(np.float32), np.zeros((4, 2)))
    manifest = write_manifest(tmp_path, {"001": ["c/a.png"]})
    with pytest.raises(HafInputError) as err:
        run(tmp_path, manifest, {"dir": str(feats)})
    text = str(err.value)
    assert "001.h5" in text and "1024-d but 64-d are expected" in text and "extract.precomputed.dim" in text
    # declaring the width (features of another encoder under this name) makes the same file valid
    counts = run(tmp_path, manifest, {"dir": str(feats), "dim": 1024})
    assert counts["patients_ok"] == 1
    assert not (tmp_path / "nope").exists()
    with pytest.raises(HafConfigError, match="extract.precomputed.dir: .*nope.* is not a folder"):
        run(tmp_path, manifest, {"dir": str(tmp_path / "nope")})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write_trident_h5(p, np.full((3, DIM), np.nan, np.float32), np.zeros((3, 2))), "row 0"),
        (
            lambda p: write_trident_h5(p, np.ones((3, DIM), np.int64), np.zeros((3, 2))),
            "expected floating point",
        ),
        (
            lambda p: write_trident_h5(p, np.ones((3, DIM), np.float32), np.zeros((3, 3))),
            r"expected \(3, 2\)",
        ),
        (lambda p: write_trident_h5(p, np.ones((3, DIM), np.float32), np.full((3, 2), 0.5)), "whole pixel"),
        (lambda p: write_trident_h5(p, np.ones((2, 3, DIM), np.float32), None), r"shape \(2, 3, 64\)"),
    ],
    ids=["nan", "int", "coords-shape", "coords-fraction", "3d"],
)
def test_bad_feature_files_are_refused_naming_the_file(tmp_path, make, message):
    path = tmp_path / "001.h5"
    make(path)
    with pytest.raises(HafInputError, match=message) as err:
        read_feature_file(path, DIM)
    assert str(path) in str(err.value)


def test_pt_files_and_odd_shapes(tmp_path):
    torch.save(torch.ones(3, DIM, dtype=torch.int32), tmp_path / "int.pt")
    with pytest.raises(HafInputError, match="int.pt.*torch.int32, expected floating point"):
        read_feature_file(tmp_path / "int.pt", DIM)
    torch.save({"weights": torch.ones(2)}, tmp_path / "dict.pt")
    with pytest.raises(HafInputError, match="expected a tensor N x D"):
        read_feature_file(tmp_path / "dict.pt", DIM)
    torch.save(torch.ones(1, 3, DIM, dtype=torch.bfloat16), tmp_path / "batch.pt")
    assert read_feature_file(tmp_path / "batch.pt", DIM).features.shape == (3, DIM)  # (1, N, D) squeezed
    (tmp_path / "junk.h5").write_bytes(b"no")
    with pytest.raises(HafInputError, match="junk.h5: cannot open as HDF5"):
        read_feature_file(tmp_path / "junk.h5", DIM)
    with h5py.File(tmp_path / "nofeat.h5", "w") as handle:
        handle.create_dataset("feats", data=np.ones((2, DIM)))
    with pytest.raises(HafInputError, match="no 'features' dataset \\(found: feats\\)"):
        read_feature_file(tmp_path / "nofeat.h5", DIM)


def test_empty_files_give_status_empty(tmp_path):
    feats = tmp_path / "features"
    feats.mkdir()
    write_trident_h5(feats / "001.h5", np.zeros((0, DIM), np.float32), np.zeros((0, 2), np.int64))
    manifest = write_manifest(tmp_path, {"001": ["c/a.png"]})
    counts = run(tmp_path, manifest, {"dir": str(feats)})
    assert index(tmp_path)["status"].tolist() == ["empty"] and counts["files_empty"] == 1


def test_core_files_are_checked_against_the_tma_map(tmp_path, rng):
    feats = tmp_path / "features"
    feats.mkdir()
    name = core_name("HE", 2, 1, 1, "001")
    write_trident_h5(feats / f"{name}.h5", rng.normal(size=(2, DIM)).astype(np.float32), np.zeros((2, 2)))
    write_map(tmp_path / "maps", 2, {"1-1": "005"})
    manifest = write_manifest(tmp_path, {"001": [f"c/{name}.png"]})
    with pytest.raises(HafInputError) as err:
        run(tmp_path, manifest, {"dir": str(feats)}, tma_maps=tmp_path / "maps")
    text = str(err.value)
    assert name in text and "TMA_Map_block2.csv" in text and "'005'" in text
    # a patient file next to core files of the same patient is ambiguous
    write_map(tmp_path / "maps", 2, {"1-1": "001"})
    write_trident_h5(feats / "001.h5", rng.normal(size=(2, DIM)).astype(np.float32), np.zeros((2, 2)))
    with pytest.raises(HafInputError, match="patient-level file and core-level files"):
        run(tmp_path, manifest, {"dir": str(feats)}, tma_maps=tmp_path / "maps")
