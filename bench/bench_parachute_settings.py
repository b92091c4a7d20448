"""PARACHUTE with its published settings vs the small-cohort preset, on a few folds of a synthetic cohort.

Both settings train the same folds (``tests/fakes/fusion.py`` ``synthetic_fold_inputs(n, fold=f,
n_folds=K, seed=s)``: one cohort of ``n`` patients, latent risk planted in the modalities as in the
demo, HANCOCK-like missingness; fold f's test part is every K-th patient of a seeded order) as one
stacked run each (``train_comparator_folds``, one thread, CPU).  Published = the schema's ``parachute``
section (the PARACHUTE paper's values, ``config/config.yaml``); small cohort = that section with
``config/presets/parachute_small_cohort.yaml`` merged over it.  Printed per setting: the pooled
Harrell's C of the test risks of all trained folds (out-of-fold, as the survival table pools them),
the mean and SD of the per-fold test C, the epochs each fold ran, the selected epochs, and the wall
time of training.  ``--scale`` multiplies the planted signal of every modality (1 = the demo's).

Usage::

    python bench/bench_parachute_settings.py                        # 300 patients, folds 0-2 of 5
    python bench/bench_parachute_settings.py --patients 200 --folds 3 --of 5 --seed 1
    python bench/bench_parachute_settings.py --max-epochs 60        # cap both settings (said in the output)
    python bench/bench_parachute_settings.py --settings small_cohort --cox-normalisation events
    python bench/bench_parachute_settings.py --settings small_cohort --p-miss 0.3   # a per-p model's training

    python bench/bench_parachute_settings.py --fold-inputs results/fold_inputs --settings small_cohort

``--cox-normalisation`` and ``--p-miss`` override that key in every setting run (printed with it).
``--fold-inputs DIR`` trains on a run's own ``fold_*.npz`` (e.g. the demo's ``results/fold_inputs``: every
fold in it) instead of the synthetic cohort.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _repo  # noqa: F401  (this checkout's haf and tests/fakes first on sys.path)
import numpy as np
import torch
import yaml
from fakes.config import declare, load_config
from fakes.fusion import synthetic_fold_inputs

from haf.artifacts.fold_inputs import FoldInputs
from haf.comparators.train import train_comparator_folds
from haf.demo.common import DEFAULT_SIGNAL
from haf.eval.scores import cindex_or_nan
from haf.runtime.tensors import predict_scores

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "config" / "presets" / "parachute_small_cohort.yaml"


def sections(preset: bool, args: argparse.Namespace) -> dict[str, dict]:
    """The ``parachute`` (and ``stage3``) sections of one setting, schema-filled, with the CLI overrides."""
    overrides = yaml.safe_load(PRESET.read_text()) if preset else {}
    config = load_config(overrides)
    if args.max_epochs is not None:
        config["parachute"]["max_epochs"] = min(config["parachute"]["max_epochs"], args.max_epochs)
    if args.cox_normalisation is not None:
        config["parachute"]["cox_normalisation"] = args.cox_normalisation
    if args.p_miss is not None:
        config["parachute"]["p_miss"] = args.p_miss
    return {"stage3": config["stage3"], "parachute": config["parachute"]}


def train(folds, setting: dict[str, dict]) -> dict:
    """Train the folds stacked; pooled and per-fold test C-index, epochs, selected epochs, seconds."""
    decl = declare({"parachute": {"family": "parachute", "label": "PARACHUTE"}})["parachute"]
    start = time.perf_counter()
    runs = train_comparator_folds(folds, decl, setting, torch.device("cpu"))
    seconds = time.perf_counter() - start
    times, events, risks, per_fold = [], [], [], []
    for run, inputs in zip(runs, folds, strict=True):
        test = inputs.index("test")
        risk = predict_scores(run.score_fn, run.tensors, test)
        times.append(inputs.time[test])
        events.append(inputs.event[test])
        risks.append(risk)
        per_fold.append(cindex_or_nan(inputs.time[test], inputs.event[test], risk))
    pooled = cindex_or_nan(np.concatenate(times), np.concatenate(events), np.concatenate(risks))
    return {
        "pooled": pooled,
        "folds": per_fold,
        "epochs": [len(r.history) for r in runs],
        "selected": [int(r.history.loc[r.history["best"], "epoch"].iloc[0]) for r in runs],
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--folds", type=int, default=3, help="how many folds to train (folds 0 .. folds-1)")
    parser.add_argument("--of", type=int, default=5, help="the cohort's number of folds (test part = 1/of)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every modality's planted signal")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap max_epochs of both settings")
    parser.add_argument("--cox-normalisation", choices=["batch", "events"], default=None)
    parser.add_argument("--p-miss", type=float, default=None, help="training-time masking (mixed, per group)")
    parser.add_argument("--fold-inputs", type=Path, default=None, help="a run's fold_inputs folder")
    parser.add_argument("--settings", nargs="+", default=["published", "small_cohort"],
                        choices=["published", "small_cohort"])  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.fold_inputs is None:
        signal = {m: v * args.scale for m, v in DEFAULT_SIGNAL.items()}
        folds = [
            synthetic_fold_inputs(args.patients, fold=f, n_folds=args.of, seed=args.seed, signal=signal)
            for f in range(args.folds)
        ]
        what = (
            f"synthetic cohort: {args.patients} patients (seed {args.seed}, signal x {args.scale:g}), "
            f"folds 0-{args.folds - 1} of {args.of}"
        )
    else:
        paths = sorted(args.fold_inputs.glob("fold_*.npz"), key=lambda q: int(q.stem.split("_")[1]))
        folds = [FoldInputs.load(q) for q in paths]
        what = f"{args.fold_inputs}: {len(folds)} folds of {folds[0].n} patients"
    n_test = sum(len(f.index("test")) for f in folds)
    n_events = sum(int(f.event[f.index("test")].sum()) for f in folds)
    cap = "" if args.max_epochs is None else f", max_epochs capped at {args.max_epochs}"
    print(f"{what}: {n_test} test patients, {n_events} deaths; 1 thread, CPU{cap}", flush=True)
    for name in args.settings:
        setting = sections(name == "small_cohort", args)
        p = setting["parachute"]
        result = train(folds, setting)
        fold_c = np.asarray(result["folds"], dtype=float)
        print(
            f"{name:<13} d={p['d']} d_int={p['d_int']} lr={p['lr']:g} batch={p['batch_size']} "
            f"max_epochs={p['max_epochs']} es_patience={p['es_patience']} cox={p['cox_normalisation']} "
            f"p_miss={p['p_miss']:g}: "
            f"pooled C {result['pooled']:.3f}, per-fold C {np.nanmean(fold_c):.3f} +- {np.nanstd(fold_c, ddof=1):.3f} "
            f"({', '.join(f'{c:.3f}' for c in fold_c)}), epochs {result['epochs']}, selected {result['selected']}, "
            f"{result['seconds']:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
