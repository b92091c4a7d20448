"""TMA feature extraction speed: a naive CLAM-style loop vs the ``extract_tma`` rule's path, end to end.

Both arms read the same generated H&E-like core PNGs (``tests/fakes/extract.py``: pink stroma, purple
nuclei, a round core on white glass, HANCOCK file names), make the same tiles (same tissue mask and
grid: ``haf.extract.tiling.tile_core``) with the same encoder object, and write one h5 per patient:

(a) naive, in the style of CLAM's ``extract_features_fp.py``: per core, Pillow decode in the main
    process, per-tile ``ToTensor`` + ``Normalize`` (torchvision transforms on PIL tiles), batches of 256
    tiles in fp32 (no autocast), ``.cpu().numpy()`` after every batch, h5 appended batch by batch; no
    overlap of decoding with compute;
(b) :func:`haf.extract.extraction.extract_tma_features`: DataLoader workers decode and tile, pinned
    uint8 tiles, normalisation on the device, bf16 autocast on CUDA, optional torch.compile /
    channels_last, results read back one batch late, atomic h5 per patient, the index.

Printed: tiles, seconds and tiles/s end to end (decode, tile, encode, write) for both arms, the ratio
(b)/(a), the largest feature difference between the two (fp32 on CPU: ~1e-6; bf16 on CUDA: ~1e-2),
and the single-process decode+tile rate (the CPU bound of a worker). Both arms get one warm-up first.

CPU (tiny encoder; ~21 s including generation on a 2-core machine):
    python bench/bench_extract.py
H100 (UNI architecture with random weights, HANCOCK-like core size; see docs/extract.md):
    python bench/bench_extract.py --device cuda --encoder uni --random-weights --n-cores 400 \\
        --core-px 3072 --batch-size 512 --threads 16 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _repo  # noqa: F401 (puts the checkout's src/ and tests/ first on sys.path)
import h5py
import numpy as np
import pandas as pd
import torch
from fakes.config import load_config
from fakes.extract import he_tile
from PIL import Image

from haf.extract.extraction import extract_tma_features
from haf.extract.registry import load_encoder
from haf.extract.tiling import TilingSettings, tile_core
from haf.logs import setup_logging
from haf.runtime.device import resolve_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _render_core(path: Path, core_px: int, seed: np.random.SeedSequence) -> Path:
    rng = np.random.default_rng(seed)
    density = float(rng.uniform(0.6, 2.5))
    Image.fromarray(he_tile(rng, core_px, density=density, tissue=float(rng.uniform(0.85, 0.95)))).save(path)
    return path


def make_cores(
    folder: Path, n_cores: int, unique: int, core_px: int, per_patient: int, seed: int, workers: int = 1
) -> Path:
    """Render ``unique`` distinct cores and copy them to ``n_cores`` HANCOCK-named PNGs; write a manifest.

    ``workers`` > 1 renders in that many processes (a 3072-px core takes seconds to draw and save),
    each render from its own child seed, so the images differ from the serial ones.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        paths = [folder / f"unique_{k}.png" for k in range(unique)]
        seeds = np.random.SeedSequence(seed).spawn(unique)
        with ProcessPoolExecutor(max_workers=min(workers, unique)) as pool:
            sources = list(pool.map(_render_core, paths, [core_px] * unique, seeds))
    for k in range(unique if workers <= 1 else 0):
        path = folder / f"unique_{k}.png"
        density = float(rng.uniform(0.6, 2.5))
        Image.fromarray(he_tile(rng, core_px, density=density, tissue=float(rng.uniform(0.85, 0.95)))).save(
            path
        )
        sources.append(path)
    rows: dict[str, list[str]] = {}
    for i in range(n_cores):
        pid = f"{i // per_patient + 1:03d}"
        block, row, col = i // 72 + 1, i // 6 % 12 + 1, i % 6 + 1
        path = folder / f"TumorCenter_HE_block{block}_x{col}_y{row}_patient{pid}.png"
        shutil.copyfile(sources[i % unique], path)
        rows.setdefault(pid, []).append(str(path))
    manifest = folder / "manifest.tsv"
    pd.DataFrame({"patient_id": list(rows), "tma_files": [";".join(v) for v in rows.values()]}).to_csv(
        manifest, sep="\t", index=False
    )
    return manifest


def naive_loop(manifest: Path, out: Path, encoder, settings: TilingSettings, device: torch.device) -> int:
    """CLAM extract_features_fp style: PIL decode, per-tile transforms, fp32 batches of 256, h5 appends."""
    from torchvision import transforms

    model = encoder.model.to(device).eval()
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(encoder.spec.mean, encoder.spec.std)]
    )
    frame = pd.read_csv(manifest, sep="\t", dtype=str)
    out.mkdir(parents=True, exist_ok=True)
    total = 0

    def flush(h5_path: Path, tiles: list, coords: list, mode: str) -> str:
        if not tiles:
            return mode
        batch = torch.stack([transform(Image.fromarray(t)) for t in tiles]).to(device)
        with torch.inference_mode():
            features = model(batch).cpu().numpy()
        save_hdf5(h5_path, {"features": features, "coords": np.asarray(coords, np.int32)}, mode)
        tiles.clear()
        coords.clear()
        return "a"

    for rec in frame.itertuples(index=False):
        h5_path = out / f"{rec.patient_id}.h5"
        mode, tiles, coords = "w", [], []
        for path in rec.tma_files.split(";"):
            image = np.asarray(Image.open(path).convert("RGB"))
            core = tile_core(torch.from_numpy(image.copy()).permute(2, 0, 1).contiguous(), settings)
            for k in range(core.n):
                tiles.append(core.tiles[k].permute(1, 2, 0).numpy())
                coords.append(core.coords[k])
                total += 1
                if len(tiles) == 256:
                    mode = flush(h5_path, tiles, coords, mode)
        flush(h5_path, tiles, coords, mode)
    sync(device)
    return total


def save_hdf5(path: Path, assets: dict[str, np.ndarray], mode: str) -> None:
    """CLAM's utils.file_utils.save_hdf5: create resizable datasets, then append."""
    with h5py.File(path, mode) as handle:
        for key, value in assets.items():
            if key not in handle:
                handle.create_dataset(
                    key, data=value, maxshape=(None, *value.shape[1:]), chunks=(1, *value.shape[1:])
                )
            else:
                dset = handle[key]
                dset.resize(len(dset) + len(value), axis=0)
                dset[-len(value) :] = value


def decode_and_tile_rate(manifest: Path, settings: TilingSettings, limit: int = 12) -> float:
    """Tiles/s of decoding + tiling in one process (what one DataLoader worker sustains)."""
    from haf.extract.tiling import read_core

    paths = [p for files in pd.read_csv(manifest, sep="\t", dtype=str)["tma_files"] for p in files.split(";")]
    started, n = time.perf_counter(), 0
    for path in paths[:limit]:
        n += tile_core(read_core(path)[0], settings).n
    return n / (time.perf_counter() - started)


def compare(a: Path, b: Path) -> float:
    worst = 0.0
    for path in sorted(a.glob("*.h5")):
        with h5py.File(path) as x, h5py.File(b / path.name) as y:
            fa, fb = x["features"][()], y["features"][()]
            assert fa.shape == fb.shape, (path.name, fa.shape, fb.shape)
            assert np.array_equal(x["coords"][()], y["coords"][()]), path.name
            if len(fa):
                worst = max(worst, float(np.abs(fa - fb).max()))
    return worst


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoder", default="tiny-vit-test", help="registry name (uni on a GPU)")
    parser.add_argument(
        "--random-weights", action="store_true", help="uni/uni2-h with random weights (speed only)"
    )
    parser.add_argument("--weights", default=None, help="a local checkpoint instead")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-cores", type=int, default=48)
    parser.add_argument("--cores-per-patient", type=int, default=2)
    parser.add_argument(
        "--unique-cores", type=int, default=4, help="distinct renders, copied to n-cores files"
    )
    parser.add_argument("--core-px", type=int, default=1536)
    parser.add_argument("--tile-px", type=int, default=224)
    parser.add_argument("--tile-mpp", type=float, default=0.5)
    parser.add_argument("--core-mpp", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=256, help="arm (b); arm (a) always uses 256")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="the rule's threads for arm (b)"
    )
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--keep", default=None, help="keep the generated cores and outputs in this folder")
    args = parser.parse_args(argv)

    setup_logging(None, level=30)  # warnings only: the arms' own logs would drown the figures
    device = resolve_device(args.device)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_extract_"))
    try:
        t0 = time.perf_counter()
        manifest = make_cores(
            root / "cores", args.n_cores, args.unique_cores, args.core_px, args.cores_per_patient, args.seed
        )
        print(
            f"generated {args.n_cores} cores of {args.core_px} px ({args.unique_cores} distinct) in {time.perf_counter() - t0:.1f} s"
        )
        section = load_config(
            {
                "extract": {
                    "encoder": args.encoder,
                    "weights": args.weights,
                    "markers": ["HE"],
                    "tile_px": args.tile_px,
                    "tile_mpp": args.tile_mpp,
                    "core_mpp": args.core_mpp,
                    "batch_size": args.batch_size,
                    "num_workers": args.num_workers,
                    "compile": args.compile,
                    "channels_last": args.channels_last,
                }
            }
        )["extract"]
        settings = TilingSettings.from_section(section)
        encoder = load_encoder(args.encoder, args.weights, allow_random=args.random_weights)
        torch.set_num_threads(max(1, args.threads))
        print(
            f"encoder {args.encoder} ({encoder.spec.dim}-d, {encoder.source.origin} weights) on {device}; "
            f"tiles {args.tile_px} px at {args.tile_mpp} um/px from cores at {args.core_mpp} um/px; threads {args.threads}"
        )

        # warm-up: cuDNN/compile caches, first worker fork, page cache (two patients each)
        warm = root / "warm_manifest.tsv"
        pd.read_csv(manifest, sep="\t", dtype=str).head(2).to_csv(warm, sep="\t", index=False)
        naive_loop(warm, root / "warm_a", encoder, settings, device)
        extract_tma_features(
            warm,
            root / "warm_b" / "index.tsv",
            root / "warm_b" / "h5",
            section,
            device,
            threads=args.threads,
            progress=False,
            encoder=encoder,
        )

        sync(device)
        t0 = time.perf_counter()
        tiles_a = naive_loop(manifest, root / "a", encoder, settings, device)
        sync(device)
        seconds_a = time.perf_counter() - t0

        torch.set_num_threads(max(1, args.threads))
        t0 = time.perf_counter()
        counts = extract_tma_features(
            manifest,
            root / "b" / "index.tsv",
            root / "b" / "h5",
            section,
            device,
            threads=args.threads,
            progress=False,
            encoder=encoder,
        )
        sync(device)
        seconds_b = time.perf_counter() - t0
        tiles_b = int(counts["tiles_extracted"])
        assert tiles_a == tiles_b, (tiles_a, tiles_b)
        worst = compare(root / "a", root / "b" / "h5")
        decode_rate = decode_and_tile_rate(manifest, settings)

        result = {
            "encoder": args.encoder,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": args.threads,
            "n_cores": args.n_cores,
            "core_px": args.core_px,
            "tiles": tiles_a,
            "naive_seconds": round(seconds_a, 3),
            "naive_tiles_per_s": round(tiles_a / seconds_a, 1),
            "rule_seconds": round(seconds_b, 3),
            "rule_tiles_per_s": round(tiles_b / seconds_b, 1),
            "ratio": round(seconds_a / seconds_b, 2),
            "max_abs_feature_difference": worst,
            "decode_tile_tiles_per_s_one_process": round(decode_rate, 1),
        }
        print(
            f"(a) naive CLAM-style loop : {tiles_a} tiles in {seconds_a:7.2f} s = {tiles_a / seconds_a:8.1f} tiles/s"
        )
        print(
            f"(b) extract_tma rule path : {tiles_b} tiles in {seconds_b:7.2f} s = {tiles_b / seconds_b:8.1f} tiles/s"
        )
        print(f"ratio (b)/(a): {seconds_a / seconds_b:.2f}x   max |feature difference|: {worst:.2e}")
        print(f"decode + tile in one process: {decode_rate:.1f} tiles/s (the per-worker bound)")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return result
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
