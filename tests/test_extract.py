"""TMA extraction: tissue mask, tiling (sizes, coords, empty and too-small cores), image conversions and
bad files, the h5 layout and attributes, atomic writes, resume, the unreadable-core policies, and an
end-to-end run from a manifest-like table (read back by Stage 1's reader). CPU, small images, ~15 s.
"""

from __future__ import annotations

import logging
import os

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from fakes.config import load_config, settings
from fakes.extract import he_tile
from PIL import Image

from haf.artifacts.bags import read_bag
from haf.artifacts.tma_index import INDEX_COLUMNS
from haf.errors import HafConfigError, HafInputError
from haf.extract import extraction
from haf.extract.extraction import extract_tma_features, plan_workers, read_manifest_cores, resume_mismatch
from haf.extract.registry import load_encoder
from haf.extract.tiling import (
    STATUS_NO_TISSUE,
    STATUS_OK,
    STATUS_TOO_SMALL,
    TilingSettings,
    read_core,
    tile_core,
    tissue_mask,
)

PINK = (226, 152, 188)
WHITE = (244, 244, 243)

SECTION = load_config(
    {
        "extract": {
            "encoder": "demo-texture",
            "weights": None,
            "markers": ["HE"],
            "tile_px": 32,
            "tile_mpp": 0.25,
            "core_mpp": 0.25,
            "tissue_saturation_min": 0.07,
            "tissue_value_max": 0.99,
            "min_tissue_fraction": 0.25,
            "batch_size": 16,
            "num_workers": 0,
            "compile": False,
            "channels_last": False,
            "on_unreadable": "fail",
            "min_tiled_core_fraction": 0.5,
        }
    }
)["extract"]


def _tiling(**overrides) -> TilingSettings:
    """Tiling settings: the schema's defaults with ``overrides``."""
    return TilingSettings.from_section(settings("extract", **overrides))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()


def _half_tissue(px: int = 256) -> np.ndarray:
    """Left half pink tissue, right half white glass."""
    image = np.empty((px, px, 3), np.uint8)
    image[:, : px // 2] = PINK
    image[:, px // 2 :] = WHITE
    return image


# ---------------------------------------------------------------------------------------------
# mask and tiles


def test_tissue_mask_thresholds():
    pixels = np.array(
        [[PINK, WHITE, (128, 128, 128), (88, 48, 128), (0, 0, 0), (252, 230, 240), (255, 200, 220)]], np.uint8
    )
    mask = tissue_mask(_chw(pixels), 0.07, 0.99)[0].tolist()
    # pink and purple are tissue; white, grey and black glass/debris are not; pale pink (sat 0.087) is;
    # a saturated but brighter-than-value_max pixel (value 1.0) is not
    assert mask == [True, False, False, True, False, True, False]
    assert tissue_mask(_chw(pixels), 0.10, 0.99)[0].tolist()[5] is False  # stricter saturation


def test_grayscale_cores_tissue_is_darker_than_the_glass():
    image = np.full((64, 64), 240, np.uint8)
    image[:, :32] = 120  # darker tissue on the left
    rgb = _chw(np.repeat(image[..., None], 3, axis=2))
    settings = _tiling(tile_px=32, tile_mpp=0.25, core_mpp=0.25)
    assert tile_core(rgb, settings).status == STATUS_NO_TISSUE  # no saturation at all
    tiles = tile_core(rgb, settings, grayscale=True)
    assert tiles.n == 2 and set(tiles.coords[:, 0].tolist()) == {0}
    flat = _chw(np.full((64, 64, 3), 200, np.uint8))
    assert tile_core(flat, settings, grayscale=True).status == STATUS_NO_TISSUE  # no contrast: no tissue


@pytest.mark.parametrize("view", [-2.0, 0.0, 1.0, 3.0])
def test_grayscale_copy_of_an_rgb_core_gives_the_same_tiles_within_one(tmp_path, view):
    """Issue 17: Otsu on the grey levels kept only the nuclei (6 tiles fewer at view 3); the glass-relative
    mask finds the stroma too. A demo H&E core and its luminance copy, both read from PNG."""
    from haf.demo.tma import render_core
    from haf.extract.extraction import CoreDataset

    image = render_core(np.random.default_rng(100), 512, view, "HE")
    rgb_path = _save(tmp_path / "rgb.png", image)
    gray_path = _save(tmp_path / "gray.png", np.asarray(Image.fromarray(image).convert("L")))
    settings = _tiling(tile_px=64, tile_mpp=0.25, core_mpp=0.25)
    rgb, gray = CoreDataset([rgb_path, gray_path], settings)
    assert rgb["mode"] == "rgb" and gray["mode"] == "gray"
    n_rgb, n_gray = rgb["tiles"].shape[0], gray["tiles"].shape[0]
    assert n_rgb >= 25  # a core mostly of tissue: 44 grid positions inside the disc
    rgb_tiles = {tuple(c) for c in rgb["coords"].tolist()}
    gray_tiles = {tuple(c) for c in gray["coords"].tolist()}
    assert abs(n_rgb - n_gray) <= 1 and len(rgb_tiles ^ gray_tiles) <= 1, (n_rgb, n_gray)


def test_tile_core_native_resolution_sizes_and_coords():
    settings = _tiling(tile_px=32, tile_mpp=0.25, core_mpp=0.25)
    core = _chw(_half_tissue(256))
    tiles = tile_core(core, settings)
    assert tiles.status == STATUS_OK and tiles.n_grid == 64 and tiles.n == 32
    assert tiles.tiles.shape == (32, 3, 32, 32) and tiles.tiles.dtype == torch.uint8
    assert tiles.coords.dtype == np.int32 and tiles.coords.shape == (32, 2)
    assert set(tiles.coords[:, 0].tolist()) == {0, 32, 64, 96}  # x: left half only
    assert set(tiles.coords[:, 1].tolist()) == set(range(0, 256, 32))  # y: every row
    # row-major order and each tile is exactly the core's pixels at its coords
    assert tiles.coords[:4].tolist() == [[0, 0], [32, 0], [64, 0], [96, 0]]
    for k in (0, 5, 31):
        x, y = tiles.coords[k]
        assert torch.equal(tiles.tiles[k], core[:, y : y + 32, x : x + 32])


def test_tile_core_resamples_to_tile_mpp_and_reports_core_pixels():
    settings = _tiling(tile_px=32, tile_mpp=0.5, core_mpp=0.25)  # 2x downsampling
    assert settings.scale == 0.5 and settings.tile_px_core == 64
    tiles = tile_core(_chw(_half_tissue(256)), settings)
    assert tiles.n_grid == 16 and tiles.n == 8  # 128 px after resizing: 4 x 4 grid, left half kept
    assert set(tiles.coords[:, 0].tolist()) == {0, 64}  # core pixels: multiples of 64
    assert set(tiles.coords[:, 1].tolist()) == {0, 64, 128, 192}
    assert tiles.tiles.shape == (8, 3, 32, 32)
    # upsampling works the same way (core 1 um/px -> tiles 0.5 um/px)
    up = tile_core(_chw(_half_tissue(64)), _tiling(tile_px=32, tile_mpp=0.5, core_mpp=1.0))
    assert up.n_grid == 16 and up.n == 8 and set(up.coords[:, 0].tolist()) == {0, 16}


def test_grid_is_centred_when_the_core_is_not_a_multiple_of_the_tile():
    image = np.full((100, 70, 3), PINK, np.uint8)
    tiles = tile_core(_chw(image), _tiling(tile_px=32, tile_mpp=0.25, core_mpp=0.25))
    assert tiles.n_grid == 6 and tiles.n == 6
    assert sorted(set(tiles.coords[:, 0].tolist())) == [3, 35]  # (70 - 64) / 2 = 3
    assert sorted(set(tiles.coords[:, 1].tolist())) == [2, 34, 66]  # (100 - 96) / 2 = 2


def test_min_tissue_fraction_decides_edge_tiles():
    image = np.full((32, 64, 3), WHITE, np.uint8)
    image[:, :8] = PINK  # first tile: 25 % tissue; second tile: none
    for fraction, expected in ((0.25, 1), (0.26, 0), (0.0, 1)):
        settings = _tiling(tile_px=32, tile_mpp=0.25, core_mpp=0.25, min_tissue_fraction=fraction)
        assert tile_core(_chw(image), settings).n == expected, fraction


def test_empty_and_too_small_cores_give_empty_bags_not_errors():
    settings = _tiling(tile_px=32, tile_mpp=0.25, core_mpp=0.25)
    blank = tile_core(_chw(np.full((128, 128, 3), WHITE, np.uint8)), settings)
    assert blank.status == STATUS_NO_TISSUE and blank.n == 0 and blank.n_grid == 16
    assert blank.tiles.shape == (0, 3, 32, 32) and blank.coords.shape == (0, 2)
    small = tile_core(_chw(np.full((20, 40, 3), PINK, np.uint8)), settings)
    assert small.status == STATUS_TOO_SMALL and small.n == 0
    # HANCOTHON's stand-in for a missing core is a 1 x 1 image
    assert tile_core(_chw(np.full((1, 1, 3), PINK, np.uint8)), settings).status == STATUS_TOO_SMALL
    # big enough at its own resolution, too small after resampling to tile_mpp
    coarse = _tiling(tile_px=32, tile_mpp=0.5, core_mpp=0.25)
    assert tile_core(_chw(np.full((60, 60, 3), PINK, np.uint8)), coarse).status == STATUS_TOO_SMALL


def test_settings_digest_changes_with_any_tiling_setting():
    base = _tiling()
    assert base.digest() == _tiling().digest()
    for change in (
        {"tile_px": 256},
        {"core_mpp": 0.26},
        {"tissue_saturation_min": 0.08},
        {"min_tissue_fraction": 0.5},
    ):
        assert _tiling(**change).digest() != base.digest(), change
    with pytest.raises(HafConfigError, match="extract.min_tissue_fraction"):
        TilingSettings.from_section(dict(SECTION, min_tissue_fraction=2))


# ---------------------------------------------------------------------------------------------
# decoding


def test_read_core_converts_grayscale_rgba_palette_and_16bit(tmp_path):
    rgb = he_tile(np.random.default_rng(0), 64)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    x, mode = read_core(tmp_path / "rgb.png")
    assert mode == "rgb" and x.shape == (3, 64, 64) and torch.equal(x, _chw(rgb))

    Image.fromarray(rgb[..., 1]).save(tmp_path / "gray.png")
    x, mode = read_core(tmp_path / "gray.png")
    assert mode == "gray" and x.shape == (3, 64, 64) and torch.equal(x[0], x[2])

    rgba = np.dstack([rgb, np.full((64, 64), 255, np.uint8)])
    rgba[:, 32:, 3] = 0  # right half transparent: must become white glass, not black
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    x, mode = read_core(tmp_path / "rgba.png")
    assert mode == "rgba" and torch.equal(x[:, :, :32], _chw(rgb)[:, :, :32]) and (x[:, :, 32:] == 255).all()

    Image.fromarray(rgb[..., 0]).convert("LA").save(tmp_path / "la.png")
    assert read_core(tmp_path / "la.png")[1] == "gray+alpha"

    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pal.png")
    x, _ = read_core(tmp_path / "pal.png")
    assert x.shape == (3, 64, 64) and x.dtype == torch.uint8

    sixteen = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "g16.png")
    x, mode = read_core(tmp_path / "g16.png")
    assert mode.endswith("16") and x.dtype == torch.uint8 and int(x[0, -1, -1]) == int(sixteen[-1, -1]) >> 8


def test_read_core_errors_name_the_file(tmp_path):
    Image.fromarray(he_tile(np.random.default_rng(1), 128)).save(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_bytes(b"this is not a png")
    (tmp_path / "empty.png").write_bytes(b"")
    for name, problem in (
        ("truncated.png", "truncated"),
        ("text.png", "not a readable image"),
        ("empty.png", "empty"),
        ("missing.png", "cannot read"),
    ):
        with pytest.raises(HafInputError) as err:
            read_core(tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and problem in str(err.value), str(err.value)


# ---------------------------------------------------------------------------------------------
# end to end through the library function


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _cohort(root, n=4):
    """Cores of n patients (2 each, HANCOCK names) and a manifest with relative paths."""
    rng = np.random.default_rng(42)
    cores = root / "cores"
    rows = []
    for i in range(n):
        pid = f"{i + 1:03d}"
        names = []
        for k in range(2):
            name = f"TumorCenter_HE_block1_x{k + 1}_y{i + 1}_patient{pid}.png"
            _save(cores / name, he_tile(rng, 96, density=0.8 + i, tissue=0.9))
            names.append(f"cores/{name}")
        rows.append({"patient_id": pid, "has_tma": 1, "tma_files": ";".join(names)})
    rows.append({"patient_id": "050", "has_tma": 0, "tma_files": ""})
    manifest = root / "manifest.tsv"
    pd.DataFrame(rows).to_csv(manifest, sep="\t", index=False)
    return manifest


def _run(root, manifest, **overrides):
    section = dict(SECTION, **overrides)
    return extract_tma_features(
        manifest, root / "out" / "index.tsv", root / "out" / "h5", section, "cpu", threads=1, progress=False
    )


def _index(root):
    return pd.read_csv(root / "out" / "index.tsv", sep="\t", dtype={"patient_id": str}, keep_default_na=False)


def test_end_to_end_h5_layout_attributes_and_stage1_reader(tmp_path, caplog):
    manifest = _cohort(tmp_path)
    frame = pd.read_csv(manifest, sep="\t", dtype=str, keep_default_na=False)
    # patient 002: one more core of another marker (left out, counted), a grayscale and an RGBA core
    rng = np.random.default_rng(3)
    ihc = _save(tmp_path / "cores" / "TumorCenter_CD3_block1_x3_y2_patient002.png", he_tile(rng, 96))
    luminance = np.asarray(Image.fromarray(he_tile(rng, 96, tissue=0.9)).convert("L"))  # a grayscale export
    gray = _save(tmp_path / "cores" / "TumorCenter_HE_block2_x1_y1_patient002.png", luminance)
    rgba = np.dstack([he_tile(rng, 96), np.full((96, 96), 255, np.uint8)])
    rgba_path = _save(tmp_path / "cores" / "TumorCenter_HE_block2_x2_y1_patient002.png", rgba)
    frame.loc[1, "tma_files"] += f";cores/{ihc.name};{gray};cores/{rgba_path.name}"
    frame.to_csv(manifest, sep="\t", index=False)

    caplog.set_level(logging.INFO)
    counts = _run(tmp_path, manifest)
    index = _index(tmp_path)
    assert tuple(index.columns) == INDEX_COLUMNS
    assert index["patient_id"].tolist() == ["001", "002", "003", "004"]  # 050 has no cores
    assert index["status"].eq("ok").all() and index["n_failed_cores"].eq(0).all()
    assert index["n_cores"].tolist() == [2, 4, 2, 2]  # the CD3 core is not part of the H&E bag
    assert index["n_empty_cores"].eq(0).all()  # the grayscale core has tissue too (gray mask)
    assert counts["cores_other_marker_left_out"] == 1 and counts["patients_without_cores"] == 1
    assert counts["cores_converted_from_gray"] == 1 and counts["cores_converted_from_rgba"] == 1
    assert "cores_other_marker_left_out" in caplog.text

    for rec in index.itertuples():
        features, coords = read_bag(rec.h5_path, expected_dim=1024)
        assert features.shape == (rec.n_tiles, 1024) and coords.shape == (rec.n_tiles, 2)
        with h5py.File(rec.h5_path) as handle:
            assert handle["features"].dtype == np.float32 and handle["coords"].dtype == np.int32
            attrs = dict(handle.attrs)
            coords_attrs = dict(handle["coords"].attrs)
        # TRIDENT's coords attributes: a core is its own level 0 at core_mpp 0.25 um/px (40x), tiles of
        # 32 px at 0.25 um/px (40x) are 32 core pixels
        assert coords_attrs == {
            "patch_size": 32,
            "patch_size_level0": 32,
            "level0_magnification": 40.0,
            "target_magnification": 40.0,
        }
        assert attrs["encoder"] == "demo-texture" and attrs["weights_digest"] == "weight-free:demo-texture:v1"
        assert attrs["tile_px"] == 32 and attrs["tile_mpp"] == 0.25 and attrs["feature_dim"] == 1024
        assert attrs["n_tiles"] == rec.n_tiles and attrs["status"] == "ok"
        tiles_per_core = np.asarray(attrs["core_tiles"])
        assert tiles_per_core.sum() == rec.n_tiles and len(attrs["core_files"]) == rec.n_cores
        assert (coords >= 0).all() and (coords < 96).all()
    # the patient's bag is its cores' tiles in manifest order
    first = tile_core(
        read_core(tmp_path / frame.loc[0, "tma_files"].split(";")[0])[0], TilingSettings.from_section(SECTION)
    )
    features, coords = read_bag(index.loc[0, "h5_path"])
    assert np.array_equal(coords[: first.n], first.coords)

    # Stage 1 reads exactly these rows
    from haf.mil.bags import tma_sources

    files, _ = tma_sources(tmp_path / "out" / "index.tsv")
    assert sorted(files) == ["001", "002", "003", "004"]


def test_worker_processes_give_the_same_bags(tmp_path):
    manifest = _cohort(tmp_path, n=2)
    _run(tmp_path, manifest)
    inline = {r.patient_id: read_bag(r.h5_path)[0] for r in _index(tmp_path).itertuples()}
    os.rename(tmp_path / "out", tmp_path / "out_inline")
    extract_tma_features(
        manifest,
        tmp_path / "out" / "index.tsv",
        tmp_path / "out" / "h5",
        dict(SECTION, num_workers=1),
        "cpu",
        threads=2,  # CPU: 1 worker decodes, 1 thread encodes
        progress=False,
    )
    for rec in _index(tmp_path).itertuples():
        assert np.array_equal(read_bag(rec.h5_path)[0], inline[rec.patient_id])


def test_patient_without_tissue_is_empty_and_counted(tmp_path, caplog):
    manifest = _cohort(tmp_path, n=2)
    frame = pd.read_csv(manifest, sep="\t", dtype=str, keep_default_na=False)
    blank = _save(
        tmp_path / "cores" / "TumorCenter_HE_block3_x1_y1_patient009.png",
        np.full((96, 96, 3), WHITE, np.uint8),
    )
    tiny = _save(
        tmp_path / "cores" / "TumorCenter_HE_block3_x2_y1_patient009.png", np.full((1, 1, 3), PINK, np.uint8)
    )
    frame.loc[len(frame)] = {"patient_id": "009", "has_tma": "1", "tma_files": f"{blank};{tiny}"}
    frame.to_csv(manifest, sep="\t", index=False)
    caplog.set_level(logging.INFO)
    counts = _run(tmp_path, manifest)
    row = _index(tmp_path).set_index("patient_id").loc["009"]
    assert row["status"] == "empty" and row["n_tiles"] == 0 and row["n_empty_cores"] == 2
    features, coords = read_bag(row["h5_path"])
    assert features.shape[0] == 0 and coords.shape == (0, 2)
    assert counts["patients_empty"] == 1 and counts["cores_empty_no_tissue"] == 1
    assert counts["cores_empty_too_small"] == 1
    assert "patient 009: no tile from any of its 2 core(s)" in caplog.text
    from haf.mil.bags import tma_sources

    files, source_counts = tma_sources(tmp_path / "out" / "index.tsv")
    assert "009" not in files and source_counts["status_empty"] == 1


def test_no_tile_in_the_cohort_fails_naming_the_tiling_settings_and_core_size(tmp_path):
    """Issue 17: cores smaller than one tile (here: a wrong core_mpp) used to give per-patient warnings,
    exit 0, and fail one rule later naming folds.tsv."""
    manifest = _cohort(tmp_path, n=2)  # 96-px cores
    with pytest.raises(HafInputError) as err:
        _run(tmp_path, manifest, core_mpp=0.05)  # one 32-px tile at 0.25 um/px = 160 core pixels
    message = str(err.value)
    assert "no tile in the whole cohort: 0 of 4 readable core(s) (0.0 %) gave a tile" in message
    assert "tile_px 32 at tile_mpp 0.25 um/px from cores at core_mpp 0.05 um/px" in message
    assert "one tile covers 160 x 160 core pixels" in message and "core images 96 x 96 px" in message
    assert "empty_too_small 4" in message
    assert not (tmp_path / "out" / "index.tsv").exists()
    assert sorted(p.name for p in (tmp_path / "out" / "h5").glob("*.h5")) == ["001.h5", "002.h5"]
    # the rerun resumes both patients (same settings) and fails the same way, core sizes from the headers
    with pytest.raises(HafInputError, match=r"0 of 4 readable .* core images 96 x 96 px"):
        _run(tmp_path, manifest, core_mpp=0.05)
    _run(tmp_path, manifest)  # the right core_mpp: redone, tiles found, index written
    assert _index(tmp_path)["status"].eq("ok").all()


def test_too_few_cores_with_a_tile_fails_at_the_configured_share(tmp_path):
    manifest = _cohort(tmp_path, n=1)
    frame = pd.read_csv(manifest, sep="\t", dtype=str, keep_default_na=False)
    for i in range(2, 4):  # two patients whose cores are blank glass: 2 of 6 cores have tissue
        pid = f"{i:03d}"
        blanks = [
            _save(
                tmp_path / "cores" / f"TumorCenter_HE_block4_x{k}_y{i}_patient{pid}.png",
                np.full((96, 96, 3), WHITE, np.uint8),
            )
            for k in (1, 2)
        ]
        frame.loc[len(frame)] = {"patient_id": pid, "has_tma": "1", "tma_files": ";".join(map(str, blanks))}
    frame.to_csv(manifest, sep="\t", index=False)
    with pytest.raises(
        HafInputError, match=r"too few cores with a tile: 2 of 6 readable core\(s\) \(33\.3 %\)"
    ):
        _run(tmp_path, manifest)
    counts = _run(tmp_path, manifest, min_tiled_core_fraction=0.3)  # a cohort where that is expected
    assert counts["cores_with_tiles"] == 2 and counts["patients_resumed"] == 3


def test_resume_skips_done_patients_and_redoes_mismatches(tmp_path):
    manifest = _cohort(tmp_path, n=3)
    first = _run(tmp_path, manifest)
    assert first["patients_ok"] == 3
    h5 = {r.patient_id: tmp_path / "out" / "h5" / f"{r.patient_id}.h5" for r in _index(tmp_path).itertuples()}
    stamp = {pid: p.stat().st_mtime_ns for pid, p in h5.items()}

    second = _run(tmp_path, manifest)
    assert second["patients_resumed"] == 3 and second["tiles_extracted"] == 0
    assert {pid: p.stat().st_mtime_ns for pid, p in h5.items()} == stamp
    assert _index(tmp_path)["n_tiles"].gt(0).all()  # rows rebuilt from the h5 attributes

    with h5py.File(h5["002"], "a") as handle:  # made with other weights
        handle.attrs["weights_digest"] = "sha256:other"
    h5["003"].unlink()  # killed before this one was written
    (h5["001"].parent / ".001.h5.abc123.h5").write_bytes(b"partial")  # a killed write's temporary
    third = _run(tmp_path, manifest)
    assert third["patients_resumed"] == 1 and third["patients_redone_weights_digest"] == 1
    assert h5["001"].stat().st_mtime_ns == stamp["001"]
    assert h5["003"].exists() and not (h5["001"].parent / ".001.h5.abc123.h5").exists()

    # other tile settings or a replaced core image: redone
    fourth = _run(tmp_path, manifest, min_tissue_fraction=0.5)
    assert fourth["patients_redone_tiling_digest"] == 3
    core = tmp_path / "cores" / "TumorCenter_HE_block1_x1_y1_patient001.png"
    os.utime(core, ns=(core.stat().st_atime_ns, core.stat().st_mtime_ns + 10**9))
    fifth = _run(tmp_path, manifest, min_tissue_fraction=0.5)
    assert fifth["patients_redone_sources_digest"] == 1 and fifth["patients_resumed"] == 2


def test_resume_mismatch_reasons():
    expected = {
        "encoder": "uni",
        "weights_digest": "sha256:a",
        "tile_px": 224,
        "tile_mpp": 0.5,
        "tiling_digest": "t",
        "feature_dim": 1024,
        "sources_digest": "s",
    }
    attrs = dict(expected, n_tiles=3, _shape=(3, 1024))
    assert resume_mismatch(attrs, expected) is None
    assert resume_mismatch(None, expected) == "unreadable"
    assert resume_mismatch(dict(attrs, encoder="uni2-h"), expected) == "encoder"
    assert resume_mismatch(dict(attrs, tile_mpp=0.25), expected) == "tile_mpp"
    assert resume_mismatch(dict(attrs, _shape=(2, 1024)), expected) == "shape"


def test_a_killed_run_leaves_only_complete_h5_and_the_rerun_finishes(tmp_path, monkeypatch):
    manifest = _cohort(tmp_path, n=4)
    calls = {"n": 0}
    real_call = extraction.TileEncoder.__call__

    def dies_on_sixth_batch(self, tiles):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt("killed")
        return real_call(self, tiles)

    monkeypatch.setattr(extraction.TileEncoder, "__call__", dies_on_sixth_batch)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, manifest, batch_size=8)
    h5_dir = tmp_path / "out" / "h5"
    written = sorted(p.name for p in h5_dir.iterdir())
    assert written and len(written) < 4 and not any(n.startswith(".") for n in written)
    assert not (tmp_path / "out" / "index.tsv").exists()
    for name in written:  # every h5 present is complete
        with h5py.File(h5_dir / name) as handle:
            assert handle["features"].shape[0] == handle.attrs["n_tiles"] > 0
    monkeypatch.setattr(extraction.TileEncoder, "__call__", real_call)
    counts = _run(tmp_path, manifest, batch_size=8)
    assert counts["patients_resumed"] == len(written) and counts["patients_ok"] == 4 - len(written)
    assert len(_index(tmp_path)) == 4


def test_a_failing_write_leaves_no_partial_h5(tmp_path):
    target = tmp_path / "h5" / "001.h5"
    with pytest.raises(TypeError):
        extraction._write(target, np.zeros((2, 4), np.float32), np.zeros((2, 2), np.int32), {"bad": object()})
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_unreadable_core_fails_after_writing_every_other_patient(tmp_path):
    manifest = _cohort(tmp_path, n=3)
    bad = tmp_path / "cores" / "TumorCenter_HE_block1_x2_y2_patient002.png"
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[: len(good_bytes) // 3])
    with pytest.raises(HafInputError) as err:
        _run(tmp_path, manifest)
    text = str(err.value)
    assert "1 unreadable core image(s)" in text and str(bad.name) in text and "patient 002" in text
    assert "on_unreadable: skip" in text
    h5_dir = tmp_path / "out" / "h5"
    assert sorted(p.name for p in h5_dir.iterdir()) == ["001.h5", "003.h5"]
    assert not (tmp_path / "out" / "index.tsv").exists()
    bad.write_bytes(good_bytes)  # fixed: the rerun does only patient 002
    counts = _run(tmp_path, manifest)
    assert counts["patients_resumed"] == 2 and counts["patients_ok"] == 1
    assert _index(tmp_path)["status"].eq("ok").all()


def test_unreadable_core_skip_policy_counts_and_keeps_the_rest(tmp_path, caplog):
    manifest = _cohort(tmp_path, n=3)
    (tmp_path / "cores" / "TumorCenter_HE_block1_x2_y2_patient002.png").write_bytes(b"garbage")
    for k in (1, 2):  # patient 003: both cores unreadable
        (tmp_path / "cores" / f"TumorCenter_HE_block1_x{k}_y3_patient003.png").unlink()
    caplog.set_level(logging.INFO)
    counts = _run(tmp_path, manifest, on_unreadable="skip")
    index = _index(tmp_path).set_index("patient_id")
    assert index.loc["002", "status"] == "ok" and index.loc["002", "n_failed_cores"] == 1
    assert index.loc["003", "status"] == "failed" and index.loc["003", "n_tiles"] == 0
    assert counts["cores_failed"] == 3 and counts["patients_failed"] == 1
    assert "TumorCenter_HE_block1_x2_y2_patient002.png" in caplog.text
    from haf.mil.bags import tma_sources

    assert sorted(tma_sources(tmp_path / "out" / "index.tsv")[0]) == ["001", "002"]


def test_tiny_vit_encoder_and_tile_size_check(tmp_path):
    manifest = _cohort(tmp_path, n=2)
    counts = _run(tmp_path, manifest, encoder="tiny-vit-test")
    index = _index(tmp_path)
    features, _ = read_bag(index.loc[0, "h5_path"], expected_dim=64)
    assert counts["patients_ok"] == 2 and features.shape[1] == 64
    with h5py.File(index.loc[0, "h5_path"]) as handle:
        assert handle.attrs["weights_digest"].startswith("random-init:vit_tiny_patch16_224")
    # the batched pipeline gives the same features as the model on the tiles directly
    encoder = load_encoder("tiny-vit-test")
    core = tmp_path / "cores" / "TumorCenter_HE_block1_x1_y1_patient001.png"
    tiles = tile_core(read_core(core)[0], TilingSettings.from_section(SECTION))
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    with torch.inference_mode():
        direct = encoder.model((tiles.tiles.float() / 255.0 - mean) / std).numpy()
    assert np.allclose(features[: tiles.n], direct, atol=1e-4)
    with pytest.raises(HafConfigError, match="not a multiple of tiny-vit-test's patch size 16"):
        _run(tmp_path, manifest, encoder="tiny-vit-test", tile_px=40)


def test_manifest_errors_and_marker_filter(tmp_path):
    (tmp_path / "m.tsv").write_text("patient_id\twsi_files\n001\t\n")
    with pytest.raises(HafInputError, match="tma_files"):
        read_manifest_cores(tmp_path / "m.tsv", ["HE"])
    (tmp_path / "d.tsv").write_text("patient_id\ttma_files\n001\ta.png\n001\tb.png\n")
    with pytest.raises(HafInputError, match="line 3.*patient 001 listed twice"):
        read_manifest_cores(tmp_path / "d.tsv", ["HE"])
    (tmp_path / "k.tsv").write_text(
        "patient_id\ttma_files\n001\tTumorCenter_MHC-1_block1_x1_y1_patient001.png;x/TumorCenter_HE_block1_x2_y1_patient001.png\n"
    )
    patients = read_manifest_cores(tmp_path / "k.tsv", ["MHC1"])
    assert [p.name for p in patients[0].cores] == ["TumorCenter_MHC-1_block1_x1_y1_patient001.png"]


def test_plan_workers_respects_threads():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert plan_workers(cpu, 1, None) == (0, 1)
    assert plan_workers(cpu, 8, None) == (4, 4)
    assert plan_workers(cpu, 8, 2) == (2, 6)
    assert plan_workers(cuda, 8, None) == (7, 1)
    assert plan_workers(cuda, 16, 12) == (12, 1)
    assert plan_workers(cuda, 4, 12) == (3, 1)
