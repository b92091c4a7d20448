"""Stage 2 trainer (rule ``align``): the seven projectors trained with L_GA (or CLIP) on one fold.

Trained on the fold's ``train`` part (every patient: alignment needs no label), early-stopped on
the ``val`` part's alignment loss (validation score = -loss, computed in fixed batches of
``batch_size`` so L_PD sees batches of the size it is trained with).  A modality that no
training patient has gets no gradient: its projector stays at its initialisation, is left out of
the optimiser, and the log and the checkpoint say so.
"""

from __future__ import annotations

import copy
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
from haf.runtime.fit import fit, make_optimizer
from haf.runtime.seeds import fold_seed, seed_everything
from haf.runtime.tensors import FoldTensors, minibatches
from haf.settings import Stage2Settings

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
    progress: bool = False,
) -> AlignmentResult:
    """Fit the projectors of all seven modalities with the registry's ``align`` loss."""
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {', '.join(ALIGNMENTS)}, got {align!r}")
    cfg = Stage2Settings.from_config(settings)
    seed = fold_seed(cfg.seed, inputs.fold)
    rng = seed_everything(seed)
    tensors = FoldTensors.from_inputs(inputs, device)
    train_idx = inputs.index("train")
    val_idx = inputs.index("val")
    bank = ProjectorBank(inputs.dims(), MODALITIES, cfg.hidden, cfg.d_out).to(device)
    initial = copy.deepcopy(bank)
    missing = untrained_modalities(inputs, train_idx)
    trained = [m for m in MODALITIES if m not in missing]
    for m in missing:
        log.warning(
            "fold %d: no training patient has modality %r: its %s projector is not trained "
            "(kept at its initialisation)",
            inputs.fold,
            m,
            align,
        )
        bank.proj[m].requires_grad_(False)
    counts = inputs.present[train_idx].sum(axis=1)
    log.info(
        "fold %d, %s alignment: %d train patients (%d with a single modality: no alignment term), "
        "%d val patients; trained projectors: %s",
        inputs.fold,
        align,
        len(train_idx),
        int((counts < 2).sum()),
        len(val_idx),
        ", ".join(trained) or "none",
    )
    if not (inputs.present[val_idx].sum(axis=1) >= 2).any():
        log.warning(
            "fold %d: no validation patient has two or more modalities: the validation alignment loss is "
            "undefined, so early stopping keeps the first epoch",
            inputs.fold,
        )
    train_cfg = cfg.train
    optimizer = make_optimizer(bank.parameters(), train_cfg)
    batch_size = cfg.batch_size

    def batch_loss(rows: np.ndarray):
        x, mask = tensors.rows(rows)
        return alignment_loss(bank(x, mask), mask, align, cfg)

    def train_epoch(epoch: int) -> float:
        total, weight = 0.0, 0
        for rows in minibatches(train_idx, batch_size, rng):
            terms = batch_loss(rows)
            if terms.n_patients == 0 or not terms.loss.requires_grad:
                continue
            optimizer.zero_grad(set_to_none=True)
            terms.loss.backward()
            optimizer.step()
            total += float(terms.loss.detach()) * terms.n_patients
            weight += terms.n_patients
        return total / weight if weight else float("nan")

    def validate() -> tuple[float, float]:
        total, weight = 0.0, 0
        for start in range(0, len(val_idx), batch_size):
            terms = batch_loss(val_idx[start : start + batch_size])
            total += float(terms.loss) * terms.n_patients
            weight += terms.n_patients
        if weight == 0:
            return float("nan"), float("nan")
        loss = total / weight
        return -loss, loss

    history = fit(
        {"projectors": bank},
        optimizer,
        train_cfg,
        train_epoch,
        validate,
        name=f"stage2 {align} fold {inputs.fold}",
        progress=progress,
    )
    bank.eval()
    initial.eval()
    return AlignmentResult(bank, initial, history, trained, missing, align)


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
