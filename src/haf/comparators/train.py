"""One trainer for every comparator; what differs per family is its entry in :data:`haf.methods.METHOD_FAMILIES`.

The training loop, validation score, early stopping and outputs are the same for all five
comparators; the registry names each family's model builder, step function and settings section:

* the four binary comparators (late fusion, attention fusion, MFMF, feature interaction) read the
  ``stage3`` config section (the HAF paper's protocol: Adam, ReduceLROnPlateau, batch 64, early
  stopping on validation AUC), train on the patients with a binary label, and step with
  :func:`standard_step`;
* PARACHUTE reads the ``parachute`` section (AdamW + cosine annealing, batch 16, early stopping on
  validation C-index), trains with the Cox loss on every training patient, and steps with
  :class:`haf.comparators.gcs.GCSStep` (SAM + Gradient Curvature Steering).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from haf.artifacts.fold_inputs import FoldInputs
from haf.comparators.blocks import presence
from haf.comparators.gcs import GCSConfig, GCSStep
from haf.comparators.models import (
    ComparatorModel,
    Targets,
)
from haf.comparators.parachute import Parachute
from haf.eval.masking import draw_masks
from haf.eval.scores import auc_or_nan, cindex_or_nan
from haf.methods import COMPARATOR_FAMILIES, METHOD_FAMILIES, MethodFamily, resolve
from haf.runtime.fit import fit, make_optimizer
from haf.runtime.outputs import write_method_outputs
from haf.runtime.seeds import seed_everything
from haf.runtime.tensors import FoldTensors, minibatches, predict_scores, training_rows
from haf.settings import SECTIONS, ParachuteSettings, Section

log = logging.getLogger(__name__)

StepFn = Callable[[dict[str, torch.Tensor], torch.Tensor, Targets], float]
"""``step(x, present, targets) -> training loss``: one optimiser step on one minibatch."""


def standard_step(model: ComparatorModel, optimizer: torch.optim.Optimizer, settings: Section) -> StepFn:
    """Zero grads, ``model.loss``, backward, optimiser step."""

    def step(x: dict[str, torch.Tensor], present: torch.Tensor, targets: Targets) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(x, present, targets)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def gcs_step(model: Parachute, optimizer: torch.optim.Optimizer, settings: ParachuteSettings) -> StepFn:
    """PARACHUTE's step: SAM ascent + GCS (``gcs: false`` keeps SAM, ``rho: 0`` drops it)."""
    return GCSStep(model, optimizer, GCSConfig.from_settings(settings), seed=settings.seed)


def comparator_spec(declaration: dict[str, Any]) -> MethodFamily:
    """The registry entry of a comparator declaration's family."""
    fam = declaration.get("family")
    if fam not in COMPARATOR_FAMILIES:
        raise ValueError(
            f"family {fam!r} is not a comparator; expected one of {', '.join(COMPARATOR_FAMILIES)}"
        )
    return METHOD_FAMILIES[fam]


def build_model(
    declaration: dict[str, Any], dims: dict[str, int], settings: Section | dict[str, Any]
) -> ComparatorModel:
    """The untrained model of a declaration (also how a checkpoint is rebuilt); ``settings``: the family's section."""
    spec = comparator_spec(declaration)
    return resolve(spec.build)(declaration, dims, SECTIONS[spec.section].from_config(settings))


def load_model(checkpoint: dict[str, Any], device: torch.device | str = "cpu") -> ComparatorModel:
    """Rebuild a trained comparator from its ``model.pt`` payload."""
    model = build_model(checkpoint["declaration"], checkpoint["dims"], checkpoint["settings"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


@dataclass
class ComparatorResult:
    """A trained comparator and what writing its outputs needs."""

    model: ComparatorModel
    history: pd.DataFrame
    tensors: FoldTensors
    task_loss: str
    seed: int
    checkpoint: dict[str, Any]

    def score_fn(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x, present)


def _targets(tensors: FoldTensors, rows: np.ndarray) -> Targets:
    idx = torch.as_tensor(rows, dtype=torch.long, device=tensors.device)
    return Targets(label=tensors.label[idx], time=tensors.time[idx], event=tensors.event[idx])


def train_comparator(
    inputs: FoldInputs,
    declaration: dict[str, Any],
    sections: dict[str, Section | dict[str, Any]],
    device: torch.device,
    *,
    name: str | None = None,
    progress: bool = False,
) -> ComparatorResult:
    """Train one comparator on one fold with the shared protocol (:func:`haf.runtime.fit.fit`).

    ``declaration`` is a completed method declaration (:func:`haf.methods.method_declaration`);
    ``sections`` maps config section names (``stage3``, ``parachute``) to their settings.
    """
    spec = comparator_spec(declaration)
    settings = SECTIONS[spec.section].from_config(sections[spec.section])
    name = name or spec.name
    seed = settings.seed if declaration.get("seed") is None else int(declaration["seed"])
    rng = seed_everything(seed)
    tensors = FoldTensors.from_inputs(inputs, device)
    modalities = list(declaration["modalities"])

    train_idx = training_rows(inputs, "train", spec.task_loss)
    val_idx = training_rows(inputs, "val", spec.task_loss)
    for part, idx in (("train", train_idx), ("val", val_idx)):
        n_part = len(inputs.index(part))
        if len(idx) < n_part:
            log.info(
                "%s fold %d: %d of %d %s patients have no binary label and are left out of the %s loss/score",
                name,
                inputs.fold,
                n_part - len(idx),
                n_part,
                part,
                part,
            )
    if len(train_idx) < 2:
        raise ValueError(f"{name} fold {inputs.fold}: only {len(train_idx)} training patients usable")
    used = presence(torch.as_tensor(inputs.present), modalities).numpy().any(axis=1)
    if not used.all():
        log.info(
            "%s fold %d: %d patients have none of the method's modalities %s (scored from learned constants)",
            name,
            inputs.fold,
            int((~used).sum()),
            ",".join(modalities),
        )

    model = build_model(declaration, inputs.dims(), settings).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "%s fold %d: %s with %d parameters on %s", name, inputs.fold, type(model).__name__, n_params, device
    )
    cfg = settings.train
    optimizer = make_optimizer(model.parameters(), cfg)
    step = resolve(spec.step)(model, optimizer, settings)
    batch_size = settings.batch_size
    p_miss = getattr(settings, "p_miss", 0.0)  # the binary comparators' stage3 section has no p_miss
    stats = getattr(step, "stats", None)

    def train_epoch(epoch: int) -> float:
        total, count = 0.0, 0
        for rows in minibatches(train_idx, batch_size, rng):
            mask = None
            if p_miss > 0:
                draw = draw_masks(inputs.present[rows], p_miss, 1, "mixed", int(rng.integers(2**31)), epoch)
                mask = torch.as_tensor(draw[0])
            x, m = tensors.rows(rows, mask)
            total += step(x, m, _targets(tensors, rows)) * len(rows)
            count += len(rows)
        if stats is not None:
            s = stats.reset()
            log.debug(
                "%s epoch %d: GCS mean curvature %.3g, mean omega %.3f, mean damping factor %.4f",
                name,
                epoch,
                s["curvature"],
                s["omega"],
                s["damping"],
            )
        return total / max(count, 1)

    def validate() -> tuple[float, float]:
        if len(val_idx) == 0:
            return float("nan"), float("nan")
        scores = predict_scores(model, tensors, val_idx)
        x, m = tensors.rows(val_idx)
        loss = float(model.loss(x, m, _targets(tensors, val_idx)))
        if spec.task_loss == "bce":
            score = auc_or_nan(inputs.label[val_idx], scores)
        else:
            score = cindex_or_nan(inputs.time[val_idx], inputs.event[val_idx], scores)
        return score, loss

    history = fit({"model": model}, optimizer, cfg, train_epoch, validate, name=name, progress=progress)
    model.eval()
    if stats is not None and stats.history:
        tail = stats.history[-1]
        log.info(
            "%s fold %d: GCS last epoch: mean curvature %.3g, mean omega %.3f, mean damping factor %.4f",
            name,
            inputs.fold,
            tail["curvature"],
            tail["omega"],
            tail["damping"],
        )
    checkpoint = {
        "family": spec.name,
        "declaration": dict(declaration),
        "dims": inputs.dims(),
        "settings": settings.as_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "seed": seed,
    }
    return ComparatorResult(model, history, tensors, spec.task_loss, seed, checkpoint)


def run_comparator(
    inputs: FoldInputs,
    declaration: dict[str, Any],
    sections: dict[str, Section | dict[str, Any]],
    evaluation: dict[str, Any],
    outputs: dict[str, str | Path],
    *,
    method: str,
    device: torch.device,
    progress: bool = False,
) -> pd.DataFrame:
    """Train one comparator on one fold and write its four outputs; return its val/test predictions."""
    result = train_comparator(inputs, declaration, sections, device, name=method, progress=progress)
    return write_method_outputs(
        outputs,
        method=method,
        seed=result.seed,
        inputs=inputs,
        tensors=result.tensors,
        score_fn=result.score_fn,
        task_loss=result.task_loss,
        evaluation=evaluation,
        history=result.history,
        checkpoint=result.checkpoint,
    )
