"""Ten folds of each comparator: the former per-fold trainer vs the stacked trainer (issue 13).

Old path: the code of a given commit (default: the start of the comparators' move onto the stacked
runtime), checked out with ``git worktree add`` into a scratch directory and imported in a subprocess
(``PYTHONPATH`` pointing there), training the folds one after the other with ``train_comparator``.
New path: this checkout's ``train_comparator_folds`` training the same folds as one stacked run.  Both
run in their own subprocess on one thread, on the same inputs (``tests/fakes/fusion.py``
``synthetic_fold_inputs(n, fold=f, n_folds=10, dims={"wsi": 64, "tma": 64})``) with the default config
sections; ``--max-epochs`` caps ``max_epochs`` of both sections for both paths (same cap, said in the
output).  Timed: training only (imports, building the inputs and writing outputs excluded).  The two
paths draw different random numbers (per-fold seeds and generators in the new one), so their early
stopping may end at different epochs: the epochs each path ran are printed with the times, and the
time per fold-epoch too.

Usage::

    python bench/bench_comparators.py                          # all five, 10 folds, 200 patients
    python bench/bench_comparators.py --families parachute --max-epochs 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ["late_fusion", "attention_fusion", "mfmf", "feature_interaction", "parachute"]
DEFAULT_OLD = "09952aa"  # the last commit before the comparators moved onto the stacked runtime


def worker(args: argparse.Namespace) -> None:
    """Runs inside the subprocess: ``haf`` is whichever checkout PYTHONPATH names."""
    import torch

    # the checkout's own test fakes (its config and schema): PYTHONPATH is that checkout's src/
    sys.path.insert(0, str(Path(os.environ["PYTHONPATH"]).parent / "tests"))
    from fakes.config import declare, load_config
    from fakes.fusion import synthetic_fold_inputs

    import haf
    from haf.comparators import train as comparators

    torch.set_num_threads(1)
    overrides = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
    config = load_config({"stage3": overrides, "parachute": overrides})
    sections = {"stage3": config["stage3"], "parachute": config["parachute"]}
    decl = declare({args.family: {"family": args.family}})[args.family]
    folds = [
        synthetic_fold_inputs(args.patients, fold=f, n_folds=args.folds, dims={"wsi": 64, "tma": 64})
        for f in range(args.folds)
    ]
    device = torch.device("cpu")
    start = time.perf_counter()
    if args.worker == "old":
        runs = [comparators.train_comparator(f, decl, sections, device) for f in folds]
    else:
        runs = comparators.train_comparator_folds(folds, decl, sections, device)
    seconds = time.perf_counter() - start
    epochs = [len(r.history) for r in runs]
    print(json.dumps({"seconds": seconds, "epochs": epochs, "haf": haf.__file__}))


def run(path: str, src: Path, args: argparse.Namespace, family: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", path, "--family", family, "--folds", str(args.folds),
           "--patients", str(args.patients)]  # fmt: skip
    if args.max_epochs is not None:
        cmd += ["--max-epochs", str(args.max_epochs)]
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if not result["haf"].startswith(str(src)):
        raise RuntimeError(f"{path} path imported {result['haf']}, not the checkout under {src}")
    return result


def old_checkout(ref: str, where: Path) -> Path:
    if not (where / "src" / "haf").exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), ref], check=True,
                       capture_output=True)  # fmt: skip
    return where


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--max-epochs", type=int, default=None, help="cap max_epochs (both paths)")
    parser.add_argument("--old-ref", default=DEFAULT_OLD, help="commit of the per-fold trainer")
    parser.add_argument("--old-path", type=Path, default=Path("/tmp/haf_bench_oldcomp"))
    parser.add_argument("--worker", choices=["old", "new"], help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    old = old_checkout(args.old_ref, args.old_path)
    cap = "default max_epochs" if args.max_epochs is None else f"max_epochs capped at {args.max_epochs}"
    print(f"{args.folds} folds x {args.patients} patients, 1 thread, default sections, {cap}; "
          f"old = {args.old_ref} (per-fold train_comparator), new = this checkout (train_comparator_folds)")  # fmt: skip
    print(f"{'family':<20} {'old s':>8} {'new s':>8} {'ratio':>6}  {'old fold-epochs':>15} {'new fold-epochs':>15}"
          f"  {'old s/fold-epoch':>16} {'new s/fold-epoch':>16}")  # fmt: skip
    for family in args.families:
        a = run("old", old / "src", args, family)
        b = run("new", REPO / "src", args, family)
        ea, eb = sum(a["epochs"]), sum(b["epochs"])
        print(f"{family:<20} {a['seconds']:8.1f} {b['seconds']:8.1f} {a['seconds'] / b['seconds']:6.2f}  "
              f"{ea:15d} {eb:15d}  {a['seconds'] / ea:16.4f} {b['seconds'] / eb:16.4f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
