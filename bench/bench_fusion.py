"""Measured wall times of Stages 2-3 (issue 5, Speed): prints what it measures, nothing else.

A. ten folds of ``haf`` (Stage 2 GA + Stage 3 + the four outputs, masked evaluation included) on a
   HANCOCK-sized synthetic cohort (763 patients, HANCOCK availability); target on one H100: <= 5 min.
B. the demo-sized cohort (200 patients) x ten folds x the eleven methods of issue 5 (+ haf_cox),
   Stage 2 (GA and CLIP) included; target on 2 CPU cores: <= 10 min.  The no-detach methods train
   CLAM encoders on synthetic bags of the demo's size (24-160 instances of 1024-d features).

Usage::

    python bench/bench_fusion.py --part all --threads 2 --device cpu
    python bench/bench_fusion.py --part hancock --device cuda      # on a GPU node
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import _repo  # noqa: F401 (puts the checkout's src/ and tests/ first on sys.path)
import numpy as np
import torch
import yaml
from _repo import REPO
from fakes.fusion import synthetic_fold_inputs

from haf.alignment.train import train_alignment
from haf.eval.masking import draw_masks
from haf.eval.scores import auc_or_nan
from haf.fusion.spec import MethodSpec
from haf.fusion.train import (
    train_fusion,
    write_run,
)
from haf.methods import active_methods
from haf.runtime.device import resolve_device
from haf.runtime.tensors import predict_scores
from haf.settings import Stage2Settings, Stage3Settings

ELEVEN = [
    "fusion_mlp_wsi_tma",
    "fusion_mlp_all",
    "ga",
    "clip",
    "drop",
    "clip_drop",
    "haf",
    "fusion_mlp_all_nodetach",
    "ga_nodetach",
    "drop_nodetach",
    "haf_nodetach",
]


def load_config() -> dict:
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "config" / "schema.yaml"))
    return config


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def masked_auc(run, inputs, p: float = 0.5, repeats: int = 10) -> float:
    test = inputs.index("test")
    masks = draw_masks(inputs.present[test], p, repeats, "dropout", seed=7, fold=inputs.fold)
    return float(
        np.nanmean(
            [
                auc_or_nan(inputs.label[test], predict_scores(run.score_fn, run.tensors, test, masks[r]))
                for r in range(repeats)
            ]
        )
    )


def haf_fold(config: dict, device: torch.device, fold: int, outdir: Path, n_patients: int = 763) -> dict:
    """One fold of ``haf`` on the synthetic HANCOCK-sized cohort: Stage 2 GA, Stage 3, the four outputs.

    Returns the stage times, the test AUC and the written predictions (also used by bench/gpu_suite.py).
    """
    spec = MethodSpec.from_declaration("haf", config["methods"]["haf"])
    inputs = synthetic_fold_inputs(n_patients, fold=fold, seed=2026)
    sync(device)
    t0 = time.perf_counter()
    aligned = train_alignment(inputs, "ga", config["stage2"], device)
    sync(device)
    t1 = time.perf_counter()
    run = train_fusion(
        inputs,
        spec,
        config["stage3"],
        config["stage2"],
        device,
        projectors=aligned.projectors,
        stage2_meta={"align": "ga", "untrained": aligned.untrained},
    )
    sync(device)
    t2 = time.perf_counter()
    out = {k: outdir / f"haf_{fold}_{k}" for k in ("model", "predictions", "train_log")}
    out["masked"] = outdir / f"haf_{fold}_masked.tsv.gz"
    preds = write_run(run, out, seed=0, evaluation=config["evaluation"])
    t3 = time.perf_counter()
    test = preds[preds["part"] == "test"]
    return {
        "stage2_s": t1 - t0,
        "stage3_s": t2 - t1,
        "outputs_s": t3 - t2,
        "stage2_epochs": len(aligned.history),
        "stage3_epochs": len(run.history),
        "test_auc": auc_or_nan(test["label"].to_numpy(), test["risk"].to_numpy()),
        "predictions": preds,
        "n_scored": int((inputs.part != "train").sum()),  # val + test patients: the rows of predictions
        "outputs": out,
    }


def haf_folds_stacked(
    config: dict, device: torch.device, folds: int, outdir: Path, n_patients: int = 763
) -> dict:
    """Every fold of ``haf`` at once: Stage 2 GA stacked over the folds, Stage 3 stacked, the four outputs."""
    from haf.alignment.train import train_alignment_folds
    from haf.fusion.train import train_fusion_folds

    spec = MethodSpec.from_declaration("haf", config["methods"]["haf"])
    inputs = [synthetic_fold_inputs(n_patients, fold=f, seed=2026) for f in range(folds)]
    sync(device)
    t0 = time.perf_counter()
    banks = train_alignment_folds(inputs, "ga", Stage2Settings.from_config(config["stage2"]), device)
    sync(device)
    t1 = time.perf_counter()
    runs = train_fusion_folds(
        inputs, spec, Stage3Settings.from_config(config["stage3"]), Stage2Settings.from_config(config["stage2"]),
        device, projectors=[b.projectors for b in banks],
        stage2_meta=[{"align": "ga", "untrained": b.untrained} for b in banks],
    )  # fmt: skip
    sync(device)
    t2 = time.perf_counter()
    aucs = []
    for fold, run in enumerate(runs):
        out = {k: outdir / f"haf_stacked_{fold}_{k}" for k in ("model", "predictions", "train_log")}
        out["masked"] = outdir / f"haf_stacked_{fold}_masked.tsv.gz"
        preds = write_run(run, out, seed=0, evaluation=config["evaluation"])
        test = preds[preds["part"] == "test"]
        aucs.append(auc_or_nan(test["label"].to_numpy(), test["risk"].to_numpy()))
    t3 = time.perf_counter()
    return {
        "stage2_s": t1 - t0,
        "stage3_s": t2 - t1,
        "outputs_s": t3 - t2,
        "test_auc": float(np.nanmean(aucs)),
    }


def bench_hancock(config: dict, device: torch.device, folds: int, outdir: Path) -> None:
    total_s2 = total_s3 = total_io = 0.0
    aucs = []
    t_start, c_start = time.perf_counter(), time.process_time()
    for fold in range(folds):
        r = haf_fold(config, device, fold, outdir)
        aucs.append(r["test_auc"])
        total_s2 += r["stage2_s"]
        total_s3 += r["stage3_s"]
        total_io += r["outputs_s"]
        print(
            f"  fold {fold}: stage2 {r['stage2_s']:6.1f}s ({r['stage2_epochs']} ep)  stage3 {r['stage3_s']:6.1f}s "
            f"({r['stage3_epochs']} ep)  outputs+masked eval {r['outputs_s']:5.1f}s  test AUC {aucs[-1]:.3f}",
            flush=True,
        )
    total = total_s2 + total_s3 + total_io
    print(
        f"A. haf, {folds} folds, 763 patients, device {device}, torch threads {torch.get_num_threads()}: "
        f"total {total:.1f}s = stage2 {total_s2:.1f}s + stage3 {total_s3:.1f}s + outputs {total_io:.1f}s; "
        f"mean test AUC {np.nanmean(aucs):.3f}; process CPU time {time.process_time() - c_start:.1f}s "
        f"(wall {time.perf_counter() - t_start:.1f}s)"
    )
    c_start = time.process_time()
    st = haf_folds_stacked(config, device, folds, outdir)
    stacked = st["stage2_s"] + st["stage3_s"] + st["outputs_s"]
    print(
        f"A'. haf, {folds} folds stacked (train_alignment_folds + train_fusion_folds): total {stacked:.1f}s = "
        f"stage2 {st['stage2_s']:.1f}s + stage3 {st['stage3_s']:.1f}s + outputs {st['outputs_s']:.1f}s; mean test "
        f"AUC {st['test_auc']:.3f}; process CPU time {time.process_time() - c_start:.1f}s\n"
        f"ratio one fold at a time / stacked: total {total / stacked:.2f}x, stage2 {total_s2 / st['stage2_s']:.2f}x, "
        f"stage3 {total_s3 / st['stage3_s']:.2f}x (per-fold seeds equal in both arms: fold_seed)"
    )


def bench_demo(
    config: dict,
    device: torch.device,
    folds: int,
    outdir: Path,
    methods: list[str],
    nodetach_folds: int,
    first_fold: int = 0,
) -> None:
    declared = active_methods(config)
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    runs: dict[str, int] = {}
    aucs: dict[str, list[float]] = {m: [] for m in methods}
    dropped: dict[str, list[float]] = {m: [] for m in methods}

    def account(key: str, t0: float, c0: float) -> None:
        sync(device)
        wall[key] = wall.get(key, 0.0) + time.perf_counter() - t0
        cpu[key] = cpu.get(key, 0.0) + time.process_time() - c0
        runs[key] = runs.get(key, 0) + 1

    t_start, c_start = time.perf_counter(), time.process_time()
    for fold in range(first_fold, folds):
        inputs = synthetic_fold_inputs(200, fold=fold, seed=2026)
        banks = {}
        for align in ("ga", "clip"):
            t0, c0 = time.perf_counter(), time.process_time()
            result = train_alignment(inputs, align, config["stage2"], device)
            banks[align] = (result.projectors, {"align": align, "untrained": result.untrained})
            account(f"stage2 {align}", t0, c0)
        for name in methods:
            spec = MethodSpec.from_declaration(name, declared[name])
            if not spec.detach and fold >= nodetach_folds:
                continue
            stores = None
            if not spec.detach:
                from fakes.fusion import synthetic_bags

                stores = synthetic_bags(inputs, outdir / f"bags_{name}_{fold}", seed=fold)
                budget = config["stage1"]["cache_gb_gpu" if device.type == "cuda" else "cache_gb_cpu"] * 1e9
                for store in stores.values():
                    store.cache(device, budget)
            t0, c0 = time.perf_counter(), time.process_time()
            if spec.detach:
                bank, meta = banks.get(spec.align, (None, None))
                run = train_fusion(
                    inputs,
                    spec,
                    config["stage3"],
                    config["stage2"],
                    device,
                    projectors=bank,
                    stage2_meta=meta,
                )
            else:
                from haf.fusion.joint import train_joint

                params = {k: config[k] for k in ("stage1", "stage2", "stage3")}
                run = train_joint(inputs, spec, params, device, bags=stores)
            out = {k: outdir / f"{name}_{fold}_{k}" for k in ("model", "predictions", "train_log")}
            out["masked"] = outdir / f"{name}_{fold}_masked.tsv.gz"
            preds = write_run(run, out, seed=0, evaluation=config["evaluation"])
            account(name, t0, c0)
            test = preds[preds["part"] == "test"]
            if spec.task_loss == "bce":
                aucs[name].append(auc_or_nan(test["label"].to_numpy(), test["risk"].to_numpy()))
                dropped[name].append(masked_auc(run, run.inputs))
        print(
            f"  fold {fold} done at {time.perf_counter() - t_start:.1f}s wall, "
            f"{time.process_time() - c_start:.1f}s CPU",
            flush=True,
        )
    print(
        f"B. demo size (200 patients), device {device}, torch threads {torch.get_num_threads()} "
        "(wall and process CPU seconds, summed over folds; each job trains, predicts, masks and writes):"
    )
    for key in wall:
        extra = ""
        if aucs.get(key):
            extra = f"  mean test AUC {np.nanmean(aucs[key]):.3f}, at test-time drop p=0.5 {np.nanmean(dropped[key]):.3f}"
        print(f"  {key:26s} {runs[key]:2d} folds  wall {wall[key]:7.1f}s  CPU {cpu[key]:7.1f}s{extra}")
    print(
        f"  total wall {time.perf_counter() - t_start:.1f}s, CPU {time.process_time() - c_start:.1f}s "
        f"({len(methods)} methods, folds {first_fold}..{folds - 1}, no-detach methods on folds < {nodetach_folds})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["hancock", "demo", "all"], default="all")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--first-fold", type=int, default=0, help="run folds first-fold .. folds-1 (part B)")
    parser.add_argument("--methods", default=",".join(ELEVEN + ["haf_cox"]), help="comma-separated (part B)")
    parser.add_argument(
        "--nodetach-folds", type=int, default=10, help="folds run for the no-detach methods (B)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("hancock", "all"):
            bench_hancock(config, device, args.folds, Path(tmp))
        if args.part in ("demo", "all"):
            bench_demo(
                config,
                device,
                args.folds,
                Path(tmp),
                args.methods.split(","),
                args.nodetach_folds,
                args.first_fold,
            )


if __name__ == "__main__":
    main()
