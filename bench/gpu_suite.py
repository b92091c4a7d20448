"""GPU validation suite: every GPU speed target of HAF-flow measured in one short, prepared run.

A GPU machine is lent to this project now and then, briefly (about 15 minutes of device time in all,
start-up included, at most 10 minutes per command), so every GPU figure comes from this one command:

    python bench/gpu_suite.py --out DIR [--smoke] [--only extract,model,...] [--cap ARM=SECONDS ...]

Arms (each in its own process, under its own wall-clock cap; an arm that runs over is killed and
recorded as ``timed_out`` with what it had measured so far, and the suite goes on; the caps add up to
the suite's budget, 460 s by default, so the whole run stays under 8 minutes):

  extract  TMA extraction end to end on generated large H&E-like cores (PNG decode, tissue mask,
           224-px tiles, the UNI architecture (timm ViT-L/16, ``haf.extract.registry``) with random
           weights, bf16 autocast, h5 write: the ``extract_tma`` rule's library call) vs a naive fp32
           CLAM-style loop on the same cores (``bench/bench_extract.py``); tiles/s and the ratio.
           Targets: >= 2,500 tiles/s end to end on one H100-class GPU, >= 7x the naive loop.
  model    the encoder alone on device-resident tiles: fp32, bf16 autocast, bf16 + torch.compile;
           tiles/s (reference figures, no target).
  stage1   Stage 1 (CLAM gated attention MIL) epochs/s, the batched trainer vs CLAM's one bag per
           step, at WSI bag sizes (500-20,000 instances of 1024-d; ``bench/bench_stage1.py``).
           Target: batched >= 10x per-bag on the GPU.
  fusion   ten folds of ``haf`` (Stage 2 GA + Stage 3 + predictions + masked evaluation) at 763
           synthetic patients (``bench/bench_fusion.py``). Target: <= 5 min.
  demo     the demo pipeline end to end: ``snakemake --cores N --resources gpu=1`` on a small demo
           config in a temporary work dir; wall time and job count (no target).

Every arm checks its outputs and records pass/fail: bf16 features against the fp32 path within the
bf16 tolerance below, tile coordinates identical, predictions finite, the pipeline's tables present.

bf16 tolerance (``FEATURE_TOL``), measured on CPU bf16 autocast (the CUDA run records its own values):
random-init ViT weights with timm's LayerScale init (gamma = 1e-5) give features that do not depend on
the tile, which would make any comparison vacuous, so the suite sets every LayerScale gamma to 1 (the
FLOPs are unchanged). UNI architecture, 16 H&E-like tiles: relative RMS error 0.0061, error / across-tile
spread 0.068 (tiny-vit-test: 0.0051 / 0.068); a permuted tile order gives about 1.4. Tolerances: 0.02
and 0.25. fp32 against fp32 (the CPU smoke run) differs by about 1e-6.

Output: ONE ``summary.json`` and ONE ``summary.md`` in ``--out`` (rewritten after every arm, so a run
cut short still leaves a summary), plus ``suite.log`` (every arm's output). Field by field: docs/gpu.md.

``--smoke``: the same code paths at tiny sizes on the CPU (the 2-block ``tiny-vit-test`` encoder instead
of UNI, 8 small cores, 30 small bags, 2 folds of 120 patients, a 40-patient demo with 2 folds, one
method (``tma_clam``) and 2 epochs, asking for table1 only: 7 jobs); ``tests/test_gpu_suite.py`` runs
it. Targets are then ``unmeasured``. The GPU run's demo: 200 patients, 2 folds, ``tma_clam``,
``fusion_mlp_all`` and ``haf`` with fewer epochs, every table and figure they feed (22 jobs).

What the machine needs: Python >= 3.11 with torch (CUDA build), timm, torchvision, numpy, pandas, scipy,
scikit-learn, scikit-survival, h5py, pillow, matplotlib, pyyaml, jsonschema, psutil and snakemake (the
project's pins: pyproject.toml). The lent H200 machine has Python 3.12 and torch but not snakemake,
scikit-survival or jsonschema, and nothing can be downloaded there: ``bench/gpu_prepare.sh`` downloads
the missing wheels into ``.whl/`` here, and docs/gpu.md gives the one-line device command that installs
them and runs this suite into ``$OUT``. The demo arm passes ``--scheduler greedy`` so that PuLP (the ILP
scheduler's solver, 16 MB) need not travel.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO / "src", REPO / "bench", REPO / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

SUMMARY_VERSION = 1
DEFAULT_BUDGET_S = 460.0
# bf16 vs fp32 feature agreement (see the module docstring for how these were measured)
FEATURE_TOL = {"rel_rms": 0.02, "err_over_spread": 0.25}
MIN_SPREAD = 1e-3  # features must vary across tiles by at least this share of their RMS
PACKAGES = [
    "torch",
    "torchvision",
    "triton",
    "timm",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "scikit-survival",
    "h5py",
    "pillow",
    "snakemake",
    "jsonschema",
    "psutil",
]
IMPORTS = ["timm", "torchvision", "h5py", "sksurv", "jsonschema", "snakemake", "haf"]


# ---------------------------------------------------------------------------------------------
# arm registry


@dataclass(frozen=True)
class Target:
    """A speed target: ``metric`` of the arm compared with ``value`` by ``op`` (on a CUDA device only)."""

    metric: str
    op: str  # ">=" | "<="
    value: float
    text: str

    def met(self, metrics: dict[str, Any], measured_on_gpu: bool) -> str:
        """``yes`` / ``no``, or ``unmeasured`` when not on a GPU or the metric was not reached."""
        x = metrics.get(self.metric)
        if not measured_on_gpu or x is None or not isinstance(x, int | float) or not math.isfinite(x):
            return "unmeasured"
        ok = x >= self.value if self.op == ">=" else x <= self.value
        return "yes" if ok else "no"


@dataclass(frozen=True)
class Arm:
    """One measurement: ``run(ctx)`` measures and checks; caps in seconds (GPU run, smoke run)."""

    name: str
    title: str
    run: Callable[[ArmContext], None]
    cap_s: float
    smoke_cap_s: float
    targets: tuple[Target, ...] = ()
    headline: tuple[str, ...] = ()  # metric keys shown in summary.md's table


ARMS: dict[str, Arm] = {}


def arm(
    name: str,
    title: str,
    cap_s: float,
    smoke_cap_s: float,
    targets: tuple[Target, ...] = (),
    headline: tuple[str, ...] = (),
) -> Callable:
    """Register an arm; a new measurement (e.g. a stacked fold trainer) is one more decorated function."""

    def wrap(fn: Callable[[ArmContext], None]) -> Callable[[ArmContext], None]:
        ARMS[name] = Arm(name, title, fn, cap_s, smoke_cap_s, targets, headline)
        return fn

    return wrap


class ArmContext:
    """What an arm records: settings, metrics, checks, notes; every update is written to disk at once,
    so an arm killed at its cap leaves what it had measured."""

    def __init__(self, path: Path, name: str, smoke: bool, work: Path) -> None:
        self.path, self.name, self.smoke, self.work = path, name, smoke, work
        self.data: dict[str, Any] = {"settings": {}, "metrics": {}, "checks": [], "notes": [], "error": None}
        work.mkdir(parents=True, exist_ok=True)
        self._save()

    @property
    def device(self):
        import torch

        return torch.device("cpu" if self.smoke else "cuda")

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=_jsonable))
        tmp.replace(self.path)

    def settings(self, **values: Any) -> None:
        self.data["settings"].update(values)
        self._save()

    def metric(self, key: str, value: Any) -> None:
        self.data["metrics"][key] = _round(value)
        print(f"[{self.name}] {key} = {self.data['metrics'][key]}", flush=True)
        self._save()

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.data["checks"].append({"name": name, "passed": bool(passed), "detail": detail})
        print(f"[{self.name}] check {'PASS' if passed else 'FAIL'}: {name} {detail}", flush=True)
        self._save()
        return bool(passed)

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self._save()

    def error(self, text: str) -> None:
        self.data["error"] = text
        self._save()


def _round(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        value = float(value)
        if not math.isfinite(value):
            return None if math.isnan(value) else value
        return float(f"{value:.4g}") if abs(value) < 1e4 else round(value, 1)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_threads() -> int:
    """CPU cores this process may use (the affinity mask, else the core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# shared checks


def feature_agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """How far ``other`` (e.g. bf16) is from ``reference`` (fp32), tile by tile (rows), in three numbers.

    ``rel_rms``: RMS of the difference / RMS of the reference; ``err_over_spread``: RMS of the difference
    / RMS of the reference's deviation from its mean tile (the part that tells tiles apart; a permuted
    tile order gives about 1.4); ``spread``: that deviation's RMS / the reference's RMS.
    """
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"feature shapes differ: {a.shape} vs {b.shape}")
    diff = float(np.sqrt(np.mean((b - a) ** 2))) if a.size else 0.0
    rms = float(np.sqrt(np.mean(a**2))) if a.size else 0.0
    dev = float(np.sqrt(np.mean((a - a.mean(axis=0, keepdims=True)) ** 2))) if len(a) > 1 else 0.0
    return {
        "rel_rms": diff / rms if rms > 0 else (0.0 if diff == 0 else math.inf),
        "err_over_spread": diff / dev if dev > 0 else (0.0 if diff == 0 else math.inf),
        "spread": dev / rms if rms > 0 else 0.0,
        "max_abs": float(np.max(np.abs(b - a))) if a.size else 0.0,
    }


def agreement_passes(stats: dict[str, float]) -> bool:
    """Within :data:`FEATURE_TOL`, with features that do vary across tiles (else the test is vacuous)."""
    return (
        stats["rel_rms"] <= FEATURE_TOL["rel_rms"]
        and stats["err_over_spread"] <= FEATURE_TOL["err_over_spread"]
        and stats["spread"] >= MIN_SPREAD
    )


def agreement_detail(stats: dict[str, float]) -> str:
    return (
        f"rel_rms {stats['rel_rms']:.3g} (tol {FEATURE_TOL['rel_rms']}), err/spread "
        f"{stats['err_over_spread']:.3g} (tol {FEATURE_TOL['err_over_spread']}), spread/rms "
        f"{stats['spread']:.3g} (>= {MIN_SPREAD}), max |diff| {stats['max_abs']:.3g}"
    )


def layerscale_to_one(model) -> int:
    """Set every timm LayerScale gamma to 1 (random init: 1e-5, which makes features tile-independent)."""
    import torch

    n = 0
    for module in model.modules():
        gamma = getattr(module, "gamma", None)
        if isinstance(gamma, torch.nn.Parameter):
            with torch.no_grad():
                gamma.fill_(1.0)
            n += 1
    return n


def read_bags(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{patient file name: (features, coords)} of every h5 in ``folder``."""
    import h5py

    out = {}
    for path in sorted(folder.glob("*.h5")):
        with h5py.File(path) as handle:
            out[path.name] = (handle["features"][()], handle["coords"][()])
    return out


# ---------------------------------------------------------------------------------------------
# (a) extraction end to end


@arm(
    "extract",
    "TMA extraction end to end (decode, mask, 224-px tiles, UNI, h5): rule path vs naive fp32 loop",
    cap_s=110,
    smoke_cap_s=60,
    targets=(
        Target("rule_tiles_per_s", ">=", 2500, ">= 2,500 tiles/s end to end (UNI, one H100-class GPU)"),
        Target("ratio", ">=", 7.0, ">= 7x the naive fp32 loop"),
    ),
    headline=("rule_tiles_per_s", "naive_tiles_per_s", "ratio"),
)
def arm_extract(ctx: ArmContext) -> None:
    import pandas as pd
    import torch
    from bench_extract import decode_and_tile_rate, make_cores, naive_loop

    from haf.extract.extraction import extract_tma_features
    from haf.extract.registry import load_encoder
    from haf.extract.tiling import TilingSettings

    smoke, device = ctx.smoke, ctx.device
    threads = 2 if smoke else cpu_threads()
    p = dict(
        encoder="tiny-vit-test" if smoke else "uni",
        n_cores=8 if smoke else 128,
        unique_cores=2 if smoke else 8,
        core_px=672 if smoke else 3072,
        cores_per_patient=2,
        tile_px=224,
        tile_mpp=0.5,
        core_mpp=0.5 if smoke else 0.25,
        batch_size=32 if smoke else 512,
        naive_batch_size=256,
        threads=threads,
        compile=False,
        precision_rule_path="bf16 autocast" if device.type == "cuda" else "fp32 (CPU)",
        precision_naive="fp32",
        weights="random init, LayerScale gamma set to 1",
    )
    ctx.settings(**p)
    t0 = time.perf_counter()
    manifest = make_cores(
        ctx.work / "cores", p["n_cores"], p["unique_cores"], p["core_px"], p["cores_per_patient"], 0, threads
    )
    ctx.metric("generate_s", time.perf_counter() - t0)
    from fakes.config import load_config

    section = load_config(
        {
            "extract": {
                "encoder": p["encoder"],
                "weights": None,
                "markers": ["HE"],
                "tile_px": p["tile_px"],
                "tile_mpp": p["tile_mpp"],
                "core_mpp": p["core_mpp"],
                "batch_size": p["batch_size"],
                "num_workers": None,
                "compile": p["compile"],
                "channels_last": False,
            }
        }
    )["extract"]
    settings = TilingSettings.from_section(section)
    t0 = time.perf_counter()
    encoder = load_encoder(p["encoder"], None, allow_random=True)
    ctx.settings(layerscale_modules=layerscale_to_one(encoder.model))
    ctx.metric("model_build_s", time.perf_counter() - t0)
    torch.set_num_threads(threads)

    def rule(manifest_path: Path, out: Path) -> dict:
        return extract_tma_features(
            manifest_path,
            out / "index.tsv",
            out / "h5",
            section,
            device,
            threads=threads,
            progress=False,
            encoder=encoder,
        )

    # warm-up of both arms (cuDNN/cuBLAS, the first worker start, page cache), two patients each
    warm = ctx.work / "warm_manifest.tsv"
    pd.read_csv(manifest, sep="\t", dtype=str).head(2).to_csv(warm, sep="\t", index=False)
    t0 = time.perf_counter()
    naive_loop(warm, ctx.work / "warm_a", encoder, settings, device)
    rule(warm, ctx.work / "warm_b")
    ctx.metric("warmup_s", time.perf_counter() - t0)

    torch.set_num_threads(threads)  # the rule's warm-up left torch with its compute threads
    sync(device)
    t0 = time.perf_counter()
    tiles_a = naive_loop(manifest, ctx.work / "a", encoder, settings, device)
    sync(device)
    seconds_a = time.perf_counter() - t0
    ctx.metric("tiles", tiles_a)
    ctx.metric("naive_s", seconds_a)
    ctx.metric("naive_tiles_per_s", tiles_a / seconds_a)

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    counts = rule(manifest, ctx.work / "b")
    sync(device)
    seconds_b = time.perf_counter() - t0
    tiles_b = int(counts["tiles_extracted"])
    ctx.metric("rule_s", seconds_b)
    ctx.metric("rule_tiles_per_s", tiles_b / seconds_b)
    ctx.metric("ratio", seconds_a / seconds_b)
    if device.type == "cuda":
        ctx.metric("peak_gpu_memory_gb", torch.cuda.max_memory_allocated() / 1e9)

    ctx.check("same tile count in both arms", tiles_a == tiles_b and tiles_a > 0, f"{tiles_a} vs {tiles_b}")
    index = pd.read_csv(ctx.work / "b" / "index.tsv", sep="\t", dtype={"patient_id": str})
    n_patients = len(pd.read_csv(manifest, sep="\t"))
    ctx.check(
        "index.tsv: every patient ok",
        len(index) == n_patients and bool((index["status"] == "ok").all()),
        f"{len(index)} rows for {n_patients} patients, statuses {sorted(set(index['status']))}",
    )
    a, b = read_bags(ctx.work / "a"), read_bags(ctx.work / "b" / "h5")
    same = sorted(a) == sorted(b) and all(np.array_equal(a[k][1], b[k][1]) for k in a)
    ctx.check("same patients and tile coordinates in both arms", same, f"{len(a)} vs {len(b)} h5 files")
    if same and a:
        fa = np.concatenate([a[k][0] for k in sorted(a)])
        fb = np.concatenate([b[k][0] for k in sorted(a)])
        ctx.check("rule features finite", bool(np.isfinite(fb).all()), f"{fb.shape}")
        ctx.check("rule features have the encoder's width", fb.shape[1] == encoder.spec.dim, f"{fb.shape[1]}")
        stats = feature_agreement(fa, fb)
        for key, value in stats.items():
            ctx.metric(f"features_{key}", value)
        ctx.check(
            f"rule features ({p['precision_rule_path']}) equal the naive fp32 ones within tolerance",
            agreement_passes(stats),
            agreement_detail(stats),
        )
    ctx.metric("decode_tile_tiles_per_s_one_process", decode_and_tile_rate(manifest, settings, limit=4))


# ---------------------------------------------------------------------------------------------
# (b) the encoder alone


@arm(
    "model",
    "the encoder alone on device-resident tiles: fp32, bf16, bf16 + torch.compile",
    cap_s=70,
    smoke_cap_s=60,
    headline=("fp32_tiles_per_s", "bf16_tiles_per_s", "bf16_compile_tiles_per_s"),
)
def arm_model(ctx: ArmContext) -> None:
    import torch
    from fakes.extract import he_tile

    from haf.extract.registry import load_encoder

    smoke, device = ctx.smoke, ctx.device
    p = dict(
        encoder="tiny-vit-test" if smoke else "uni",
        batch_size=8 if smoke else 256,
        iterations=2 if smoke else 8,
        warmup=1 if smoke else 2,
        tile_px=224,
        compile_backend="eager" if smoke else "inductor",
        weights="random init, LayerScale gamma set to 1",
    )
    if smoke:
        ctx.note(
            "CPU smoke: torch.compile with backend 'eager' (dynamo only; inductor needs minutes on 2 cores)"
        )
    ctx.settings(**p)
    torch.set_num_threads(2 if smoke else cpu_threads())
    encoder = load_encoder(p["encoder"], None, allow_random=True)
    layerscale_to_one(encoder.model)
    model = encoder.model.to(device).eval()
    rng = np.random.default_rng(0)
    b = p["batch_size"]
    tiles = np.stack(
        [he_tile(rng, p["tile_px"], density=float(rng.uniform(0.6, 2.5)), tissue=float(rng.uniform(0.8, 1.6)))
         for _ in range(b)]
    )  # fmt: skip
    mean = torch.tensor(encoder.spec.mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(encoder.spec.std, device=device).view(1, 3, 1, 1) * 255.0
    x = (torch.from_numpy(tiles).to(device).permute(0, 3, 1, 2).float() - mean) / std

    def bf16():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def timed(fn, label: str) -> np.ndarray:
        with torch.inference_mode():
            t0 = time.perf_counter()
            for _ in range(p["warmup"]):
                out = fn()
            sync(device)
            ctx.metric(f"{label}_warmup_s", time.perf_counter() - t0)
            t0 = time.perf_counter()
            for _ in range(p["iterations"]):
                out = fn()
            sync(device)
            seconds = time.perf_counter() - t0
        ctx.metric(f"{label}_tiles_per_s", b * p["iterations"] / seconds)
        return out.float().cpu().numpy()

    reference = timed(lambda: model(x), "fp32")
    ctx.check("fp32 features finite", bool(np.isfinite(reference).all()), f"{reference.shape}")

    def run_bf16():
        with bf16():
            return model(x)

    out = timed(run_bf16, "bf16")
    stats = feature_agreement(reference, out)
    ctx.metric("bf16_rel_rms", stats["rel_rms"])
    ctx.metric("bf16_err_over_spread", stats["err_over_spread"])
    ctx.check("bf16 features equal fp32 within tolerance", agreement_passes(stats), agreement_detail(stats))
    if "fp32_tiles_per_s" in ctx.data["metrics"]:
        ctx.metric(
            "bf16_speedup", ctx.data["metrics"]["bf16_tiles_per_s"] / ctx.data["metrics"]["fp32_tiles_per_s"]
        )

    compiled = torch.compile(model, backend=p["compile_backend"], dynamic=False)

    def run_compiled():
        with bf16():
            return compiled(x)

    out = timed(run_compiled, "bf16_compile")
    stats = feature_agreement(reference, out)
    ctx.metric("bf16_compile_rel_rms", stats["rel_rms"])
    ctx.check(
        "bf16 + compile features equal fp32 within tolerance",
        agreement_passes(stats),
        agreement_detail(stats),
    )
    if device.type == "cuda":
        ctx.metric("peak_gpu_memory_gb", torch.cuda.max_memory_allocated() / 1e9)


# ---------------------------------------------------------------------------------------------
# (c) Stage 1 batched vs per-bag


@arm(
    "stage1",
    "Stage 1 epochs/s at WSI bag sizes: batched trainer vs CLAM's one bag per step",
    cap_s=65,
    smoke_cap_s=60,
    targets=(Target("ratio", ">=", 10.0, "batched >= 10x per-bag (epochs/s) on the GPU"),),
    headline=("batched_epochs_per_s", "per_bag_epochs_per_s", "ratio"),
)
def arm_stage1(ctx: ArmContext) -> None:
    import torch
    from bench_stage1 import PerBagLoop, time_epochs
    from fakes.mil import BagSpec, write_synthetic_cohort

    from haf.mil.bags import BagStore, CapReport
    from haf.mil.train import Stage1Trainer, fold_table

    smoke, device = ctx.smoke, ctx.device
    p = dict(
        patients=30 if smoke else 160,
        min_n=20 if smoke else 500,
        max_n=200 if smoke else 20000,
        dim=64 if smoke else 1024,
        batch_bags=8 if smoke else 16,
        cap=128 if smoke else 4096,
        epochs=1 if smoke else 2,
        warmup=1,
        h5_dtype="float16",
        threads=2 if smoke else 8,
    )
    ctx.settings(**p)
    torch.set_num_threads(p["threads"])
    t0 = time.perf_counter()
    cohort = write_synthetic_cohort(
        ctx.work / "cohort",
        n_patients=p["patients"],
        wsi=BagSpec(p["min_n"], p["max_n"], p["dim"], signal=1.0),
        k=10,
        seed=0,
        store_dtype=p["h5_dtype"],
    )
    ctx.metric("write_cohort_s", time.perf_counter() - t0)
    from fakes.config import settings as config_settings

    settings = config_settings("stage1", wsi_dim=p["dim"], batch_bags=p["batch_bags"], max_instances=p["cap"])
    t0 = time.perf_counter()
    store = BagStore.for_pathology_model("wsi", manifest=cohort.manifest, wsi_dim=p["dim"])
    budget = settings.cache_gb_gpu if device.type == "cuda" else settings.cache_gb_cpu
    cached = store.cache(device, budget * 1e9)
    ctx.metric("setup_s", time.perf_counter() - t0)
    ctx.settings(bags_cached_on_device=bool(cached))
    trainer = Stage1Trainer(
        store, fold_table(cohort.targets, cohort.folds, 0), settings, fold=0, pmod="wsi", device=device
    )
    sizes = np.array([store.n_instances(q) for q in store.patient_ids])
    cap = CapReport.of(store, trainer.train_ids, p["cap"])
    ctx.metric("instances_min", int(sizes.min()))
    ctx.metric("instances_mean", float(sizes.mean()))
    ctx.metric("instances_max", int(sizes.max()))
    ctx.metric("train_bags", len(trainer.train_ids))
    ctx.metric("val_bags", len(trainer.val_ids))
    ctx.metric("train_bags_capped", cap.n_capped)
    losses: list[float] = []

    def batched_epoch():
        trainer.model.train()
        losses.append(trainer.train_epoch(0))
        trainer.model.eval()
        with torch.no_grad():
            trainer.validate()

    batched = time_epochs(batched_epoch, p["epochs"], p["warmup"], device)
    ctx.metric("batched_s_per_epoch", batched)
    ctx.metric("batched_epochs_per_s", 1.0 / batched)
    ctx.check("batched training losses finite", all(math.isfinite(v) for v in losses), f"{losses}")
    _, logit = trainer.predict(trainer.val_ids)
    ctx.check("batched predictions finite", bool(np.isfinite(logit).all()), f"{len(logit)} validation bags")

    loop = PerBagLoop(trainer, p["cap"], seed=1)
    per_bag_losses: list[float] = []

    def per_bag_epoch():
        per_bag_losses.append(loop.train_epoch())
        loop.validate()

    per_bag = time_epochs(per_bag_epoch, p["epochs"], p["warmup"], device)
    ctx.metric("per_bag_s_per_epoch", per_bag)
    ctx.metric("per_bag_epochs_per_s", 1.0 / per_bag)
    ctx.metric("ratio", per_bag / batched)
    ctx.check(
        "per-bag training losses finite", all(math.isfinite(v) for v in per_bag_losses), f"{per_bag_losses}"
    )
    if device.type == "cuda":
        ctx.metric("peak_gpu_memory_gb", torch.cuda.max_memory_allocated() / 1e9)


# ---------------------------------------------------------------------------------------------
# (d) ten folds of haf at 763 patients


@arm(
    "fusion",
    "ten folds of haf (Stage 2 GA + Stage 3 + predictions + masked evaluation) at 763 patients",
    cap_s=125,
    smoke_cap_s=90,
    targets=(Target("total_s", "<=", 300.0, "ten folds of haf at 763 patients <= 5 min"),),
    headline=("total_s", "folds_done", "mean_test_auc"),
)
def arm_fusion(ctx: ArmContext) -> None:
    import torch
    from bench_fusion import haf_fold, load_config

    smoke, device = ctx.smoke, ctx.device
    folds, n = (2, 120) if smoke else (10, 763)
    config = load_config()
    if smoke:
        for section in ("stage2", "stage3"):
            config[section].update(max_epochs=3, es_patience=2)
        config["evaluation"].update(repeats=2, dropout_p=[0.0, 0.5])
    ctx.settings(
        folds=folds,
        patients=n,
        config="config/config.yaml" + (" with 3 epochs and 2 mask repeats" if smoke else " as shipped"),
        threads=2 if smoke else 1,
    )
    torch.set_num_threads(2 if smoke else 1)
    totals = {"stage2_s": 0.0, "stage3_s": 0.0, "outputs_s": 0.0}
    aucs, finite = [], True
    for fold in range(folds):
        r = haf_fold(config, device, fold, ctx.work, n_patients=n)
        for key in totals:
            totals[key] += r[key]
        aucs.append(r["test_auc"])
        preds = r["predictions"]
        finite &= bool(
            np.isfinite(preds["prob"].to_numpy(float)).all()
            and np.isfinite(preds["risk"].to_numpy(float)).all()
        )
        done = sum(totals.values())
        ctx.metric("folds_done", fold + 1)
        ctx.metric("seconds_so_far", done)
        ctx.metric("projected_total_s", done / (fold + 1) * folds)
        ctx.check(
            f"fold {fold}: predictions finite, one row per val/test patient, masked file written",
            bool(np.isfinite(preds["risk"].to_numpy(float)).all())
            and len(preds) == r["n_scored"]
            and set(preds["part"]) == {"val", "test"}
            and r["outputs"]["masked"].exists(),
            f"{len(preds)} rows for {r['n_scored']} val/test patients, stage2 {r['stage2_epochs']} / stage3 {r['stage3_epochs']} epochs, test AUC {r['test_auc']:.3f}",
        )
    for key, value in totals.items():
        ctx.metric(key, value)
    ctx.metric("total_s", sum(totals.values()))
    ctx.metric("mean_test_auc", float(np.nanmean(aucs)))
    ctx.check("every prob and risk finite", finite)


# ---------------------------------------------------------------------------------------------
# (e) the demo pipeline under Snakemake


SMOKE_DEMO = {
    "demo": {"n_patients": 40, "seed": 5, "wsi_bag_size": [8, 24], "core_px": 128},
    "cv": {"k": 2, "val_fraction": 0.2},
    "tabular": {"icd_min_df": 1},
    "extract": {"num_workers": 0, "batch_size": 64},
    "stage1": {"max_epochs": 2, "es_patience": 2},
    "stage2": {"max_epochs": 2, "es_patience": 2},
    "stage3": {"max_epochs": 2, "es_patience": 2},
    "evaluation": {"repeats": 2, "bootstrap": 20, "dropout_p": [0.0, 0.5], "td_auc_points": 5},
    "run_methods": [
        "tma_clam"
    ],  # 7 jobs: demo, cohort rules (manifest, targets, folds), extract_tma, Stage 1 (both folds), table1
}
GPU_DEMO = {
    "cv": {"k": 2},
    "stage1": {"max_epochs": 20, "es_patience": 5},
    "stage2": {"max_epochs": 30, "es_patience": 5},
    "stage3": {"max_epochs": 30, "es_patience": 5},
    "evaluation": {"repeats": 5, "bootstrap": 200},
    "run_methods": ["tma_clam", "fusion_mlp_all", "haf"],
}


@arm(
    "demo",
    "the demo pipeline end to end: snakemake --cores N --resources gpu=1 on a small demo config",
    cap_s=90,
    smoke_cap_s=150,
    headline=("wall_s", "jobs"),
)
def arm_demo(ctx: ArmContext) -> None:
    import pandas as pd
    import yaml

    smoke = ctx.smoke
    work = ctx.work / "run"
    override = dict(SMOKE_DEMO if smoke else GPU_DEMO)
    override.update(
        data_root=str(work / "demo" / "Hancock_Dataset"),
        results=str(work / "results"),
        logs=str(work / "logs"),
        device="cpu" if smoke else "cuda",
    )
    work.mkdir(parents=True, exist_ok=True)
    (work / "override.yaml").write_text(yaml.safe_dump(override))
    cores = 2 if smoke else cpu_threads()
    targets = ["table1"] if smoke else []
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(REPO / "Snakefile"), "--directory", str(work),
           "--cores", str(cores), "--resources", "gpu=1", "--scheduler", "greedy",
           "--configfile", str(REPO / "config" / "config.yaml"), str(work / "override.yaml")]  # fmt: skip
    ctx.settings(
        command=" ".join(cmd[1:]).replace(str(REPO), "<repo>").replace(str(work), "<tmp>"),
        override=override | {"data_root": "<tmp>/...", "results": "<tmp>/results", "logs": "<tmp>/logs"},
        targets=targets or ["all (every table and figure of run_methods)"],
    )
    limit = float(os.environ.get("GPU_SUITE_ARM_DEADLINE", "0")) - time.time() - 5
    t0 = time.perf_counter()
    with open(work / "snakemake.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit if limit > 0 else None)
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            rc = None
    wall = time.perf_counter() - t0
    text = (work / "snakemake.log").read_text(errors="replace")
    sys.stdout.write(text[-4000:])
    ctx.metric("wall_s", wall)
    ctx.metric("jobs", snakemake_job_count(text))
    ctx.metric("jobs_done", text.count("Finished jobid"))
    ctx.check("snakemake exit 0", rc == 0, f"exit {rc}" if rc is not None else "stopped at the arm's cap")
    res = work / "results"
    wanted = [res / "tables" / "table1.csv"]
    if not smoke:
        wanted += [res / "tables" / "survival_metrics.csv"]
        wanted += [res / "figures" / f"{f}.pdf" for f in ("fig2_dropout", "fig3_tsne", "km")]
    missing = [str(p.relative_to(res)) for p in wanted if not (p.exists() and p.stat().st_size > 0)]
    ctx.check("tables (and figures) exist", not missing, "missing: " + ", ".join(missing) if missing else "")
    if (res / "tables" / "table1.md").exists():
        ctx.check("table1.md labelled SYNTHETIC", "SYNTHETIC" in (res / "tables" / "table1.md").read_text())
    declared = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["methods"]
    bad = []
    for method in override["run_methods"]:
        decl = declared[method]
        where = f"stage1/{decl['pathology_model']}" if decl["family"] == "clam" else f"methods/{method}"
        for fold in range(override["cv"]["k"]):
            path = res / where / f"fold_{fold}" / "predictions.tsv"
            risk = pd.read_csv(path, sep="\t")["risk"].to_numpy(float) if path.exists() else np.array([])
            if not (len(risk) and np.isfinite(risk).all()):
                bad.append(f"{method} fold {fold}")
    ctx.check(
        "predictions of every method and fold exist and are finite",
        not bad,
        f"{len(override['run_methods'])} methods x {override['cv']['k']} folds"
        + (f"; bad: {bad}" if bad else ""),
    )


def snakemake_job_count(log_text: str) -> int | None:
    """The ``total`` row of Snakemake's first ``Job stats`` table (jobs it planned to run)."""
    start = log_text.find("Job stats:")
    if start < 0:
        return None
    for line in log_text[start:].splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return None


# ---------------------------------------------------------------------------------------------
# running arms under caps


def kill_tree(proc: subprocess.Popen) -> None:
    """Stop ``proc`` and every process it started (by their ids), then reap it."""
    pids = []
    try:
        import psutil

        pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    except Exception:  # psutil missing or the process already gone
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in [proc.pid, *pids]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # the arm's own process group (start_new_session)
        try:
            proc.wait(timeout=5)
            if sig == signal.SIGTERM:
                time.sleep(0.5)  # let children exit before the SIGKILL sweep
        except subprocess.TimeoutExpired:
            continue


def run_arm(name: str, cap: float, smoke: bool, work: Path, log_path: Path) -> dict[str, Any]:
    """Run one arm in a child process under ``cap`` seconds; its record, with status and seconds."""
    arm_json = work / f"arm_{name}.json"
    arm_json.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-arm", name, "--arm-json", str(arm_json),
           "--work", str(work / name)] + (["--smoke"] if smoke else [])  # fmt: skip
    env = dict(os.environ, GPU_SUITE_ARM_DEADLINE=str(time.time() + cap), PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    timed_out = False
    with open(log_path, "a") as log:
        log.write(
            f"\n===== arm {name} (cap {cap:.0f} s) {_dt.datetime.now().isoformat(timespec='seconds')}\n"
        )
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_tree(proc)
            rc = proc.returncode
    seconds = time.perf_counter() - t0
    record: dict[str, Any] = {"settings": {}, "metrics": {}, "checks": [], "notes": [], "error": None}
    if arm_json.exists():
        with contextlib.suppress(json.JSONDecodeError):
            record.update(json.loads(arm_json.read_text()))
    if timed_out:
        status = "timed_out"
        record["error"] = record.get("error") or f"stopped after its cap of {cap:.0f} s"
    elif rc != 0 or record.get("error"):
        status = "error"
        record["error"] = record.get("error") or f"arm process exited {rc} (see suite.log)"
    elif not record["checks"]:
        status = "fail"
        record["error"] = "the arm recorded no check"
    else:
        status = "pass" if all(c["passed"] for c in record["checks"]) else "fail"
    record.update(status=status, seconds=round(seconds, 1), cap_s=round(cap, 1), exit_code=rc)
    return record


def child(name: str, arm_json: Path, work: Path, smoke: bool) -> int:
    """Entry of an arm's own process: run it, record any exception with its traceback."""
    ctx = ArmContext(arm_json, name, smoke, work)
    try:
        ARMS[name].run(ctx)
    except BaseException as exc:  # noqa: B036 - the record must say why, whatever it was
        ctx.error(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}")
        traceback.print_exc()
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# environment and summary


def environment() -> dict[str, Any]:
    """Device, versions and machine facts (CUDA is initialised here, in the parent, once)."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_threads": cpu_threads(),
        "hostname": platform.node(),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda"] = torch.version.cuda
        env["cuda_available"] = bool(torch.cuda.is_available())
        env["device_name"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        env["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
        env["gpu_memory_gb"] = (
            round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
            if torch.cuda.is_available()
            else None
        )
    except Exception as exc:  # the summary says so instead of failing
        env.update(torch=None, cuda=None, cuda_available=False, device_name=None, torch_error=repr(exc))
    with contextlib.suppress(Exception):
        import torch

        env["tf32"] = {
            "matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn": bool(torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        }
    imports = {}
    for module in IMPORTS:  # what the arms need, tried once here so a missing package is named up front
        try:
            importlib.import_module(module)
            imports[module] = "ok"
        except Exception as exc:
            imports[module] = f"{type(exc).__name__}: {exc}"
    env["imports"] = imports
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    env["packages"] = versions
    env["git_commit"] = None
    with contextlib.suppress(Exception):
        env["git_commit"] = (
            subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    return env


def finish_arm(record: dict[str, Any], arm_def: Arm, on_gpu: bool) -> dict[str, Any]:
    """Add the arm's name, title, targets (met yes/no/unmeasured) and check counts to its record."""
    targets = [
        {
            "metric": t.metric,
            "op": t.op,
            "value": t.value,
            "text": t.text,
            "measured": record["metrics"].get(t.metric),
            "met": t.met(record["metrics"], on_gpu),
        }
        for t in arm_def.targets
    ]
    checks = record.get("checks", [])
    return {
        "arm": arm_def.name,
        "title": arm_def.title,
        "status": record["status"],
        "seconds": record.get("seconds"),
        "cap_s": record.get("cap_s"),
        "exit_code": record.get("exit_code"),
        "settings": record.get("settings", {}),
        "metrics": record.get("metrics", {}),
        "headline": list(arm_def.headline),
        "targets": targets,
        "target_met": _overall_met(targets),
        "checks": checks,
        "checks_passed": sum(c["passed"] for c in checks),
        "checks_total": len(checks),
        "notes": record.get("notes", []),
        "error": record.get("error"),
    }


def _overall_met(targets: list[dict]) -> str:
    """One word per arm: ``n/a`` (no target), else ``no`` if any target missed, ``unmeasured`` if any
    is unmeasured, else ``yes``."""
    if not targets:
        return "n/a"
    mets = [t["met"] for t in targets]
    if "no" in mets:
        return "no"
    if "unmeasured" in mets:
        return "unmeasured"
    return "yes"


def skipped(arm_def: Arm, why: str, on_gpu: bool) -> dict[str, Any]:
    record = {"settings": {}, "metrics": {}, "checks": [], "notes": [], "error": why, "status": "skipped"}
    record.update(seconds=0.0, cap_s=None, exit_code=None)
    return finish_arm(record, arm_def, on_gpu)


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """summary.json and summary.md, each written atomically."""
    for name, text in (
        ("summary.json", json.dumps(summary, indent=2, default=_jsonable) + "\n"),
        ("summary.md", summary_markdown(summary)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def summary_markdown(s: dict[str, Any]) -> str:
    env = s["environment"]
    pk = env.get("packages", {})
    lines = [
        f"# HAF-flow GPU suite: {s['mode']} run{' (CPU, tiny sizes: no GPU figure)' if s['mode'] == 'smoke' else ''}",
        "",
        f"- device: **{env.get('device_name')}** (torch {env.get('torch')}, CUDA {env.get('cuda')}, "
        f"cuDNN {env.get('cudnn')}), {env.get('cpu_threads')} CPU threads, Python {env.get('python')}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in pk.items()),
        f"- started {s['started']}, {_fmt(s['seconds'])} s in all (budget {_fmt(s['budget_s'])} s); "
        f"finished: {s['finished']}; every arm passed: **{s['all_passed']}**",
        f"- git commit: {env.get('git_commit')}; TF32: {env.get('tf32')}",
        "- imports: "
        + (
            "; ".join(f"{k}: {v}" for k, v in env.get("imports", {}).items() if v != "ok")
            or "every module the arms need imports"
        ),
        "",
        "| arm | status | figures | target | met | checks | s (cap) |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in s["arms"]:
        figures = ", ".join(f"{k} {_fmt(a['metrics'].get(k))}" for k in a["headline"] if k in a["metrics"])
        target = "; ".join(t["text"] for t in a["targets"]) or "none (reference)"
        lines.append(
            f"| {a['arm']} | {a['status']} | {figures or '-'} | {target} | {a['target_met']} | "
            f"{a['checks_passed']}/{a['checks_total']} | {_fmt(a['seconds'])} ({_fmt(a['cap_s'])}) |"
        )
    for a in s["arms"]:
        lines += ["", f"## {a['arm']}: {a['title']}", "", f"status **{a['status']}**"]
        if a["error"]:
            first = str(a["error"]).strip().splitlines()
            lines.append(f"; error: `{first[0] if first else a['error']}`")
        if a["settings"]:
            lines += ["", "settings: " + ", ".join(f"{k}={v}" for k, v in a["settings"].items())]
        if a["metrics"]:
            lines += ["", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in a["metrics"].items()]
        for t in a["targets"]:
            lines.append(f"\ntarget {t['text']}: measured {_fmt(t['measured'])}, met **{t['met']}**")
        if a["checks"]:
            lines.append("")
            lines += [
                f"- [{'x' if c['passed'] else ' '}] {c['name']} {c['detail']}".rstrip() for c in a["checks"]
            ]
        for note in a["notes"]:
            lines.append(f"\nnote: {note}")
    return "\n".join(lines) + "\n"


def parse_caps(values: list[str]) -> dict[str, float]:
    caps = {}
    for item in values:
        name, _, seconds = item.partition("=")
        if name not in ARMS or not seconds:
            raise SystemExit(f"--cap {item!r}: expected ARM=SECONDS with ARM one of {', '.join(ARMS)}")
        caps[name] = float(seconds)
    return caps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", help="folder for summary.json, summary.md and suite.log")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test's mode)")
    parser.add_argument("--only", default="", help=f"comma-separated arms (default all: {','.join(ARMS)})")
    parser.add_argument("--cap", action="append", default=[], help="ARM=SECONDS: override one arm's cap")
    parser.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all arms together"
    )
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch folder")
    parser.add_argument("--run-arm", help=argparse.SUPPRESS)
    parser.add_argument("--arm-json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.run_arm:
        return child(args.run_arm, Path(args.arm_json), Path(args.work), args.smoke)
    if not args.out:
        parser.error("--out is required")
    selected = [a.strip() for a in args.only.split(",") if a.strip()] or list(ARMS)
    unknown = [a for a in selected if a not in ARMS]
    if unknown:
        parser.error(f"--only: unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}")
    caps = parse_caps(args.cap)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_suite_"))
    work.mkdir(parents=True, exist_ok=True)
    log_path = out / "suite.log"
    log_path.write_text("")
    started = time.perf_counter()
    mode = "smoke" if args.smoke else "gpu"
    try:
        env = environment()
    except Exception as exc:
        env = {"error": repr(exc), "packages": {}}
    on_gpu = mode == "gpu" and bool(env.get("cuda_available"))
    summary: dict[str, Any] = {
        "suite": "haf-flow bench/gpu_suite.py",
        "version": SUMMARY_VERSION,
        "mode": mode,
        "command": " ".join(
            [Path(sys.executable).name, "bench/gpu_suite.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "finished": False,
        "seconds": 0.0,
        "budget_s": args.budget,
        "feature_tolerance": dict(FEATURE_TOL, min_spread=MIN_SPREAD),
        "environment": env,
        "arms": [],
        "all_passed": False,
    }
    write_summary(out, summary)
    try:
        for name, arm_def in ARMS.items():
            left = args.budget - (time.perf_counter() - started)
            if name not in selected:
                summary["arms"].append(skipped(arm_def, "not in --only", on_gpu))
            elif mode == "gpu" and not on_gpu:
                summary["arms"].append(
                    skipped(arm_def, "no CUDA device visible (use --smoke on a CPU)", on_gpu)
                )
            elif left < 5:
                summary["arms"].append(
                    skipped(arm_def, f"the suite's budget of {args.budget:.0f} s is spent", on_gpu)
                )
            else:
                cap = min(caps.get(name, arm_def.smoke_cap_s if args.smoke else arm_def.cap_s), left)
                print(f"arm {name}: cap {cap:.0f} s ...", flush=True)
                record = run_arm(name, cap, args.smoke, work, log_path)
                summary["arms"].append(finish_arm(record, arm_def, on_gpu))
                a = summary["arms"][-1]
                print(
                    f"arm {name}: {a['status']} in {a['seconds']} s, target met {a['target_met']}", flush=True
                )
            summary["seconds"] = round(time.perf_counter() - started, 1)
            write_summary(out, summary)
    finally:
        ran = [a for a in summary["arms"] if a["arm"] in selected]
        summary["all_passed"] = bool(ran) and all(a["status"] == "pass" for a in ran)
        summary["finished"] = True
        summary["seconds"] = round(time.perf_counter() - started, 1)
        write_summary(out, summary)
        if not args.work and not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"summary: {out / 'summary.md'} (all passed: {summary['all_passed']}, {summary['seconds']} s)")
    return 0 if summary["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
