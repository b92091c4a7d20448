"""Do the claims table's verdicts pass the demo's controls? One pipeline run per control, verdicts printed.

For each ``demo.control`` (``none``: the planted signal; ``no_signal``: every modality noise;
``permuted_labels``: outcomes permuted across patients; ``missing_noise``: one modality noise whose
availability follows the risk) it runs the pipeline in its own directory (this checkout's Snakefile and
config, the overlay below), up to ``claims`` and ``table1``, and prints:

* each method's fold AUC (mean ± SD over all folds) and pooled AUC with its 95% CI (Table 1);
* every claims row: the pooled effect with the patient-bootstrap CI, the fold-level CI (corrected
  resampled t-test), each test's verdict and the combined verdict;
* the run's wall time.

What the machinery should say (docs/demo.md, "Controls"): with ``no_signal`` and ``permuted_labels`` no
performance row gets a verdict; (e)'s geometry rows do not depend on the labels.

    python bench/bench_controls.py --out /tmp/controls                       # 4 controls, R = 1
    python bench/bench_controls.py --controls no_signal permuted_labels --repeats 3 --out DIR

Overlay per run: ``demo.control``, ``demo.n_patients``, ``cv.repeats`` and ``run_methods`` (default: the four
methods the claims (a)-(e) compare). An existing run directory is reused (Snakemake reruns what changed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import _repo
import pandas as pd
import yaml

CONTROLS = ("none", "no_signal", "permuted_labels", "missing_noise")
CLAIM_METHODS = ["haf", "fusion_mlp_all", "ga", "drop"]


def run_control(control: str, out: Path, args: argparse.Namespace) -> float:
    """Run the pipeline for one control; returns its wall seconds (its log in ``out/control.log``)."""
    directory = out / control
    directory.mkdir(parents=True, exist_ok=True)
    overlay = directory / "overlay.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "demo": {"control": control, "n_patients": args.n_patients},
                "cv": {"repeats": args.repeats},
                "run_methods": list(args.methods),
            }
        )
    )
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(_repo.REPO / "Snakefile"), "--directory", str(directory),
        "--configfile", str(_repo.REPO / "config" / "config.yaml"), str(overlay), "--cores", str(args.cores),
        "--", "claims", "table1",
    ]  # fmt: skip
    start = time.perf_counter()
    with open(out / f"{control}.log", "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{control}: snakemake failed (rc {done.returncode}); see {out / f'{control}.log'}")
    return wall


def report(control: str, directory: Path, wall: float) -> None:
    tables = directory / "results" / "tables"
    t1 = pd.read_csv(tables / "table1.csv")
    print(f"\n## control {control}: {wall:.0f} s wall")
    for _, r in t1.iterrows():
        print(
            f"  {r['method']:<16} fold AUC {r['auc_mean']:.3f} ± {r['auc_sd_all_folds']:.3f}   "
            f"pooled {r['auc_pooled']:.3f} [{r['auc_ci_low']:.3f}, {r['auc_ci_high']:.3f}]"
        )
    claims = pd.read_csv(tables / "claims.csv")
    for _, r in claims.iterrows():
        print(
            f"  {r['claim'][:3]} {r['metric'][:58]:<58} {r['effect']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
            f"  folds {r['fold_effect']:+.3f} [{r['fold_ci_low']:+.3f}, {r['fold_ci_high']:+.3f}]"
            f"  {r['bootstrap_verdict']}/{r['fold_verdict']} -> {r['verdict']}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--controls", nargs="+", choices=CONTROLS, default=list(CONTROLS))
    ap.add_argument("--repeats", type=int, default=1, help="cv.repeats (R)")
    ap.add_argument("--n-patients", type=int, default=200)
    ap.add_argument("--methods", nargs="+", default=CLAIM_METHODS)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="one run directory per control under it")
    ap.add_argument("--report-only", action="store_true", help="print the tables of existing runs")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"controls {args.controls}, R = {args.repeats}, {args.n_patients} patients, methods {args.methods}, "
        f"--cores {args.cores}"
    )
    for control in args.controls:
        wall = float("nan") if args.report_only else run_control(control, args.out, args)
        report(control, args.out / control, wall)


if __name__ == "__main__":
    main()
