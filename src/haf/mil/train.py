"""Stage 1 trainer: CLAM models per fold and pathology model (``wsi``, ``tma``, ``wsi_tma``), K folds at once.

Protocol (the HAF paper, section 3.1, through :func:`haf.runtime.fit.fit_stacked`): Adam (lr 1e-4, weight
decay 1e-5), up to 200 epochs, ReduceLROnPlateau on the validation loss (patience 15, factor 0.5), early
stopping on the fold's ``val`` part (val AUC, ties by val loss), best epoch restored; fold k seeded with
``fold_seed(stage1.seed, k)``.

* Training set: patients of the fold's ``train`` part with a binary label and a non-empty bag.
* Each epoch: the training bags in shuffled, size-bucketed batches of ``batch_bags`` (one optimiser step
  per batch, Eq. 3 averaged over its bags); bags above ``max_instances`` are subsampled afresh each epoch.
* Validation: full bags; ``val_loss`` is the bag cross-entropy (the instance term needs the label-driven
  pseudo-labels and is a training regulariser only), ``val_score`` the AUC.  A fold whose ``val`` part
  has no labelled patient with a bag is an error (``stage1.on_empty_val: train_loss`` selects by the
  training loss instead).
* After training, every patient of the fold with a bag (train, val and test) is embedded with full bags
  in eval mode, **one bag per forward pass** (:func:`attend_bags`): a patient's ``z`` and logit depend on
  its own bag and the fold's weights only, never on which other patients share a batch.  The attention
  that pooled each ``z`` goes to ``attention.h5`` (:mod:`haf.artifacts.attention`) with each instance's
  coords, source file and TMA core (:func:`bag_attention`).

Many folds in one program: :func:`run_stage1_folds` trains the K folds of one pathology model as K
members of one stacked model (:mod:`haf.runtime.stacked`) on one shared bag store (the cohort's bags
are read or cached once).  Member k has its own seed, training bags, size-bucketed batches and bag
subsamples (its own NumPy generator), dropout masks (its own torch generator), optimiser state, LR
schedule, early stopping and selected epoch, so fold k gives what it gives trained alone (K = 1) up to
float rounding of the batched kernels (tested).  Its plain model (``member_state_dict``) then writes the
fold's six outputs exactly as a single-fold run.  :func:`run_stage1` is the K = 1 wrapper (the rule);
:class:`Stage1Trainer` one fold's pieces for the benchmarks.

Compared with the per-fold trainer before the stacked runtime, only the random streams changed (per
member generators, ``fold_seed`` instead of ``seed + fold``, dropout drawn over real instance rows); the
arithmetic is the same up to float rounding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from haf.artifacts.attention import BagAttention, write_attention
from haf.artifacts.bags import read_bag_layout
from haf.artifacts.embeddings import Stage1Embeddings, write_embeddings
from haf.artifacts.files import atomic_path
from haf.artifacts.folds import fold_table as artifact_fold_table
from haf.artifacts.folds import read_folds
from haf.artifacts.manifest import resolve_listed
from haf.artifacts.predictions import make_predictions, write_predictions
from haf.artifacts.stage1_model import write_stage1_model
from haf.artifacts.targets import read_targets
from haf.artifacts.train_log import write_train_log
from haf.errors import HafInputError
from haf.eval.scores import auc_or_nan
from haf.mil.bags import BagStore, CapReport
from haf.mil.clam import GatedAttentionMIL, clam_loss
from haf.runtime.device import autocast
from haf.runtime.fit import StackedTrainer, fit_stacked
from haf.runtime.seeds import fold_seed, seed_everything
from haf.runtime.stacked import Layers, Members, member_state_dict
from haf.settings import Stage1Settings, TrainingSettings

log = logging.getLogger(__name__)

OUTPUT_KEYS = ("model", "embeddings", "predictions", "train_log", "loss_curve", "attention")


def fold_table(targets: str | Path, folds: str | Path, fold: int) -> pd.DataFrame:
    """``patient_id, part, label, time, event`` of one fold (every patient of ``folds.tsv``)."""
    return artifact_fold_table(
        read_targets(targets), read_folds(folds), fold, targets_source=targets, folds_source=folds
    )


def _uniform_classes(labels: np.ndarray) -> list[int]:
    return sorted({int(v) for v in labels})


@dataclass
class FoldPart:
    """One fold's patients as a member of a stacked Stage 1 run."""

    fold: int
    table: pd.DataFrame
    label: dict[str, float]
    train_ids: list[str]
    val_ids: list[str]
    seed: int
    blind: bool  # no labelled validation patient with a bag (stage1.on_empty_val: train_loss)


def fold_part(
    store: BagStore,
    table: pd.DataFrame,
    settings: Stage1Settings,
    *,
    fold: int,
    pmod: str,
    source: str | Path = "folds.tsv",
) -> FoldPart:
    """The fold's training and validation bags, logged; a fold that cannot train is an error naming it."""
    label = dict(zip(table["patient_id"], table["label"], strict=True))
    has = table["patient_id"].map(store.has).to_numpy(bool)
    labelled = np.isfinite(table["label"].to_numpy(float))
    part = table["part"].to_numpy()
    train_ids = table.loc[(part == "train") & has & labelled, "patient_id"].tolist()
    val_ids = table.loc[(part == "val") & has & labelled, "patient_id"].tolist()
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
    classes = _uniform_classes(np.array([label[p] for p in train_ids]))
    if len(classes) < 2:
        raise HafInputError(
            source,
            f"fold {fold}: the training part of pathology model {pmod} has "
            + (f"only class {classes[0]}" if classes else "no patient")
            + f" ({len(train_ids)} labelled patients with a bag); CLAM needs both classes",
            field="part",
        )
    blind = not val_ids
    if blind:
        n_val = int((part == "val").sum())
        what = (
            f"fold {fold}: the validation part of pathology model {pmod} has no labelled patient with a bag "
            f"({n_val} val patients, {int(((part == 'val') & has).sum())} with a bag), so early stopping "
            "and the LR schedule would be blind"
        )
        if settings.on_empty_val != "train_loss":
            raise HafInputError(
                source,
                what + "; use more patients or another split, or set stage1.on_empty_val: train_loss to "
                "select this fold's epoch by the training loss",
                field="part",
            )
        log.warning("%s: stage1.on_empty_val train_loss selects its epoch by the training loss", what)
    cap = CapReport.of(store, train_ids, settings.max_instances)
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
    return FoldPart(
        fold=int(fold),
        table=table,
        label=label,
        train_ids=train_ids,
        val_ids=val_ids,
        seed=fold_seed(settings.seed, fold),
        blind=blind,
    )


@torch.no_grad()
def attend_bags(
    model: GatedAttentionMIL, store: BagStore, pids: Sequence[str], device: torch.device
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
    """Full-bag ``z`` (n, d1), logits (n,) and attention (one float32 (n_i,) per patient) of a plain
    model, one bag per forward pass (eval mode).

    One bag per pass makes a patient's numbers depend on its own bag and the weights only (batched
    kernels round a row differently with other rows around it).  Patients without a bag get zeros and
    attention None.
    """
    z = np.zeros((len(pids), model.d1), dtype=np.float32)
    logit = np.zeros(len(pids), dtype=np.float64)
    attention: list[np.ndarray | None] = [None] * len(pids)
    was_training = model.training
    model.eval()
    for i, pid in enumerate(pids):
        if not store.has(pid):
            continue
        with autocast(device):
            z_i, logit_i, a_i = model.attend_one(store.bag(pid, device))
        z[i] = z_i.float().cpu().numpy()
        logit[i] = float(logit_i)
        attention[i] = a_i.float().cpu().numpy()
    model.train(was_training)
    return z, logit, attention


def embed_bags(
    model: GatedAttentionMIL, store: BagStore, pids: Sequence[str], device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Full-bag ``z`` (n, d1) and logits (n,) of a plain model, one bag per forward pass (eval mode):
    :func:`attend_bags` without the attention."""
    z, logit, _ = attend_bags(model, store, pids, device)
    return z, logit


def bag_attention(
    store: BagStore,
    patient_id: str,
    attention: np.ndarray,
    *,
    part: str,
    risk: float,
    manifest: str | Path | None = None,
) -> BagAttention:
    """One patient's :class:`~haf.artifacts.attention.BagAttention`: the attention over its full bag with
    each instance's coords, source file and (TMA) core, read from the bag files' headers.

    Core images are resolved as the manifest's readers do (:func:`haf.artifacts.manifest.resolve_listed`);
    a core name that is not an existing file (precomputed features name their feature files) gets ''.
    """
    source = store.sources[patient_id]
    if len(attention) != source.n:
        raise ValueError(f"patient {patient_id}: {len(attention)} attention weights for a bag of {source.n}")
    kinds = source.kinds or (store.name,) * len(source.files)
    coords, sources, cores, sizes, core_files = [], [], [], [], []
    for j, (path, count) in enumerate(zip(source.files, source.counts, strict=True)):
        layout = read_bag_layout(path)
        if layout.n != count:
            raise HafInputError(
                path, f"the bag has {layout.n} rows, {count} when Stage 1 read it", field="features"
            )
        coords.append(layout.coords)
        sources.append(np.full(count, j, dtype=np.int32))
        cores.append(np.where(layout.core >= 0, layout.core + len(core_files), -1).astype(np.int32))
        core_files += layout.core_files
        sizes.append(layout.patch_size)
    images = []
    for raw in core_files:
        path = resolve_listed(raw, manifest) if manifest is not None else Path(raw)
        images.append(str(path) if path.is_file() else "")
    return BagAttention(
        patient_id=patient_id,
        part=part,
        risk=float(risk),
        attention=np.asarray(attention, dtype=np.float32),
        coords=np.concatenate(coords),
        source=np.concatenate(sources),
        core=np.concatenate(cores),
        source_files=tuple(str(f) for f in source.files),
        source_modality=tuple(kinds),
        source_patch_size=tuple(sizes),
        core_files=tuple(core_files),
        core_images=tuple(images),
    )


@torch.no_grad()
def embed_members(
    model: GatedAttentionMIL,
    store: BagStore,
    ids: Sequence[Sequence[str]],
    *,
    batch_bags: int,
    instance_budget: int | None,
    device: torch.device,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Full-bag ``z`` and logits of every member of a stacked model on its own patients ``ids[k]``.

    Member k's patients go in size-sorted batches of at most ``instance_budget`` instances (its own
    plan, as one fold alone); the members' batches of one step run as one stacked forward.  Patients
    without a bag get zeros.  For validation during training (the final embeddings use
    :func:`embed_bags`).
    """
    plans = [
        store.plan(list(p), batch_bags=batch_bags, shuffle=False, instance_budget=instance_budget)
        for p in ids
    ]
    where = [{p: i for i, p in enumerate(member)} for member in ids]
    z = [np.zeros((len(member), model.d1), dtype=np.float32) for member in ids]
    logit = [np.zeros(len(member), dtype=np.float64) for member in ids]
    was_training = model.training
    model.eval()
    for step in range(max((len(p) for p in plans), default=0)):
        groups = [p[step] if step < len(p) else [] for p in plans]
        batch = store.stacked_batch(groups, device=device)
        with autocast(device):
            out = model(batch.x, batch.mask)
        zs, ls = out.z.float().cpu().numpy(), out.logit.float().cpu().numpy()
        for k, group in enumerate(groups):
            if group:
                rows = [where[k][p] for p in group]
                z[k][rows] = zs[k, : len(group)]
                logit[k][rows] = ls[k, : len(group)]
    model.train(was_training)
    return list(zip(z, logit, strict=True))


class Stage1Task:
    """K folds of one pathology model's CLAM trained side by side (the task of ``fit_stacked``)."""

    def __init__(
        self,
        store: BagStore,
        parts: list[FoldPart],
        settings: Stage1Settings,
        pmod: str,
        device: torch.device,
    ) -> None:
        self.store, self.parts, self.settings, self.pmod = store, parts, settings, pmod
        self.device = torch.device(device)
        self.members = Members([p.seed for p in parts], self.device)
        seed_everything(self.members.seeds[0])
        self.model = GatedAttentionMIL(
            store.dim, settings.d1, settings.d2, settings.dropout, layers=Layers(self.members)
        ).to(self.device)
        self.train_loss = np.full(len(parts), np.nan)
        # usable validation patients (labelled, with a bag): fit_stacked warns below min_val_patients
        self.val_counts = [len(p.val_ids) for p in parts]

    def train_epoch(self, epoch: int, running: np.ndarray, trainer: StackedTrainer) -> np.ndarray:
        """One pass over each running member's training bags; (K,) mean Eq. 3 loss per bag."""
        s, k = self.settings, self.members.k
        plans = [
            self.store.plan(
                part.train_ids,
                batch_bags=s.batch_bags,
                shuffle=True,
                rng=self.members.rngs[i],
                max_instances=s.max_instances,
            )
            if running[i]
            else []
            for i, part in enumerate(self.parts)
        ]
        total, count = np.zeros(k), np.zeros(k)
        labels = [part.label for part in self.parts]
        for step in range(max((len(p) for p in plans), default=0)):
            groups = [p[step] if step < len(p) else [] for p in plans]
            batch = self.store.stacked_batch(
                groups, max_instances=s.max_instances, rngs=self.members.rngs, device=self.device
            )
            self.members.set_active(batch.active)
            with autocast(self.device):
                out = self.model(batch.x, batch.mask)
            loss = clam_loss(
                self.model,
                out,
                batch.mask,
                batch.labels(labels, self.device),
                bag_weight=s.bag_weight,
                k_sample=s.k_sample,
            )
            trainer.backward_step(loss.total, batch.active)
            n = np.array([len(g) for g in groups], dtype=float)
            total += loss.total.detach().cpu().numpy() * n
            count += n
        self.train_loss = np.where(running, total / np.maximum(count, 1), self.train_loss)
        return total / np.maximum(count, 1)

    def validate(self, running: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K,) val AUC and val bag cross-entropy; a blind member (on_empty_val train_loss): NaN and its
        epoch's training loss (what its epoch selection and LR schedule then follow)."""
        k = self.members.k
        score, loss = np.full(k, np.nan), np.full(k, np.nan)
        ids = [part.val_ids if running[i] else [] for i, part in enumerate(self.parts)]
        out = embed_members(
            self.model,
            self.store,
            ids,
            batch_bags=self.settings.batch_bags,
            instance_budget=self.settings.instance_budget,
            device=self.device,
        )
        for i in np.flatnonzero(running):
            part = self.parts[i]
            if part.blind:
                loss[i] = self.train_loss[i]
                continue
            logit = out[i][1]
            y = np.array([part.label[p] for p in part.val_ids])
            loss[i] = F.binary_cross_entropy_with_logits(torch.from_numpy(logit), torch.from_numpy(y)).item()
            score[i] = auc_or_nan(y, logit)
        return score, loss

    def fold_model(self, k: int) -> GatedAttentionMIL:
        """Member k as the plain single-fold model (eval mode): what embeds, predicts and is saved."""
        s = self.settings
        plain = GatedAttentionMIL(self.store.dim, s.d1, s.d2, s.dropout)
        plain.load_state_dict(member_state_dict(self.model, k))
        return plain.to(self.device).eval()


class Stage1Trainer:
    """One fold on the stacked runtime (K = 1) in the shape of a per-fold trainer (the benchmarks use it):
    ``train_epoch(epoch) -> float``, ``validate() -> (AUC, loss)``, ``predict(pids) -> (z, logit)``."""

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
        self.part = fold_part(store, table, settings, fold=fold, pmod=pmod, source=source)
        self.train_ids, self.val_ids, self.label, self.seed = (
            self.part.train_ids,
            self.part.val_ids,
            self.part.label,
            self.part.seed,
        )
        self.task = Stage1Task(store, [self.part], settings, pmod, self.device)
        self.model = self.task.model
        self.trainer = StackedTrainer(self.model, self.task.members, settings.train)

    def _labels(self, pids: list[str]) -> torch.Tensor:
        return torch.tensor([self.label[p] for p in pids], dtype=torch.float32, device=self.device)

    def train_epoch(self, epoch: int) -> float:
        return float(self.task.train_epoch(epoch, np.ones(1, dtype=bool), self.trainer)[0])

    def validate(self) -> tuple[float, float]:
        score, loss = self.task.validate(np.ones(1, dtype=bool))
        return float(score[0]), float(loss[0])

    def predict(self, pids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return embed_bags(self.task.fold_model(0), self.store, pids, self.device)


@dataclass
class Stage1Result:
    model: GatedAttentionMIL
    history: pd.DataFrame
    embeddings: dict[str, np.ndarray]  # patient_id, part, z
    predictions: pd.DataFrame
    seconds: float  # wall seconds of the run (stacked: all folds' training) up to this fold's outputs


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


def run_stage1_folds(
    pmod: str,
    folds: list[int],
    manifest: str | Path,
    targets: str | Path,
    folds_path: str | Path,
    tma_index: str | Path | None,
    section: Stage1Settings | dict[str, Any],
    device: torch.device,
    outputs_per_fold: list[dict[str, str | Path]] | None = None,
    encoder: str | None = None,
    selection: TrainingSettings | None = None,
    progress: bool = False,
) -> list[Stage1Result]:
    """Train the CLAM models of several folds of one pathology model at once; one result per fold.

    The cohort's bags are opened (and cached) once and shared by every fold.  Fold k is member k of a
    stacked model: its own seed ``fold_seed(stage1.seed, k)``, bags, batches, dropout, optimiser state,
    schedule and early stopping, so its result is what it gives trained alone up to float rounding.
    ``outputs_per_fold[i]`` (keys :data:`OUTPUT_KEYS`: ``model``, ``embeddings``, ``predictions``,
    ``train_log``, ``loss_curve``, ``attention``) receives fold ``folds[i]``'s six outputs.  A fold that cannot train stops the job
    naming the fold before any training.
    """
    started = time.perf_counter()
    folds = [int(f) for f in folds]
    if not folds or len(set(folds)) != len(folds):
        raise ValueError(f"run_stage1_folds needs distinct folds, got {folds}")
    if outputs_per_fold is not None and len(outputs_per_fold) != len(folds):
        raise ValueError(f"{len(outputs_per_fold)} output sets for {len(folds)} folds")
    for outputs in outputs_per_fold or []:
        missing = [k for k in OUTPUT_KEYS if k not in outputs]
        if missing:
            raise ValueError(f"Stage 1 outputs lack {missing} (needed: {list(OUTPUT_KEYS)})")
    settings = Stage1Settings.from_config(section)
    store = BagStore.for_pathology_model(
        pmod,
        manifest=manifest,
        tma_index=tma_index,
        wsi_dim=settings.wsi_dim,
        require_both=settings.wsi_tma_requires_both,
        max_abs=settings.max_abs_feature,
    )
    tables = [fold_table(targets, folds_path, fold) for fold in folds]
    in_folds = set().union(*(set(t["patient_id"]) for t in tables))
    outside = [p for p in store.patient_ids if p not in in_folds]
    if outside:
        log.warning(
            "%s: %d patients with a bag are not in folds.tsv (no target row) and get no embedding, e.g. %s",
            pmod,
            len(outside),
            outside[0],
        )
    device = torch.device(device)
    parts = [
        fold_part(store, table, settings, fold=fold, pmod=pmod, source=folds_path)
        for fold, table in zip(folds, tables, strict=True)
    ]
    store.cache(device, settings.cache_budget_bytes(device.type))
    task = Stage1Task(store, parts, settings, pmod, device)
    names = [f"stage1 {pmod} fold {fold}" for fold in folds]
    histories = fit_stacked(task, settings.train, names=names, selection=selection, progress=progress)
    results = []
    for k, part in enumerate(parts):
        history = histories[k]
        if part.blind:  # its val columns held the training loss it was selected by
            history["val_loss"] = np.nan
        model = task.fold_model(k)
        results.append(
            _fold_outputs(
                part,
                model,
                history,
                store,
                settings,
                pmod=pmod,
                device=device,
                encoder=encoder,
                outputs=outputs_per_fold[k] if outputs_per_fold is not None else None,
                started=started,
                manifest=manifest,
            )
        )
    return results


def _fold_outputs(
    part: FoldPart,
    model: GatedAttentionMIL,
    history: pd.DataFrame,
    store: BagStore,
    settings: Stage1Settings,
    *,
    pmod: str,
    device: torch.device,
    encoder: str | None,
    outputs: dict[str, str | Path] | None,
    started: float,
    manifest: str | Path | None = None,
) -> Stage1Result:
    """Embed every patient of the fold with a bag (one bag per pass), predict, write the six outputs."""
    fold, table = part.fold, part.table
    rows = table[table["patient_id"].map(store.has)].reset_index(drop=True)
    pids = rows["patient_id"].tolist()
    z, logit, attention = attend_bags(model, store, pids, device)
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
    for name in ("val", "test"):
        sel = predictions["part"] == name
        log.info(
            "fold %d %s %s AUC %.4f (%d patients, %d labelled)",
            fold,
            pmod,
            name,
            auc_or_nan(predictions.loc[sel, "label"].to_numpy(), predictions.loc[sel, "risk"].to_numpy()),
            int(sel.sum()),
            int(predictions.loc[sel, "label"].notna().sum()),
        )
    result = Stage1Result(model, history, embeddings, predictions, time.perf_counter() - started)
    if outputs is not None:
        best = history.loc[history["best"], "epoch"]
        meta = {
            "pmod": pmod,
            "fold": int(fold),
            "seed": part.seed,
            "best_epoch": int(best.iloc[0]) if len(best) else -1,
            "selected_by": "train_loss" if part.blind else "val",
            "encoder": encoder,
            "in_dim": store.dim,
            "n_train": len(part.train_ids),
        }
        write_stage1_model(outputs["model"], model.cpu().checkpoint(**meta))
        model.to(device)
        write_embeddings(
            outputs["embeddings"],
            Stage1Embeddings(embeddings["patient_id"], embeddings["part"], embeddings["z"]),
        )
        write_predictions(outputs["predictions"], predictions)
        write_train_log(outputs["train_log"], history)
        plot_loss_curve(history, outputs["loss_curve"], f"{pmod.upper()}-CLAM, fold {fold}")
        n_written = write_attention(
            outputs["attention"],
            (
                bag_attention(store, pid, a, part=str(p), risk=r, manifest=manifest)
                for pid, p, r, a in zip(pids, rows["part"], logit, attention, strict=True)
            ),
            pmod=pmod,
            fold=int(fold),
        )
        log.info("fold %d %s: attention over the full bags of %d patients written", fold, pmod, n_written)
        log.info("fold %d %s: outputs written at %.1f s", fold, pmod, result.seconds)
    return result


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
    """Train one fold's CLAM model and (if ``outputs`` is given) write the rule's six outputs.

    ``outputs`` keys: :data:`OUTPUT_KEYS`.
    :func:`run_stage1_folds` with one fold.
    """
    return run_stage1_folds(
        pmod,
        [fold],
        manifest,
        targets,
        folds,
        tma_index,
        section,
        device,
        outputs_per_fold=None if outputs is None else [outputs],
        encoder=encoder,
        progress=progress,
    )[0]
