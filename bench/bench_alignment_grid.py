"""Does global alignment align? Geometry and HAF's AUC over a grid of temperatures and lambda_PD.

For each (tau_sv = tau_pd = tau, lambda_PD) it trains Stage 2 (GA) and then HAF (Stage 3, drop + MoFe,
frozen projectors) on every fold of a set of fold inputs, and prints for the test parts:

* ``cos_within``: mean cosine between a patient's modality vectors (shared geometry: high);
* ``cos_same_mod``: mean cosine of one modality's vectors across patients (modality islands: high);
* ``sv1_share``: sigma_1^2 / sum sigma_j^2 of each patient's unit columns (1.0 = rank 1);
* the same before training (the initial projections), and HAF's pooled test AUC and mean fold AUC.

    python bench/bench_alignment_grid.py --fold-inputs results/fold_inputs     # the demo's 10 folds
    python bench/bench_alignment_grid.py --fold-inputs DIR --taus 0.1 1.0 --lambdas 0.01 1.0

1 intra-op thread; the numbers are one run.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import _repo  # noqa: F401 (puts the checkout's src/ and tests/ first on sys.path)
import numpy as np
import torch
from fakes.config import declare, load_config
from sklearn.metrics import roc_auc_score

from haf.alignment.train import project_all, train_alignment_folds
from haf.artifacts.aligned import Aligned
from haf.artifacts.fold_inputs import FoldInputs
from haf.eval.geometry import geometry_summary
from haf.fusion.spec import MethodSpec
from haf.fusion.train import train_fusion_folds
from haf.modalities import MODALITIES
from haf.runtime.tensors import predict_scores

CPU = torch.device("cpu")


def geometry(inp: FoldInputs, before: np.ndarray, after: np.ndarray) -> tuple[list[float], list[float]]:
    """(cos_within, cos_same_mod, sv1_share) of the test part before and after (uncentred), computed by
    :func:`haf.eval.geometry.geometry_summary` (the claims table's row (e) and Fig. 3's caption)."""
    test = inp.index("test")
    aligned = Aligned(
        patient_id=np.asarray(inp.patient_id)[test],
        part=np.full(len(test), "test"),
        present=inp.present[test],
        pre={m: before[test, j].astype(float) for j, m in enumerate(MODALITIES)},
        post={m: after[test, j].astype(float) for j, m in enumerate(MODALITIES)},
    )
    g = geometry_summary(aligned, "test")
    keys = ("cos_within_raw", "cos_same_mod_raw", "share_raw")
    return [g[f"{k}_before"] for k in keys], [g[f"{k}_after"] for k in keys]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fold-inputs", type=Path, required=True)
    ap.add_argument("--taus", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    args = ap.parse_args()
    torch.set_num_threads(1)
    inputs = [FoldInputs.load(p) for p in sorted(args.fold_inputs.glob("fold_*.npz"))]
    config = load_config()
    spec = MethodSpec.from_declaration("haf", declare({"haf": config["methods"]["haf"]})["haf"])
    print(f"{len(inputs)} folds of {inputs[0].n} patients from {args.fold_inputs}")
    print("tau   lambda_pd | before: cos_within cos_same_mod sv1_share | after: cos_within cos_same_mod "
          "sv1_share | HAF pooled AUC  mean fold AUC | s")  # fmt: skip
    for tau, lam in itertools.product(args.taus, args.lambdas):
        t0 = time.perf_counter()
        stage2 = dict(config["stage2"], tau_sv=tau, tau_pd=tau, lambda_pd=lam)
        results = train_alignment_folds(inputs, "ga", stage2, CPU)
        before, after = [], []
        for res, inp in zip(results, inputs, strict=True):
            b_fold, a_fold = geometry(
                inp, project_all(res.initial, inp, CPU), project_all(res.projectors, inp, CPU)
            )
            before.append(b_fold)
            after.append(a_fold)
        runs = train_fusion_folds(
            inputs, spec, config["stage3"], stage2, CPU,
            projectors=[r.projectors for r in results], stage2_meta=[{"untrained": r.untrained} for r in results],
        )  # fmt: skip
        ys, ss, fold_aucs = [], [], []
        for run, inp in zip(runs, inputs, strict=True):
            test = inp.index("test")
            score = predict_scores(run.score_fn, run.tensors, test)
            keep = ~np.isnan(inp.label[test])
            ys.append(inp.label[test][keep])
            ss.append(score[keep])
            if len(set(ys[-1])) == 2:
                fold_aucs.append(roc_auc_score(ys[-1], ss[-1]))
        pooled = roc_auc_score(np.concatenate(ys), np.concatenate(ss))
        b, a = np.mean(before, axis=0), np.mean(after, axis=0)
        print(f"{tau:<5} {lam:<9} | {b[0]:.3f} {b[1]:.3f} {b[2]:.3f} | {a[0]:.3f} {a[1]:.3f} {a[2]:.3f} | "
              f"{pooled:.3f} {np.mean(fold_aucs):.3f} | {time.perf_counter() - t0:.0f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
