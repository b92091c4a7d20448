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
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from haf.settings import TrainingSettings, TrainSettings

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


# ---------------------------------------------------------------------------------------------
# the stacked runtime: K members (folds) trained in one program, each with its own protocol state


class StackedTrainer:
    """Optimiser and schedule of a stacked module's members, and the one backward-and-step call.

    ``settings.optimizer`` adam (L2 weight decay) or adamw (decoupled); ``scheduler`` plateau (on each
    member's validation loss), cosine or none.
    """

    def __init__(self, model: torch.nn.Module, members: Any, settings: TrainSettings) -> None:
        from haf.runtime.stacked import FlatParameters, StackedAdam, StackedCosine, StackedPlateau

        if settings.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be adam or adamw, got {settings.optimizer!r}")
        self.members = members
        self.model = model
        self.flat = FlatParameters(model, members.k)
        self.optimizer = StackedAdam(
            self.flat, settings.lr, settings.weight_decay, decoupled=settings.optimizer == "adamw"
        )
        if settings.scheduler == "plateau":
            self.scheduler = StackedPlateau(self.optimizer, settings.lr_factor, settings.lr_patience)
        elif settings.scheduler == "cosine":
            self.scheduler = StackedCosine(self.optimizer, settings.t_max, settings.eta_min)
        elif settings.scheduler == "none":
            self.scheduler = None
        else:
            raise ValueError(f"scheduler must be plateau, cosine or none, got {settings.scheduler!r}")

    def backward_step(self, losses: torch.Tensor, active: torch.Tensor) -> None:
        """Backpropagate the sum of the active members' losses (each member gets only its own gradient)
        and step the active members."""
        self.flat.zero_grad()
        active = active.to(losses.device)
        if not bool(active.any()):
            return
        torch.where(active, losses, torch.zeros_like(losses)).sum().backward()
        self.flat.check_grads()
        self.optimizer.step(active)

    def step_only(self, active: torch.Tensor) -> None:
        """Step the active members with gradients already in the flat buffer (custom backward passes)."""
        self.flat.check_grads()
        self.optimizer.step(active)


class EpochSelector:
    """One member's early stopping and epoch selection under ``training.selection``.

    ``best``: the epoch with the highest validation score, ties by lower validation loss (HAF's rule);
    ``smoothed``: the same on the trailing means over ``smooth_window`` epochs of score and loss (one
    noisy epoch on a small validation part cannot win alone); ``min_epochs``: ``best`` among epochs
    ``>= min_epochs`` (earlier epochs are neither selected nor counted by the patience); ``average``:
    ``best``'s epoch, with the weights averaged over the ``average_last`` epochs ending there.
    Patience counts epochs since the last improvement of the criterion.
    """

    def __init__(self, selection: TrainingSettings, patience: int) -> None:
        if selection.selection not in ("best", "smoothed", "min_epochs", "average"):
            raise ValueError(f"training.selection {selection.selection!r} is not known")
        self.s, self.patience = selection, int(patience)
        self.scores: list[float] = []
        self.losses: list[float] = []
        self.recent: list[torch.Tensor] = []  # the last average_last states (average)
        self.best_key: tuple[float, float] | None = None
        self.best_epoch = -1
        self.best_state: torch.Tensor | None = None
        self.bad = 0

    def update(self, epoch: int, score: float, loss: float, snapshot: Callable[[], torch.Tensor]) -> bool:
        """Record one epoch; return True when this member should stop."""
        s = -math.inf if math.isnan(score) else float(score)
        v = math.inf if math.isnan(loss) else float(loss)
        self.scores.append(s)
        self.losses.append(v)
        if self.s.selection == "average":
            self.recent = (self.recent + [snapshot()])[-self.s.average_last :]
        if self.s.selection == "min_epochs" and epoch < self.s.min_epochs:
            return False
        if self.s.selection == "smoothed":
            w = self.s.smooth_window
            s, v = float(np.mean(self.scores[-w:])), float(np.mean(self.losses[-w:]))
        key = (s, -v)
        if self.best_key is None or key > self.best_key:
            self.best_key, self.best_epoch, self.bad = key, epoch, 0
            if self.s.selection == "average":
                self.best_state = torch.stack(self.recent).mean(dim=0)
            else:
                self.best_state = snapshot()
        else:
            self.bad += 1
        return self.bad >= self.patience


def fit_stacked(
    task: Any,
    settings: TrainSettings,
    *,
    names: Sequence[str],
    selection: TrainingSettings | None = None,
    progress: bool = False,
) -> list[pd.DataFrame]:
    """The training protocol of :func:`fit`, for every member of a stacked task at once.

    ``task`` provides ``members`` (:class:`haf.runtime.stacked.Members`), ``model`` (the stacked
    module), ``train_epoch(epoch, running, trainer) -> (K,) mean training losses`` (the steps of one
    epoch of the running members, through ``trainer.backward_step``) and ``validate(running) ->
    ((K,) scores, (K,) losses)``, and ``val_counts`` (K usable validation patients per member: a member
    below ``training.min_val_patients`` is a warning naming it).  Each member has its own learning-rate schedule, early stopping
    (validation score, ties by lower validation loss, ``es_patience``) and selected epoch; a member
    that stops stays frozen while the others go on; at the end each member's best state is restored.
    A member whose validation part gives neither a score nor a loss is an error naming it (early
    stopping would be blind). Returns one history per member (the columns of :func:`fit`).
    """
    if selection is None:
        from haf.settings import schema_section

        selection = schema_section("training")
    selection = TrainingSettings.from_config(selection)
    members = task.members
    k = members.k
    val_counts = list(task.val_counts)  # required: a trainer cannot skip the small-validation warning
    if len(val_counts) != k:
        raise ValueError(f"task.val_counts has {len(val_counts)} entries for {k} members")
    for i, n_val in enumerate(val_counts):
        if n_val < selection.min_val_patients:
            log.warning(
                "%s: only %d usable validation patients (< training.min_val_patients = %d): the selected "
                "epoch rests on a small validation part",
                names[i],
                n_val,
                selection.min_val_patients,
            )
    trainer = StackedTrainer(task.model, members, settings)
    flat = trainer.flat
    selectors = [EpochSelector(selection, settings.es_patience) for _ in range(k)]
    running = np.ones(k, dtype=bool)
    rows: list[list[dict[str, float]]] = [[] for _ in range(k)]
    epochs: Iterable[int] = range(settings.max_epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=f"{names[0]} (+{k - 1})" if k > 1 else names[0], unit="epoch", leave=False)
    for epoch in epochs:
        if not running.any():
            break
        task.model.train()
        train_loss = np.asarray(task.train_epoch(epoch, running.copy(), trainer), dtype=float)
        task.model.eval()
        with torch.no_grad():
            score, loss = task.validate(running.copy())
        score, loss = np.asarray(score, dtype=float), np.asarray(loss, dtype=float)
        if epoch == 0:
            blind = [names[i] for i in np.flatnonzero(running) if np.isnan(score[i]) and np.isnan(loss[i])]
            if blind:
                from haf.errors import HafInputError

                raise HafInputError(
                    None,
                    f"{', '.join(blind)}: the validation part has no patient the validation score or loss can "
                    "use, so early stopping and the learning-rate schedule would be blind (a silent epoch-0 "
                    "model). Give the validation part labelled patients with the method's modalities "
                    "(cv.val_fraction) or use fewer folds.",
                    where="part val",
                )
        lr = trainer.optimizer.lr.cpu().numpy().copy()
        if trainer.scheduler is not None:
            trainer.scheduler.step(loss, running)
        for i in np.flatnonzero(running):
            rows[i].append(
                {"epoch": epoch, "train_loss": float(train_loss[i]), "val_loss": float(loss[i]),
                 "val_score": float(score[i]), "lr": float(lr[i])}
            )  # fmt: skip
            if selectors[i].update(epoch, score[i], loss[i], lambda i=i: flat.snapshot(i)):
                running[i] = False
                log.info(
                    "%s: early stop at epoch %d (selected epoch %d)", names[i], epoch, selectors[i].best_epoch
                )
    histories = []
    for i in range(k):
        if selectors[i].best_epoch < 0 and rows[i]:  # stopped before any epoch could be selected
            selectors[i].best_epoch = rows[i][-1]["epoch"]
            log.warning("%s: no epoch reached training.min_epochs; keeping the last one", names[i])
        if selectors[i].best_state is not None:
            flat.load(i, selectors[i].best_state)
        history = pd.DataFrame(rows[i], columns=["epoch", "train_loss", "val_loss", "val_score", "lr"])
        history["best"] = history["epoch"] == selectors[i].best_epoch
        chosen = history.loc[history["best"]]
        log.info(
            "%s: %d epochs, selected epoch %d (%s; val score %.4f, val loss %.4f)",
            names[i],
            len(history),
            selectors[i].best_epoch,
            selection.selection,
            chosen["val_score"].iloc[0] if len(chosen) else float("nan"),
            chosen["val_loss"].iloc[0] if len(chosen) else float("nan"),
        )
        histories.append(history)
    task.model.eval()
    return histories
