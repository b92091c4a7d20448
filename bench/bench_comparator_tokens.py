"""The token-level attention comparators next to their slide-level versions, on a run's own fold inputs and bags.

Each method of ``--methods`` (default: attention_fusion, attention_fusion_tokens, mfmf, mfmf_tokens, as
``config/config.yaml`` declares them, ``stage3`` defaults) trains every fold of ``--fold-inputs`` as one
stacked run and writes its four outputs per fold (predictions, the masked evaluation, train log, model:
``run_comparator_folds``, what rule ``comparator`` / ``comparator_tokens`` does) into a temporary folder,
on one CPU thread.  Printed per method: CPU seconds (process time) of training + outputs, of building the
instance tokens (token methods, once per job), wall seconds, the pooled test AUC (every fold's test
predictions together, labelled patients) and the per-fold test AUC (mean +- SD), and the epochs each fold ran.

Usage (the bags' paths in the manifest and TMA index are relative to the run's folder: ``--root``)::

    python bench/bench_comparator_tokens.py --root /path/to/demo_run \\
        --fold-inputs results/fold_inputs --manifest results/cohort/manifest.tsv \\
        --tma-index results/features/tma/demo-texture/index.tsv
    python bench/bench_comparator_tokens.py ... --methods attention_fusion_tokens --instance-tokens 32
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import _repo  # noqa: F401  (this checkout's haf and tests/fakes first on sys.path)
import numpy as np
import pandas as pd
import torch
from fakes.config import load_config
from sklearn.metrics import roc_auc_score

from haf.artifacts.fold_inputs import FoldInputs
from haf.comparators.train import run_comparator_folds
from haf.methods import method_declaration, uses_instance_tokens
from haf.mil.tokens import open_instance_tokens

OUTPUTS = (("model", "model.pt"), ("predictions", "predictions.tsv"), ("masked", "masked.tsv.gz"),
           ("train_log", "train_log.tsv"))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the run's folder (relative bag paths)")
    parser.add_argument("--fold-inputs", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--tma-index", type=Path, default=None)
    parser.add_argument(
        "--methods", nargs="+", default=["attention_fusion", "attention_fusion_tokens", "mfmf", "mfmf_tokens"]
    )
    parser.add_argument("--instance-tokens", type=int, default=None, help="override instance_tokens")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.root.resolve()
    fold_dir = (root / args.fold_inputs).resolve()
    manifest, tma = (root / args.manifest).resolve(), args.tma_index and (root / args.tma_index).resolve()
    config = load_config()
    if args.max_epochs is not None:
        config["stage3"]["max_epochs"] = args.max_epochs
    sections = {"stage3": config["stage3"], "parachute": config["parachute"]}
    files = sorted(fold_dir.glob("fold_*.npz"), key=lambda p: int(p.stem.split("_")[1]))
    inputs = [FoldInputs.load(p) for p in files]
    print(f"{len(inputs)} folds of {inputs[0].n} patients from {fold_dir}; {args.threads} thread(s)")
    rows = []
    for name in args.methods:
        decl = method_declaration(name, config["methods"][name])
        if args.instance_tokens is not None:
            decl["instance_tokens"] = args.instance_tokens
        tokens, token_cpu = None, 0.0
        here = os.getcwd()
        if uses_instance_tokens(decl):
            os.chdir(root)  # the manifest lists the bags relative to the run's folder
            start = time.process_time()
            tokens = open_instance_tokens(
                {"manifest": manifest, "tma_index": tma},
                inputs[0].patient_id,
                decl["modalities"],
                cap=int(decl["instance_tokens"]),
                seed=int(decl["instance_seed"]),
            )
            token_cpu = time.process_time() - start
            os.chdir(here)
        with tempfile.TemporaryDirectory() as tmp:
            outputs = [{k: Path(tmp) / f"fold_{i.fold}" / f for k, f in OUTPUTS} for i in inputs]
            wall, cpu = time.perf_counter(), time.process_time()
            preds = run_comparator_folds(
                inputs, decl, sections, config["evaluation"], outputs, method=name,
                device=torch.device("cpu"), selection=config["training"], tokens=tokens,
            )  # fmt: skip
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            epochs = [len(pd.read_csv(o["train_log"], sep="\t")) for o in outputs]
        test = pd.concat(preds)
        test = test[(test["part"] == "test") & test["label"].notna()]
        pooled = roc_auc_score(test["label"], test["risk"])
        per_fold = [
            roc_auc_score(g["label"], g["risk"]) for _, g in test.groupby("fold") if g["label"].nunique() == 2
        ]
        rows.append(
            {"method": name, "cpu_s": round(cpu, 1), "token_cpu_s": round(token_cpu, 1), "wall_s": round(wall, 1),
             "pooled_auc": round(pooled, 3), "fold_auc": f"{np.mean(per_fold):.3f} +- {np.std(per_fold, ddof=1):.3f}",
             "epochs": ",".join(map(str, epochs))}
        )  # fmt: skip
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    print()
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
