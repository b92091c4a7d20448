"""Ten folds at once vs one fold at a time: Stage 1 CLAM (wsi) and one no-detach ablation, demo size.

Both arms run in their own subprocess (torch 1 thread unless ``--threads``) on the same inputs, written
once here:

* Stage 1: a synthetic WSI cohort in the pipeline's file contracts (``tests/fakes/mil.py``
  ``write_synthetic_cohort``: 200 patients, bags of 24-160 1024-d instances, 10 folds), the bags cached
  in RAM (the demo's case); ``wsi`` trained on every fold: the old path calls ``run_stage1`` once per
  fold, the new path ``run_stage1_folds`` once for all folds;
* no-detach: ten folds' synthetic fold inputs (200 patients, HANCOCK-like missingness) and one shared
  set of WSI/TMA bags (24-160 x 1024) carrying their pathology signal; ``haf_nodetach`` (GA + random
  drop, Eq. 12): the old path calls ``train_joint`` per fold, the new path ``train_joint_folds`` once.

The old path is the code of another checkout (``--old``, e.g. ``git worktree add /tmp/oldmil <commit>``);
each subprocess imports its own checkout's ``src/`` and ``tests/fakes``.  Default settings are the
config's, except an epoch cap (``--max-epochs``, also the early-stopping patience unless
``--es-patience``), so both arms run the same number of epochs whatever their seeds select (the two
paths draw different random streams).  Times are the training call (plus the final embedding and
predictions, no output files) inside each subprocess, wall and process CPU seconds (on a shared machine
the CPU seconds vary less), and the subprocess's wall time including imports; ``--repeats`` runs the
arms alternately and prints medians.

    git worktree add /tmp/oldmil 09952aa
    python bench/bench_stacked_mil.py --old /tmp/oldmil [--parts stage1,nodetach] [--max-epochs 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _repo  # noqa: F401 (puts the checkout's src/ and tests/ first on sys.path)
import numpy as np

DRIVER = r"""
import json, sys, time
args = json.loads(sys.argv[1])
root = args["repo"]
sys.path[:0] = [root + "/src", root + "/tests"]
import logging
logging.basicConfig(level=logging.WARNING)
import torch
torch.set_num_threads(args["threads"])
from fakes.config import declare, load_config
device = torch.device("cpu")
out = {}
if args["part"] == "stage1":
    import haf.mil.train as t
    section = load_config({"stage1": args["stage1"]})["stage1"]
    c = args["cohort"]
    common = dict(manifest=c["manifest"], targets=c["targets"], tma_index=c["tma_index"], section=section,
                  device=device)
    start, cpu = time.perf_counter(), time.process_time()
    if args["mode"] == "old":
        results = [t.run_stage1(pmod="wsi", fold=f, folds=c["folds"], **common) for f in args["folds"]]
    else:
        results = t.run_stage1_folds("wsi", args["folds"], c["manifest"], c["targets"], c["folds"],
                                     c["tma_index"], section, device)
    out["seconds"], out["cpu"] = time.perf_counter() - start, time.process_time() - cpu
    out["epochs"] = [len(r.history) for r in results]
    out["test_auc"] = [float(r.predictions.query("part == 'test'").pipe(
        lambda p: __import__("haf.eval.scores", fromlist=["auc_or_nan"]).auc_or_nan(
            p["label"].to_numpy(), p["risk"].to_numpy()))) for r in results]
else:
    from haf.artifacts.fold_inputs import FoldInputs
    from haf.fusion.spec import MethodSpec
    from haf.mil.bags import BagStore
    import haf.fusion.joint as j
    config = load_config({k: args[k] for k in ("stage1", "stage2", "stage3")})
    params = {k: config[k] for k in ("stage1", "stage2", "stage3")}
    name = args["method"]
    spec = MethodSpec.from_declaration(name, declare({name: args["declaration"]})[name])
    inputs = [FoldInputs.load(p) for p in args["inputs"]]
    stores = {}
    for pm, files in args["bags"].items():
        stores[pm] = BagStore.from_files({p: [f] for p, f in files.items()}, name=pm, dim=args["dim"])
        stores[pm].cache(device, 4e9)
    start, cpu = time.perf_counter(), time.process_time()
    if args["mode"] == "old":
        runs = [j.train_joint(i, spec, params, device, bags=stores) for i in inputs]
    else:
        runs = j.train_joint_folds(inputs, spec, params, device, bags=stores)
    out["seconds"], out["cpu"] = time.perf_counter() - start, time.process_time() - cpu
    out["epochs"] = [len(r.history) for r in runs]
print("RESULT " + json.dumps(out))
"""


def run_arm(repo: Path, mode: str, payload: dict) -> dict:
    args = {**payload, "repo": str(repo), "mode": mode}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(args)], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} arm failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return {**json.loads(line[len("RESULT ") :]), "wall": wall}


def run_pair(old: Path, new: Path, payload: dict, repeats: int) -> tuple[list[dict], list[dict]]:
    """Both arms ``repeats`` times, alternating (old, new, old, new, ...) so a change of load hits both."""
    olds, news = [], []
    for _ in range(repeats):
        olds.append(run_arm(old, "old", payload))
        news.append(run_arm(new, "new", payload))
    return olds, news


def report(title: str, olds: list[dict], news: list[dict]) -> None:
    """Medians over the repeats: wall and process CPU seconds of the timed call, and their ratios."""
    med = {
        (arm, key): float(np.median([r[key] for r in runs]))
        for arm, runs in (("old", olds), ("new", news))
        for key in ("seconds", "cpu", "wall")
    }
    print(title)
    for arm, label, runs in (("old", "one fold at a time", olds), ("new", "all folds stacked ", news)):
        each = ", ".join(f"{r['seconds']:.1f}" for r in runs)
        print(
            f"  {arm} ({label}): {med[arm, 'seconds']:.1f} s wall [{each}], {med[arm, 'cpu']:.1f} s CPU, "
            f"{med[arm, 'wall']:.1f} s with start-up; epochs per fold {runs[0]['epochs']}"
        )
    print(
        f"  ratio old / new: {med['old', 'seconds'] / med['new', 'seconds']:.2f}x wall, "
        f"{med['old', 'cpu'] / med['new', 'cpu']:.2f}x CPU ({len(olds)} run(s) each, medians)",
        flush=True,
    )
    if "test_auc" in olds[0]:
        print(
            f"  mean test AUC old {np.nanmean(olds[0]['test_auc']):.3f}, new {np.nanmean(news[0]['test_auc']):.3f} "
            "(different random streams: not expected to be equal)"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="checkout of the per-fold code (git worktree add ...)")
    p.add_argument("--parts", default="stage1,nodetach")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--patients", type=int, default=200)
    p.add_argument("--min-n", type=int, default=24)
    p.add_argument("--max-n", type=int, default=160)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--max-epochs", type=int, default=20, help="epoch cap of both arms")
    p.add_argument("--es-patience", type=int, default=None, help="default: --max-epochs (no early stop)")
    p.add_argument("--method", default="haf_nodetach")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="runs of each arm, alternating; medians")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    from fakes.fusion import synthetic_bags, synthetic_fold_inputs
    from fakes.mil import BagSpec, write_synthetic_cohort

    old, new = Path(args.old).resolve(), _repo.REPO
    patience = args.es_patience or args.max_epochs
    train = {"max_epochs": args.max_epochs, "es_patience": patience}
    parts = args.parts.split(",")
    folds = list(range(args.folds))
    print(
        f"old {old}, new {new}; torch threads {args.threads}; {args.patients} patients, {args.folds} folds, "
        f"bags of {args.min_n}-{args.max_n} x {args.dim}; epoch cap {args.max_epochs}, patience {patience}"
    )
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        if "stage1" in parts:
            c = write_synthetic_cohort(
                tmp / "stage1",
                n_patients=args.patients,
                wsi=BagSpec(args.min_n, args.max_n, args.dim, signal=1.0),
                k=args.folds,
                seed=0,
            )
            payload = {
                "part": "stage1",
                "threads": args.threads,
                "folds": folds,
                "stage1": {"wsi_dim": args.dim, **train},
                "cohort": {k: str(getattr(c, k)) for k in ("manifest", "targets", "folds", "tma_index")},
            }
            olds, news = run_pair(old, new, payload, args.repeats)
            report("Stage 1 wsi, all folds (training + full-bag embedding + predictions):", olds, news)
        if "nodetach" in parts:
            inputs = [
                synthetic_fold_inputs(args.patients, fold=f, n_folds=args.folds, seed=2026) for f in folds
            ]
            paths = []
            for f, inp in zip(folds, inputs, strict=True):
                paths.append(str(tmp / f"fold_{f}.npz"))
                inp.save(paths[-1])
            stores = synthetic_bags(
                inputs[0], tmp / "bags", seed=0, dim=args.dim, sizes=(args.min_n, args.max_n)
            )
            bags = {pm: {pid: str(s.files[0]) for pid, s in st.sources.items()} for pm, st in stores.items()}
            decl = {"family": "fusion", "align": "ga", "drop": True, "detach": False}
            if args.method != "haf_nodetach":
                from fakes.config import load_config

                decl = load_config()["methods"][args.method]
            payload = {
                "part": "nodetach",
                "threads": args.threads,
                "method": args.method,
                "declaration": decl,
                "inputs": paths,
                "bags": bags,
                "dim": args.dim,
                "stage1": {},
                "stage2": {},
                "stage3": train,
            }
            olds, news = run_pair(old, new, payload, args.repeats)
            report(f"no-detach {args.method}, all folds (training + final embedding):", olds, news)


if __name__ == "__main__":
    sys.exit(main())
