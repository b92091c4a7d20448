"""Stage 1 speed: CLAM's one-bag-per-step loop vs the batched trainer, on one fold of a synthetic cohort.

Writes a HANCOCK-sized synthetic WSI cohort (default 763 patients, bags of 500-20,000 1024-d instances,
float32 h5 like HANCOCK's UNI files: about 31 GB on disk) into a temporary folder, then trains fold 0
with both arms on the same bag store (same lazy h5 reads or the same device cache), the same cap, the
same model and loss:

(a) CLAM's loop: one bag per forward/backward/optimiser step, validation one bag at a time;
(b) :class:`haf.mil.train.Stage1Trainer`: padded, size-bucketed batches of ``--batch-bags`` bags.

It prints seconds per epoch (train + validation), epochs/s for both arms, the ratio, the peak RSS and a
projection for the whole Stage 1 (10 folds x 3 pathology models) at ``--projected-epochs`` epochs.

Quick CPU check (minutes):  python bench/bench_stage1.py --patients 200 --min-n 50 --max-n 2000 --threads 1
H100 (full size):           python bench/bench_stage1.py --device cuda --threads 8
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _repo  # noqa: F401 (puts the checkout's src/ and tests/ first on sys.path)
import numpy as np
import torch
from fakes.config import settings as config_settings
from fakes.mil import BagSpec, write_synthetic_cohort

from haf.logs import setup_logging
from haf.mil.bags import BagStore, CapReport
from haf.mil.clam import GatedAttentionMIL, clam_loss
from haf.mil.train import Stage1Trainer, fold_table
from haf.runtime.device import autocast, resolve_device
from haf.runtime.fit import make_optimizer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PerBagLoop:
    """CLAM's ``train_loop_clam`` / ``validate_clam``: batch size 1, one optimiser step per bag."""

    def __init__(self, trainer: Stage1Trainer, cap: int | None, seed: int) -> None:
        s = trainer.settings
        torch.manual_seed(seed)
        self.t, self.cap, self.s = trainer, cap, s
        self.model = GatedAttentionMIL(trainer.store.dim, s.d1, s.d2, s.dropout).to(trainer.device)
        self.optimizer = make_optimizer(self.model.parameters(), s.train)
        self.rng = np.random.default_rng(seed)

    def train_epoch(self) -> float:
        self.model.train()
        t, total = self.t, 0.0
        for i in self.rng.permutation(len(t.train_ids)):
            pid = t.train_ids[i]
            batch = t.store.batch([pid], max_instances=self.cap, rng=self.rng, device=t.device, packed=True)
            with autocast(t.device):
                out = self.model(batch.x, batch.mask)
            loss = clam_loss(
                self.model,
                out,
                batch.mask,
                t._labels([pid]),
                bag_weight=self.s.bag_weight,
                k_sample=self.s.k_sample,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            self.optimizer.step()
            total += loss.total.item()  # CLAM accumulates a Python float per bag
        return total / max(1, len(t.train_ids))

    @torch.no_grad()
    def validate(self) -> None:
        self.model.eval()
        for pid in self.t.val_ids:
            batch = self.t.store.batch([pid], device=self.t.device, packed=True)
            with autocast(self.t.device):
                self.model(batch.x, batch.mask).logit.item()


def time_epochs(step, epochs: int, warmup: int, device: torch.device) -> float:
    """Seconds per epoch (train + validation) after ``warmup`` untimed epochs."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        step()
    sync(device)
    return (time.perf_counter() - start) / epochs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=763)
    p.add_argument("--min-n", type=int, default=500, help="fewest instances in a bag")
    p.add_argument("--max-n", type=int, default=20000, help="most instances in a bag")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per arm")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs per arm first")
    p.add_argument("--batch-bags", type=int, default=16)
    p.add_argument("--cap", type=int, default=4096, help="stage1.max_instances, the same for both arms")
    p.add_argument(
        "--per-bag-cap",
        type=int,
        default=None,
        help="cap of arm (a) (default: --cap, a like-for-like comparison; 0 = full bags as CLAM trains)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--cache-gb", type=float, default=None, help="device cache budget (default: config default)"
    )
    p.add_argument("--h5-dtype", default="float32", choices=["float32", "float16"])
    p.add_argument(
        "--projected-epochs", type=int, default=80, help="epochs per job for the 30-job projection"
    )
    p.add_argument("--arms", default="both", choices=["both", "batched", "per-bag"])
    p.add_argument("--workdir", default=None, help="where to write the cohort (default: a temp dir, removed)")
    p.add_argument("--keep", action="store_true", help="keep (and reuse) the cohort in --workdir")
    args = p.parse_args(argv)

    setup_logging(None, level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_stage1_"))
    print(f"device {device}, torch threads {args.threads}, cohort in {workdir}")
    t0 = time.perf_counter()
    if not (args.keep and (workdir / "manifest.tsv").exists()):
        cohort = write_synthetic_cohort(
            workdir,
            n_patients=args.patients,
            wsi=BagSpec(args.min_n, args.max_n, args.dim, signal=1.0),
            k=10,
            seed=0,
            store_dtype=args.h5_dtype,
        )
        manifest, targets, folds = cohort.manifest, cohort.targets, cohort.folds
        print(f"wrote the cohort in {time.perf_counter() - t0:.1f} s")
    else:
        manifest, targets, folds = workdir / "manifest.tsv", workdir / "targets.tsv", workdir / "folds.tsv"
        print("reusing the cohort in --workdir")
    try:
        settings = config_settings(
            "stage1", wsi_dim=args.dim, batch_bags=args.batch_bags, max_instances=args.cap
        )
        t0 = time.perf_counter()
        store = BagStore.for_pathology_model("wsi", manifest=manifest, wsi_dim=args.dim)
        budget = args.cache_gb
        if budget is None:
            budget = settings.cache_gb_gpu if device.type == "cuda" else settings.cache_gb_cpu
        cached = store.cache(device, budget * 1e9)
        setup_s = time.perf_counter() - t0
        table = fold_table(targets, folds, 0)
        trainer = Stage1Trainer(store, table, settings, fold=0, pmod="wsi", device=device)
        cap = CapReport.of(store, trainer.train_ids, args.cap)
        sizes = np.array([store.n_instances(q) for q in store.patient_ids])
        print(
            f"{len(sizes)} bags, {args.dim}-d, instances min {sizes.min()} / mean {sizes.mean():.0f} / max {sizes.max()}, "
            f"{store.nbytes() / 1e9:.2f} GB float32; {len(trainer.train_ids)} train / {len(trainer.val_ids)} val bags; "
            f"cap {args.cap}: {cap.n_capped} training bags capped ({cap.instances_before} -> {cap.instances_after} "
            f"instances per epoch); bags {'cached on ' + str(device) if cached else 'read lazily from h5 per batch'} "
            f"(setup {setup_s:.1f} s)"
        )
        results = {}
        if args.arms in ("both", "batched"):

            def batched_epoch():
                trainer.model.train()
                trainer.train_epoch(0)
                trainer.model.eval()
                with torch.no_grad():
                    trainer.validate()

            results["batched"] = time_epochs(batched_epoch, args.epochs, args.warmup, device)
            print(
                f"(b) batched ({args.batch_bags} bags/step): {results['batched']:.2f} s/epoch = {1 / results['batched']:.3f} epochs/s"
            )
        if args.arms in ("both", "per-bag"):
            per_bag_cap = args.cap if args.per_bag_cap is None else (args.per_bag_cap or None)
            loop = PerBagLoop(trainer, per_bag_cap, seed=1)

            def per_bag_epoch():
                loop.train_epoch()
                loop.validate()

            results["per_bag"] = time_epochs(per_bag_epoch, args.epochs, args.warmup, device)
            print(
                f"(a) CLAM per-bag loop (cap {per_bag_cap}): {results['per_bag']:.2f} s/epoch = {1 / results['per_bag']:.3f} epochs/s"
            )
        if len(results) == 2:
            print(f"ratio batched / per-bag (epochs/s): {results['per_bag'] / results['batched']:.2f}x")
        if "batched" in results:
            total = 30 * (setup_s + args.projected_epochs * results["batched"])
            print(
                f"projection (not a measurement): 10 folds x 3 models x ({setup_s:.1f} s setup + "
                f"{args.projected_epochs} epochs) = {total / 60:.1f} min with the batched trainer"
            )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"peak RSS {peak:.0f} MB"
            + (
                f", peak GPU memory {torch.cuda.max_memory_allocated() / 1e9:.2f} GB"
                if device.type == "cuda"
                else ""
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
