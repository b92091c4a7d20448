"""Which epoch to keep? Test metrics and chosen epochs of every ``training.selection`` option (issue 14).

For each option of ``training.selection`` (best, smoothed, min_epochs, average) it trains the Stage 3
methods given (default ``haf`` and ``fusion_mlp_all``) on every fold of a set of fold inputs, all folds
stacked (``train_fusion_folds``), and prints per (method, option): the pooled test AUC (every fold's
test patients with a label together), the mean and SD of the fold test AUCs, and the distribution of
the kept epochs (min, median, max, how many folds kept an epoch <= 5). Stage 2 (GA) projectors are
trained once per fold with the default selection and shared by every option, so only Stage 3's
selection varies. Two cohorts:

* ``--fold-inputs DIR``: the fold_inputs of a pipeline run (e.g. ``results/fold_inputs`` of the demo);
* ``--synthetic N``: ten folds of ``tests/fakes/fusion.py``'s synthetic cohort of N patients
  (763 = HANCOCK's size).

    python bench/bench_selection.py --fold-inputs results/fold_inputs
    python bench/bench_selection.py --synthetic 763

One intra-op thread; one run (numbers vary with the seed; the script prints the settings it used).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _repo  # noqa: F401 (puts the checkout's src/ and tests/ first on sys.path)
import numpy as np
import torch
from fakes.config import declare, load_config
from fakes.fusion import synthetic_fold_inputs
from sklearn.metrics import roc_auc_score

from haf.alignment.train import train_alignment_folds
from haf.artifacts.fold_inputs import FoldInputs
from haf.fusion.spec import MethodSpec
from haf.fusion.train import train_fusion_folds
from haf.runtime.tensors import predict_scores
from haf.settings import Stage2Settings, Stage3Settings, TrainingSettings

OPTIONS = ("best", "smoothed", "min_epochs", "average")
METHODS = {
    "haf": {"family": "fusion", "align": "ga", "drop": True},
    "fusion_mlp_all": {"family": "fusion", "align": "none", "drop": False},
}


def load_folds(args: argparse.Namespace) -> list[FoldInputs]:
    if args.fold_inputs:
        paths = sorted(Path(args.fold_inputs).glob("fold_*.npz"), key=lambda p: int(p.stem.split("_")[1]))
        if not paths:
            raise SystemExit(f"{args.fold_inputs}: no fold_*.npz")
        return [FoldInputs.load(p) for p in paths]
    return [synthetic_fold_inputs(args.synthetic, fold=f, n_folds=10, seed=args.seed) for f in range(10)]


def evaluate(runs, folds) -> dict[str, float]:
    scores, labels, fold_aucs, kept = [], [], [], []
    for run, inp in zip(runs, folds, strict=True):
        test = inp.index("test")
        test = test[~np.isnan(inp.label[test])]
        s = predict_scores(run.score_fn, run.tensors, test)
        y = inp.label[test]
        scores.append(s)
        labels.append(y)
        if len(set(y)) == 2:
            fold_aucs.append(roc_auc_score(y, s))
        h = run.history
        kept.append(int(h.loc[h["best"], "epoch"].iloc[0]))
    kept_a = np.array(kept)
    return {
        "pooled_auc": float(roc_auc_score(np.concatenate(labels), np.concatenate(scores))),
        "fold_auc_mean": float(np.mean(fold_aucs)),
        "fold_auc_sd": float(np.std(fold_aucs, ddof=1)),
        "kept_min": int(kept_a.min()),
        "kept_median": float(np.median(kept_a)),
        "kept_max": int(kept_a.max()),
        "kept_le5": int((kept_a <= 5).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--fold-inputs", help="folder of fold_<k>.npz")
    source.add_argument("--synthetic", type=int, help="patients of a synthetic 10-fold cohort")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    config = load_config()
    stage2, stage3 = (
        Stage2Settings.from_config(config["stage2"]),
        Stage3Settings.from_config(config["stage3"]),
    )
    folds = load_folds(args)
    print(f"{len(folds)} folds, {folds[0].n} patients; Stage 2/3 settings: the schema defaults (config.yaml)")
    banks = []
    if any(METHODS[m]["align"] != "none" for m in args.methods):
        started = time.perf_counter()
        banks = train_alignment_folds(folds, "ga", stage2, cpu)
        print(f"Stage 2 (GA, selection best) {time.perf_counter() - started:.0f} s")
    base = dict(config["training"])
    print(f"training section: {base} (selection varied below)")
    header = (
        "method          selection    pooled AUC  fold AUC (mean+-SD)  kept epoch min/median/max  <=5   s"
    )
    print(header)
    for name in args.methods:
        spec = MethodSpec.from_declaration(name, declare({name: METHODS[name]})[name])
        for option in args.options:
            selection = TrainingSettings.from_config(
                load_config({"training": {**base, "selection": option}})["training"]
            )
            t0 = time.perf_counter()
            runs = train_fusion_folds(
                folds, spec, stage3, stage2, cpu,
                projectors=[b.projectors for b in banks] if spec.uses_stage2 else None,
                stage2_meta=[{"untrained": b.untrained} for b in banks] if spec.uses_stage2 else None,
                selection=selection,
            )  # fmt: skip
            r = evaluate(runs, folds)
            print(
                f"{name:15s} {option:11s}  {r['pooled_auc']:.3f}       {r['fold_auc_mean']:.3f} +- {r['fold_auc_sd']:.3f}"
                f"        {r['kept_min']:3d} / {r['kept_median']:5.1f} / {r['kept_max']:3d}         "
                f"{r['kept_le5']:2d}  {time.perf_counter() - t0:4.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
