"""Stage 2 trainer (rule ``align``): the seven projectors trained with L_GA (or CLIP) on one fold.

Trained on the fold's ``train`` part (every patient: alignment needs no label), early-stopped on
the ``val`` part's alignment loss (validation score = -loss, computed in fixed batches of
``batch_size`` so L_PD sees batches of the size it is trained with).  A modality that no
training patient has gets no gradient: its projector stays at its initialisation, is left out of
the optimiser, and the log and the checkpoint say so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from haf.alignment.losses import ALIGNMENTS, alignment_loss
from haf.alignment.projectors import ProjectorBank
from haf.artifacts.aligned import write_aligned
from haf.artifacts.fold_inputs import FoldInputs
from haf.artifacts.projectors import read_projectors, write_projectors
from haf.artifacts.train_log import write_train_log
from haf.errors import HafInputError
from haf.modalities import MODALITIES
from haf.runtime.fit import StackedTrainer, fit_stacked
from haf.runtime.seeds import fold_seed, seed_everything
from haf.runtime.stacked import Layers, Members, member_state_dict, pad_rows, stacked_epoch
from haf.runtime.tensors import FoldTensors, StackedFoldTensors
from haf.settings import Stage2Settings, TrainingSettings

log = logging.getLogger(__name__)


@dataclass
class AlignmentResult:
    projectors: ProjectorBank  # trained (best validation state restored)
    initial: ProjectorBank  # the same projectors before training (for the "before" figures)
    history: pd.DataFrame
    trained: list[str]
    untrained: list[str]
    align: str


def untrained_modalities(inputs: FoldInputs, rows: np.ndarray) -> list[str]:
    """Modalities that no patient of ``rows`` has (their projectors cannot be trained)."""
    return [m for j, m in enumerate(MODALITIES) if not inputs.present[rows, j].any()]


def train_alignment(
    inputs: FoldInputs,
    align: str,
    settings: Stage2Settings,
    device: torch.device,
    *,
    selection: TrainingSettings | None = None,
    progress: bool = False,
) -> AlignmentResult:
    """One fold of :func:`train_alignment_folds` (a stacked run with one member)."""
    return train_alignment_folds([inputs], align, settings, device, selection=selection, progress=progress)[0]


class _AlignmentTask:
    """K folds' seven projectors trained with the ``align`` loss by :func:`haf.runtime.fit.fit_stacked`."""

    def __init__(
        self, inputs: list[FoldInputs], align: str, cfg: Stage2Settings, device: torch.device
    ) -> None:
        self.inputs, self.align, self.cfg, self.device = inputs, align, cfg, device
        self.members = Members([fold_seed(cfg.seed, i.fold) for i in inputs], device)
        seed_everything(self.members.seeds[0])
        self.tensors = StackedFoldTensors.from_inputs(inputs, device)
        self.train_rows = [i.index("train") for i in inputs]
        self.val_rows = [i.index("val") for i in inputs]
        self.val_counts = [
            int((i.present[r].sum(axis=1) >= 2).sum()) for i, r in zip(inputs, self.val_rows, strict=True)
        ]
        dims = {m: self.tensors.widths[m] for m in MODALITIES}
        self.model = ProjectorBank(dims, MODALITIES, cfg.hidden, cfg.d_out, Layers(self.members)).to(device)
        self.initial = [member_state_dict(self.model, k) for k in range(len(inputs))]
        self.missing = [untrained_modalities(i, r) for i, r in zip(inputs, self.train_rows, strict=True)]

    def member_loss(self, u: torch.Tensor, mask: torch.Tensor, k: int, rows: torch.Tensor):
        return alignment_loss(u[k, rows], mask[k, rows], self.align, self.cfg)

    def train_epoch(self, epoch: int, running: np.ndarray, trainer: StackedTrainer) -> np.ndarray:
        if epoch == 0:
            for k, missing in enumerate(self.missing):
                for m in missing:
                    trainer.flat.freeze(k, self.model.proj[m])
        k_members = self.members.k
        total, weight = np.zeros(k_members), np.zeros(k_members)
        for batch in stacked_epoch(self.members, self.train_rows, self.cfg.batch_size, running, self.device):
            x, mask = self.tensors.rows(batch.rows, batch.valid)
            u = self.model(x, mask)
            losses = []
            stepping = batch.active.clone()
            for k in range(k_members):
                terms = None
                if batch.active[k]:
                    terms = self.member_loss(u, mask, k, torch.nonzero(batch.valid[k]).reshape(-1))
                if terms is None or terms.n_patients == 0 or not terms.loss.requires_grad:
                    stepping[k] = False  # no patient with two modalities: no step (as one fold alone)
                    losses.append(u.sum() * 0.0)
                    continue
                losses.append(terms.loss)
                total[k] += float(terms.loss.detach()) * terms.n_patients
                weight[k] += terms.n_patients
            trainer.backward_step(torch.stack(losses), stepping)
        return np.where(weight > 0, total / np.maximum(weight, 1), np.nan)

    def validate(self, running: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each member's alignment loss on its val part, in fixed batches of ``batch_size`` (as trained)."""
        k_members, bs = self.members.k, self.cfg.batch_size
        total, weight = np.zeros(k_members), np.zeros(k_members)
        n_chunks = max((-(-len(v) // bs) for v in self.val_rows), default=0)
        for j in range(n_chunks):
            chunks = [v[j * bs : (j + 1) * bs] if running[k] else v[:0] for k, v in enumerate(self.val_rows)]
            rows, valid = pad_rows(chunks, self.device)
            if rows.shape[1] == 0:
                continue
            x, mask = self.tensors.rows(rows, valid)
            u = self.model(x, mask)
            for k in np.flatnonzero(running):
                if len(chunks[k]) == 0:
                    continue
                terms = self.member_loss(u, mask, k, torch.nonzero(valid[k]).reshape(-1))
                total[k] += float(terms.loss) * terms.n_patients
                weight[k] += terms.n_patients
        loss = np.where(weight > 0, total / np.maximum(weight, 1), np.nan)
        return -loss, loss

    def plain_bank(self, k: int, state: dict[str, torch.Tensor]) -> ProjectorBank:
        bank = ProjectorBank(self.inputs[k].dims(), MODALITIES, self.cfg.hidden, self.cfg.d_out)
        bank.load_state_dict(state)
        for m in self.missing[k]:
            bank.proj[m].requires_grad_(False)
        return bank.to(self.device).eval()


def train_alignment_folds(
    inputs: list[FoldInputs],
    align: str,
    settings: Stage2Settings,
    device: torch.device,
    *,
    selection: TrainingSettings | None = None,
    progress: bool = False,
) -> list[AlignmentResult]:
    """Fit every fold's seven projectors with the registry's ``align`` loss, all folds at once.

    Each fold is one stacked member (seed ``fold_seed(stage2.seed, fold)``, its own batches, optimiser
    state, schedule, early stopping on its own validation alignment loss); a projector that no training
    patient of a fold has stays at its initialisation for that fold.
    """
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {', '.join(ALIGNMENTS)}, got {align!r}")
    cfg = Stage2Settings.from_config(settings)
    for inp in inputs:
        train_idx, val_idx = inp.index("train"), inp.index("val")
        missing = untrained_modalities(inp, train_idx)
        for m in missing:
            log.warning(
                "fold %d: no training patient has modality %r: its %s projector is not trained "
                "(kept at its initialisation)",
                inp.fold,
                m,
                align,
            )
        counts = inp.present[train_idx].sum(axis=1)
        log.info(
            "fold %d, %s alignment: %d train patients (%d with a single modality: no alignment term), "
            "%d val patients; trained projectors: %s",
            inp.fold,
            align,
            len(train_idx),
            int((counts < 2).sum()),
            len(val_idx),
            ", ".join(m for m in MODALITIES if m not in missing) or "none",
        )
        if not (inp.present[val_idx].sum(axis=1) >= 2).any():
            log.warning(
                "fold %d: no validation patient has two or more modalities: the validation alignment loss is "
                "undefined, so early stopping keeps the first epoch",
                inp.fold,
            )
    task = _AlignmentTask(inputs, align, cfg, device)
    names = [f"stage2 {align} fold {i.fold}" for i in inputs]
    histories = fit_stacked(task, cfg.train, names=names, selection=selection, progress=progress)
    results = []
    for k in range(len(inputs)):
        missing = task.missing[k]
        results.append(
            AlignmentResult(
                projectors=task.plain_bank(k, member_state_dict(task.model, k)),
                initial=task.plain_bank(k, task.initial[k]),
                history=histories[k],
                trained=[m for m in MODALITIES if m not in missing],
                untrained=missing,
                align=align,
            )
        )
    return results


@torch.no_grad()
def project_all(bank: ProjectorBank, inputs: FoldInputs, device: torch.device) -> np.ndarray:
    """(n, 7, d_out) unit projections of every patient (zeros for absent modalities), detached."""
    tensors = FoldTensors.from_inputs(inputs, device)
    out = []
    for start in range(0, inputs.n, 1024):
        rows = np.arange(start, min(start + 1024, inputs.n))
        x, mask = tensors.rows(rows)
        out.append(bank(x, mask).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def save_projectors(path: str | Path, result: AlignmentResult, fold: int) -> None:
    """``projectors.pt`` of one fold (:mod:`haf.artifacts.aligned`)."""
    write_projectors(
        path,
        {
            "align": result.align,
            "fold": int(fold),
            "spec": result.projectors.spec(),
            "state_dict": {k: v.cpu() for k, v in result.projectors.state_dict().items()},
            "trained": list(result.trained),
            "untrained": list(result.untrained),
        },
    )


def load_projectors(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[ProjectorBank, dict[str, Any]]:
    """Rebuild a Stage 2 bank (eval mode) from ``projectors.pt``; also return the saved metadata."""
    payload = read_projectors(path, map_location=device)
    try:
        bank = ProjectorBank.from_spec(payload["spec"])
        bank.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise HafInputError(path, f"cannot load Stage 2 projectors: {exc}") from exc
    bank.to(device).eval()
    return bank, {k: v for k, v in payload.items() if k != "state_dict"}


def write_alignment_outputs(
    outputs: dict[str, str | Path], result: AlignmentResult, inputs: FoldInputs, device: torch.device
) -> None:
    """``projectors.pt``, ``aligned.npz`` (u_{m}, pre_{m} for every patient) and ``train_log.tsv``."""
    save_projectors(outputs["projectors"], result, inputs.fold)
    write_aligned(
        outputs["aligned"],
        patient_id=inputs.patient_id,
        part=inputs.part,
        present=inputs.present,
        trained=result.trained,
        aligned=project_all(result.projectors, inputs, device),
        before=project_all(result.initial, inputs, device),
    )
    history = result.history.copy()
    history.insert(0, "align", result.align)
    history["untrained"] = ";".join(result.untrained)
    write_train_log(outputs["train_log"], history)
    log.info(
        "fold %d: wrote %s projectors (%d epochs, best %d) and aligned embeddings of %d patients",
        inputs.fold,
        result.align,
        len(history),
        int(history.loc[history["best"], "epoch"].iloc[0]) if history["best"].any() else -1,
        inputs.n,
    )
