"""Cost of the input inventories (haf.cohort.inventory) on a HANCOCK-sized folder, and of a dry run.

Builds a folder with the real download's file counts (empty files with HANCOCK names; the inventories
stat files, they do not read them): 8 marker folders of ``--cores-per-marker`` core PNGs (the full
cores zip: ~12,000), ``--slides`` WSI h5 names, 712 ICD files, the structured files. Then times, in one
process: listing every source and writing the inventories (first run), the same with nothing changed
(every later ``snakemake`` call), and with one core touched. With ``--dry-run``, also the wall time of
``snakemake -n`` for the cohort, extraction and Stage 1 targets (DAG only; the folder's files are
empty, so nothing can run), all 8 markers configured, which includes Snakemake's own start-up.

    python bench/bench_inventory.py --dry-run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from haf.cohort.inventory import NAME_SOURCES, SOURCES, update_inventory  # noqa: E402

MARKERS = ["HE", "CD3", "CD8", "CD56", "CD68", "CD163", "MHC1", "PDL1"]
SITES = ["CUP", "Hypopharynx", "Larynx", "OralCavity", "Oropharynx_Part1", "Oropharynx_Part2"]


def build(root: Path, cores_per_marker: int, slides: int) -> dict[str, int]:
    """The folder layout of HANCOCK.md section 1, with empty files."""
    structured = root / "StructuredData"
    structured.mkdir(parents=True)
    for name in ("clinical_data", "pathological_data", "blood_data", "blood_data_reference_ranges"):
        (structured / f"{name}.json").write_text("[]")
    (root / "TMA_CellDensityMeasurements").mkdir()
    (root / "TMA_CellDensityMeasurements" / "TMA_celldensity_measurements.csv").write_text("Image\n")
    (root / "TMA_Maps").mkdir()
    for block in range(1, 24):
        (root / "TMA_Maps" / f"TMA_Map_block{block}.csv").write_text("core,Case ID\n")
    icd = root / "TextData" / "icd_codes"
    icd.mkdir(parents=True)
    for pid in range(1, 713):
        (icd / f"SurgeryReport_ICD_Codes_{pid:03d}.txt").touch()
    n_cores = 0
    for marker in MARKERS:
        folder = root / "TMA_TumorCenter_Cores" / f"tma_tumorcenter_{marker}"
        folder.mkdir(parents=True)
        for i in range(cores_per_marker):
            pid, block = i // 2 % 763 + 1, i // 66 + 1
            (
                folder / f"TumorCenter_{marker}_block{block}_x{i % 6 + 1}_y{i % 12 + 1}_patient{pid:03d}.png"
            ).touch()
            n_cores += 1
    for i in range(slides):
        folder = (
            root / "WSI_UNI_encodings" / "WSI_PrimaryTumor" / f"WSI_PrimaryTumor_{SITES[i % 6]}" / "h5_files"
        )
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"PrimaryTumor_HE_{i % 763 + 1:03d}{'_a' if i >= 763 else ''}.h5").touch()
    return {"cores": n_cores, "slides": slides, "icd": 712}


def update_all(results: Path, root: Path, paths: dict[str, str]) -> float:
    started = time.perf_counter()
    for source in SOURCES:
        update_inventory(results, root, paths, source, markers=MARKERS)
    for source in NAME_SOURCES:
        update_inventory(results, root, paths, source, markers=MARKERS, names_only=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores-per-marker", type=int, default=1500)
    parser.add_argument("--slides", type=int, default=705)
    parser.add_argument("--dry-run", action="store_true", help="also time snakemake -n on the folder")
    args = parser.parse_args()
    import yaml

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    paths = {k: v["default"] for k, v in schema["properties"]["paths"]["properties"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        root, results = Path(tmp) / "Hancock_Dataset", Path(tmp) / "results"
        sizes = build(root, args.cores_per_marker, args.slides)
        first = update_all(results, root, paths)
        unchanged = min(update_all(results, root, paths) for _ in range(3))
        core = next((root / "TMA_TumorCenter_Cores" / "tma_tumorcenter_HE").iterdir())
        os.utime(core, ns=(1, 1))
        touched = update_all(results, root, paths)
        inventory_bytes = {
            p.name: p.stat().st_size for p in sorted((results / "cohort" / "inputs").iterdir())
        }
        report = {
            "files": sizes,
            "seconds_first_write": round(first, 3),
            "seconds_unchanged": round(unchanged, 3),
            "seconds_one_core_touched": round(touched, 3),
            "inventory_bytes": inventory_bytes,
        }
        if args.dry_run:
            config = Path(tmp) / "bench.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "data_root": str(root),
                        "results": str(results),
                        "logs": str(Path(tmp) / "logs"),
                        "demo": {"enabled": False},
                        "extract": {"markers": MARKERS},
                    }
                )
            )
            targets = [
                str(results / "tabular" / "fold_0.npz"),
                str(results / "stage1" / "wsi" / "fold_0" / "model.pt"),
            ]
            cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--cores", "1",
                   "--directory", tmp, "--configfile", str(REPO / "config" / "config.yaml"), str(config),
                   "--", *targets]  # fmt: skip
            env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
            started = time.perf_counter()
            run = subprocess.run(cmd, capture_output=True, text=True, env=env)
            report["seconds_snakemake_dry_run"] = round(time.perf_counter() - started, 2)
            report["dry_run_rc"] = run.returncode
            if run.returncode:
                report["dry_run_tail"] = (run.stdout + run.stderr)[-1500:]
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
