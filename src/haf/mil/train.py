"""Stage 1 trainer: one CLAM model per fold and pathology model (``wsi``, ``tma``, ``wsi_tma``).

Protocol (the HAF paper, section 3.1, through :func:`haf.runtime.fit.fit`): Adam (lr 1e-4, weight decay 1e-5), up to
200 epochs, ReduceLROnPlateau on the validation loss (patience 15, factor 0.5), early stopping on the
fold's ``val`` part (val AUC, ties by val loss), best epoch restored; seeded with ``stage1.seed + fold``.

* Training set: patients of the fold's ``train`` part with a binary label and a non-empty bag.
* Each epoch: the training bags in shuffled, size-bucketed batches of ``batch_bags`` (one optimiser step
  per batch, Eq. 3 averaged over its bags); bags above ``max_instances`` are subsampled afresh each epoch.
* Validation: full bags; ``val_loss`` is the bag cross-entropy (the instance term needs the label-driven
  pseudo-labels and is a training regulariser only), ``val_score`` the AUC.
* After training, every patient of the fold with a bag (train, val and test) is embedded with full bags
  in eval mode: ``z`` (detached) and the logit.

:func:`run_stage1` is the whole rule; :class:`Stage1Trainer` the reusable pieces (the benchmark uses its
``train_epoch``/``validate``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from haf.artifacts.embeddings import Stage1Embeddings, write_embeddings
from haf.artifacts.files import atomic_path
from haf.artifacts.folds import fold_table as artifact_fold_table
from haf.artifacts.folds import read_folds
from haf.artifacts.predictions import make_predictions, write_predictions
from haf.artifacts.stage1_model import write_stage1_model
from haf.artifacts.targets import read_targets
from haf.artifacts.train_log import write_train_log
from haf.errors import HafInputError
from haf.eval.scores import auc_or_nan
from haf.mil.bags import BagStore, CapReport
from haf.mil.clam import GatedAttentionMIL, clam_loss
from haf.runtime.device import autocast
from haf.runtime.fit import fit, make_optimizer
from haf.runtime.seeds import seed_everything
from haf.settings import Stage1Settings

log = logging.getLogger(__name__)


def fold_table(targets: str | Path, folds: str | Path, fold: int) -> pd.DataFrame:
    """``patient_id, part, label, time, event`` of one fold (every patient of ``folds.tsv``)."""
    return artifact_fold_table(
        read_targets(targets), read_folds(folds), fold, targets_source=targets, folds_source=folds
    )


def _uniform_classes(labels: np.ndarray) -> list[int]:
    return sorted({int(v) for v in labels})


class Stage1Trainer:
    """Model, optimiser and the two callables :func:`haf.runtime.fit.fit` needs, for one fold."""

    def __init__(
        self,
        store: BagStore,
        table: pd.DataFrame,
        settings: Stage1Settings,
        *,
        fold: int,
        pmod: str,
        device: torch.device,
        source: str | Path = "folds.tsv",
    ) -> None:
        self.store, self.settings, self.fold, self.pmod = store, settings, int(fold), pmod
        self.device = torch.device(device)
        self.table = table
        self.label = dict(zip(table["patient_id"], table["label"], strict=True))
        has = table["patient_id"].map(store.has).to_numpy(bool)
        labelled = np.isfinite(table["label"].to_numpy(float))
        part = table["part"].to_numpy()
        self.train_ids = table.loc[(part == "train") & has & labelled, "patient_id"].tolist()
        self.val_ids = table.loc[(part == "val") & has & labelled, "patient_id"].tolist()
        for name in ("train", "val", "test"):
            in_part = part == name
            log.info(
                "fold %d %s %s part: %d patients, %d with a bag, %d of those with a binary label "
                "(excluded from %s: %d without a bag, %d without a label)",
                fold,
                pmod,
                name,
                int(in_part.sum()),
                int((in_part & has).sum()),
                int((in_part & has & labelled).sum()),
                "training" if name == "train" else "the AUC",
                int((in_part & ~has).sum()),
                int((in_part & has & ~labelled).sum()),
            )
        classes = _uniform_classes(np.array([self.label[p] for p in self.train_ids]))
        if len(classes) < 2:
            raise HafInputError(
                source,
                f"fold {fold}: the training part of pathology model {pmod} has "
                + (f"only class {classes[0]}" if classes else "no patient")
                + f" ({len(self.train_ids)} labelled patients with a bag); CLAM needs both classes",
                field="part",
            )
        if not self.val_ids:
            log.warning(
                "fold %d %s: no labelled validation patient with a bag; early stopping is blind", fold, pmod
            )
        cap = CapReport.of(store, self.train_ids, settings.max_instances)
        log.info(
            "fold %d %s: training-time cap max_instances=%s subsamples %d of %d training bags "
            "(%d -> %d instances per epoch); evaluation uses full bags",
            fold,
            pmod,
            settings.max_instances,
            cap.n_capped,
            cap.n_bags,
            cap.instances_before,
            cap.instances_after,
        )
        self.seed = int(settings.seed) + int(fold)
        seed_everything(self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.model = GatedAttentionMIL(store.dim, settings.d1, settings.d2, settings.dropout).to(self.device)
        self.optimizer = make_optimizer(self.model.parameters(), settings.train)

    def _labels(self, pids: list[str]) -> torch.Tensor:
        return torch.tensor([self.label[p] for p in pids], dtype=torch.float32, device=self.device)

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training bags in batches; the mean Eq. 3 loss per bag."""
        s = self.settings
        total = torch.zeros((), device=self.device)
        count = 0
        for batch in self.store.batches(
            self.train_ids,
            batch_bags=s.batch_bags,
            shuffle=True,
            rng=self.rng,
            max_instances=s.max_instances,
            device=self.device,
            packed=True,
        ):
            with autocast(self.device):
                out = self.model(batch.x, batch.mask)
            loss = clam_loss(
                self.model,
                out,
                batch.mask,
                self._labels(batch.patient_id),
                bag_weight=s.bag_weight,
                k_sample=s.k_sample,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            self.optimizer.step()
            total += loss.total.detach() * len(batch)
            count += len(batch)
        return float(total.item() / max(count, 1))

    @torch.no_grad()
    def predict(self, pids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Full-bag ``z`` (n, d1) and logits (n,) in ``pids`` order (patients must have a bag)."""
        z = np.zeros((len(pids), self.settings.d1), dtype=np.float32)
        logit = np.zeros(len(pids), dtype=np.float64)
        where = {p: i for i, p in enumerate(pids)}
        was_training = self.model.training
        self.model.eval()
        for batch in self.store.batches(
            pids,
            batch_bags=self.settings.batch_bags,
            shuffle=False,
            instance_budget=self.settings.instance_budget,
            device=self.device,
            packed=True,
        ):
            with autocast(self.device):
                out = self.model(batch.x, batch.mask)
            rows = [where[p] for p in batch.patient_id]
            z[rows] = out.z.float().cpu().numpy()
            logit[rows] = out.logit.float().cpu().numpy()
        self.model.train(was_training)
        return z, logit

    def validate(self) -> tuple[float, float]:
        """(val AUC, val bag cross-entropy) over labelled validation patients; NaN without any."""
        if not self.val_ids:
            return float("nan"), float("nan")
        _, logit = self.predict(self.val_ids)
        y = np.array([self.label[p] for p in self.val_ids])
        loss = F.binary_cross_entropy_with_logits(torch.from_numpy(logit), torch.from_numpy(y)).item()
        return auc_or_nan(y, logit), float(loss)

    def fit(self, progress: bool = False) -> pd.DataFrame:
        return fit(
            {"clam": self.model},
            self.optimizer,
            self.settings.train,
            self.train_epoch,
            self.validate,
            name=f"stage1 {self.pmod} fold {self.fold}",
            progress=progress,
        )


@dataclass
class Stage1Result:
    model: GatedAttentionMIL
    history: pd.DataFrame
    embeddings: dict[str, np.ndarray]  # patient_id, part, z
    predictions: pd.DataFrame
    seconds: float


def plot_loss_curve(history: pd.DataFrame, path: str | Path, title: str) -> None:
    """Train/val loss and val AUC per epoch, the best epoch marked (PNG, Agg backend, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(history["epoch"], history["train_loss"], label="train (Eq. 3)")
    ax_loss.plot(history["epoch"], history["val_loss"], label="val (bag CE)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_auc.plot(history["epoch"], history["val_score"], color="tab:green")
    ax_auc.set_xlabel("epoch")
    ax_auc.set_ylabel("val AUC")
    best = history.loc[history["best"], "epoch"]
    for ax in (ax_loss, ax_auc):
        for epoch in best:
            ax.axvline(epoch, color="grey", linestyle=":", linewidth=1)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_stage1(
    *,
    pmod: str,
    fold: int,
    manifest: str | Path,
    targets: str | Path,
    folds: str | Path,
    tma_index: str | Path | None,
    section: Stage1Settings | dict[str, Any],
    device: torch.device,
    outputs: dict[str, str | Path] | None = None,
    encoder: str | None = None,
    progress: bool = False,
) -> Stage1Result:
    """Train one fold's CLAM model and (if ``outputs`` is given) write the rule's five outputs.

    ``outputs`` keys: ``model``, ``embeddings``, ``predictions``, ``train_log``, ``loss_curve``.
    """
    started = time.perf_counter()
    settings = Stage1Settings.from_config(section)
    store = BagStore.for_pathology_model(
        pmod,
        manifest=manifest,
        tma_index=tma_index,
        wsi_dim=settings.wsi_dim,
        require_both=settings.wsi_tma_requires_both,
        max_abs=settings.max_abs_feature,
    )
    table = fold_table(targets, folds, fold)
    in_folds = set(table["patient_id"])
    outside = [p for p in store.patient_ids if p not in in_folds]
    if outside:
        log.warning(
            "%s: %d patients with a bag are not in folds.tsv (no target row) and get no embedding, e.g. %s",
            pmod,
            len(outside),
            outside[0],
        )
    device = torch.device(device)
    budget = settings.cache_budget_bytes(device.type)
    store.cache(device, budget)
    trainer = Stage1Trainer(store, table, settings, fold=fold, pmod=pmod, device=device, source=folds)
    history = trainer.fit(progress=progress)

    rows = table[table["patient_id"].map(store.has)].reset_index(drop=True)
    pids = rows["patient_id"].tolist()
    z, logit = trainer.predict(pids)
    embeddings = {
        "patient_id": np.asarray(pids, dtype="U"),
        "part": rows["part"].to_numpy().astype("U"),
        "z": z.astype(np.float32),
    }
    scored = rows["part"].isin(["val", "test"]).to_numpy()
    predictions = make_predictions(
        method=f"{pmod}_clam",
        seed=int(settings.seed),
        fold=int(fold),
        part=rows["part"].to_numpy()[scored],
        patient_id=rows["patient_id"].to_numpy()[scored],
        risk=logit[scored],
        prob=1.0 / (1.0 + np.exp(-logit[scored])),
        label=rows["label"].to_numpy(float)[scored],
        time=rows["time"].to_numpy(float)[scored],
        event=rows["event"].to_numpy()[scored].astype(int),
    )
    for part in ("val", "test"):
        sel = predictions["part"] == part
        log.info(
            "fold %d %s %s AUC %.4f (%d patients, %d labelled)",
            fold,
            pmod,
            part,
            auc_or_nan(predictions.loc[sel, "label"].to_numpy(), predictions.loc[sel, "risk"].to_numpy()),
            int(sel.sum()),
            int(predictions.loc[sel, "label"].notna().sum()),
        )
    result = Stage1Result(trainer.model, history, embeddings, predictions, time.perf_counter() - started)
    if outputs is not None:
        best = history.loc[history["best"], "epoch"]
        meta = {
            "pmod": pmod,
            "fold": int(fold),
            "seed": trainer.seed,
            "best_epoch": int(best.iloc[0]) if len(best) else -1,
            "encoder": encoder,
            "in_dim": store.dim,
            "n_train": len(trainer.train_ids),
        }
        write_stage1_model(outputs["model"], trainer.model.cpu().checkpoint(**meta))
        trainer.model.to(device)
        write_embeddings(
            outputs["embeddings"],
            Stage1Embeddings(embeddings["patient_id"], embeddings["part"], embeddings["z"]),
        )
        write_predictions(outputs["predictions"], predictions)
        write_train_log(outputs["train_log"], history)
        plot_loss_curve(history, outputs["loss_curve"], f"{pmod.upper()}-CLAM, fold {fold}")
        log.info("fold %d %s: outputs written in %.1f s", fold, pmod, result.seconds)
    return result
