"""The training protocol every trainer shares: optimiser, LR schedule, early stopping, best restore.

The HAF paper (section 3.1): Adam (lr 1e-4, weight decay 1e-5), up to 200 epochs, ReduceLROnPlateau
(patience 15, factor 0.5), early stopping on validation performance.  SPEC section 8 fixes the
criterion: validation score (AUC, or C-index for Cox models), ties broken by validation loss, and
the best checkpoint restored.  PARACHUTE uses AdamW with cosine annealing instead; both
are options of :class:`TrainSettings`.  A trainer supplies two callables (one epoch of steps, one
validation pass) and :func:`fit` does the rest, so the protocol lives in one place.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
import torch

from haf.settings import TrainSettings

log = logging.getLogger(__name__)


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainSettings) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be adam or adamw, got {cfg.optimizer!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainSettings):
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience
        )
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.t_max, eta_min=cfg.eta_min)
    if cfg.scheduler == "none":
        return None
    raise ValueError(f"scheduler must be plateau, cosine or none, got {cfg.scheduler!r}")


class EarlyStopping:
    """Keep the best state by (validation score, then lower validation loss); stop after ``patience`` epochs."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_key: tuple[float, float] | None = None
        self.best_epoch = -1
        self.best_state: dict[str, Any] | None = None
        self.bad_epochs = 0

    def update(self, epoch: int, score: float, loss: float, modules: dict[str, torch.nn.Module]) -> bool:
        """Record one epoch; return True when training should stop."""
        score = -math.inf if score is None or math.isnan(score) else float(score)
        loss = math.inf if loss is None or math.isnan(loss) else float(loss)
        key = (score, -loss)
        if self.best_key is None or key > self.best_key:
            self.best_key = key
            self.best_epoch = epoch
            self.best_state = {name: copy.deepcopy(m.state_dict()) for name, m in modules.items()}
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def restore(self, modules: dict[str, torch.nn.Module]) -> None:
        if self.best_state is None:
            return
        for name, module in modules.items():
            module.load_state_dict(self.best_state[name])


def fit(
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    cfg: TrainSettings,
    train_epoch: Callable[[int], float],
    validate: Callable[[], tuple[float, float]],
    *,
    name: str = "model",
    progress: bool = False,
) -> pd.DataFrame:
    """Run epochs until early stopping; restore the best state; return the per-epoch history.

    ``train_epoch(epoch)`` runs one epoch of optimiser steps and returns the mean training loss;
    ``validate()`` returns ``(score, loss)`` on the validation part (score: higher is better).
    """
    scheduler = make_scheduler(optimizer, cfg)
    stopper = EarlyStopping(cfg.es_patience)
    rows = []
    epochs: Iterable[int] = range(cfg.max_epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=name, unit="epoch", leave=False)
    for epoch in epochs:
        for module in modules.values():
            module.train()
        train_loss = float(train_epoch(epoch))
        for module in modules.values():
            module.eval()
        with torch.no_grad():
            val_score, val_loss = validate()
        lr = optimizer.param_groups[0]["lr"]
        rows.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": float(val_loss),
                "val_score": float(val_score),
                "lr": lr,
            }
        )
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(val_loss if math.isfinite(val_loss) else float("inf"))
            else:
                scheduler.step()
        if stopper.update(epoch, val_score, val_loss, modules):
            log.info("%s: early stop at epoch %d (best epoch %d)", name, epoch, stopper.best_epoch)
            break
    stopper.restore(modules)
    history = pd.DataFrame(rows)
    history["best"] = history["epoch"] == stopper.best_epoch
    log.info(
        "%s: %d epochs, best epoch %d (val score %.4f, val loss %.4f)",
        name,
        len(rows),
        stopper.best_epoch,
        history.loc[history["best"], "val_score"].iloc[0] if len(rows) else float("nan"),
        history.loc[history["best"], "val_loss"].iloc[0] if len(rows) else float("nan"),
    )
    return history
