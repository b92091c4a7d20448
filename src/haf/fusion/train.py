"""The one Stage 3 trainer: every fusion method (HAF, its variants and ablations) is a declaration.

What a :class:`~haf.fusion.spec.MethodSpec` switches:

* ``align none``: the method's projectors are trained with the task loss, jointly with the fusion
  MLP (the naive fusion MLPs of the HAF paper's Table 1: same architecture as HAF, no alignment loss);
* ``align ga|clip`` with ``detach``: the Stage 2 projectors (``projectors.pt`` of that fold) are
  loaded and frozen; every patient's unit projections are computed once and the fusion MLP is
  trained on these detached u;
* ``drop``: random-modality training with MoFe (Eq. 11), else the plain task loss;
* ``task_loss``: ``bce`` on the binary target (validation score AUC) or ``cox`` (Breslow partial
  likelihood on every patient with a time and an event; validation score Harrell's C-index);
* ``detach false``: Stages 1-3 trained jointly with Eq. 12 (:mod:`haf.fusion.joint`).

Training follows :mod:`haf.runtime.fit` (Adam 1e-4, wd 1e-5, ReduceLROnPlateau 15/0.5, early stopping
on the validation score with validation-loss ties, best state restored).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from haf.alignment.projectors import ProjectorBank
from haf.alignment.train import load_projectors
from haf.artifacts.checkpoints import load_checkpoint
from haf.artifacts.fold_inputs import FoldInputs
from haf.errors import HafInputError
from haf.eval.scores import auc_or_nan, cindex_or_nan
from haf.fusion.model import FusionModel, build_model, fusion_loss, model_spec, task_loss
from haf.fusion.spec import MethodSpec
from haf.modalities import MODALITIES
from haf.runtime.fit import fit, make_optimizer
from haf.runtime.outputs import write_method_outputs
from haf.runtime.seeds import fold_seed, seed_everything
from haf.runtime.tensors import FoldTensors, minibatches, training_rows
from haf.settings import Stage1Settings, Stage2Settings, Stage3Settings

log = logging.getLogger(__name__)


@dataclass
class FusionRun:
    """A trained method on one fold, ready for :func:`haf.runtime.outputs.write_method_outputs`."""

    spec: MethodSpec
    model: FusionModel
    history: pd.DataFrame
    inputs: FoldInputs  # what predictions are made from (no-detach: z of the jointly trained encoders)
    tensors: FoldTensors
    checkpoint: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def score_fn(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x, present)


def slot_index(spec: MethodSpec) -> list[int]:
    return [MODALITIES.index(m) for m in spec.modalities]


def targets_of(tensors: FoldTensors, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"label": tensors.label[rows], "time": tensors.time[rows], "event": tensors.event[rows]}


def validation_score(kind: str, inputs: FoldInputs, rows: np.ndarray, score: np.ndarray) -> float:
    """AUC (``bce``) or Harrell's C-index (``cox``) of the scores of ``rows``."""
    if kind == "bce":
        return auc_or_nan(inputs.label[rows], score)
    return cindex_or_nan(inputs.time[rows], inputs.event[rows], score)


def check_training_coverage(spec: MethodSpec, inputs: FoldInputs, train_idx: np.ndarray) -> list[str]:
    """Modalities of the method that no training patient has (logged: their projector is not trained)."""
    missing = [m for m in spec.modalities if not inputs.present[train_idx, MODALITIES.index(m)].any()]
    for m in missing:
        log.warning(
            "%s fold %d: no training patient has modality %r: its projector is not trained and the "
            "fusion MLP never sees that slot filled in training",
            spec.name,
            inputs.fold,
            m,
        )
    return missing


def log_cohort(spec: MethodSpec, inputs: FoldInputs, train_idx: np.ndarray, val_idx: np.ndarray) -> None:
    part_train = inputs.index("train")
    slots = inputs.present[:, slot_index(spec)]
    n_present = slots[train_idx].sum(axis=1)
    log.info(
        "%s fold %d: %d of %d train-part patients usable for the %s loss (%d excluded: no binary label), "
        "%d val; train patients with 0 / 1 of the method's modalities: %d / %d (no reduced set, no MoFe term)",
        spec.name,
        inputs.fold,
        len(train_idx),
        len(part_train),
        spec.task_loss,
        len(part_train) - len(train_idx),
        len(val_idx),
        int((n_present == 0).sum()),
        int((n_present == 1).sum()),
    )


def train_fusion(
    inputs: FoldInputs,
    spec: MethodSpec,
    stage3: Stage3Settings,
    stage2: Stage2Settings,
    device: torch.device,
    *,
    projectors: ProjectorBank | None = None,
    stage2_meta: dict[str, Any] | None = None,
    progress: bool = False,
) -> FusionRun:
    """Train one detached fusion method on one fold (``spec.detach``; see :mod:`haf.fusion.joint` otherwise)."""
    if not spec.detach:
        raise ValueError(f"{spec.name}: detach false is trained by haf.fusion.joint.train_joint")
    if spec.uses_stage2 and projectors is None:
        raise ValueError(f"{spec.name}: align {spec.align!r} needs the Stage 2 projectors of this fold")
    stage3, stage2 = Stage3Settings.from_config(stage3), Stage2Settings.from_config(stage2)
    seed = fold_seed(stage3.seed, inputs.fold)
    rng = seed_everything(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    tensors = FoldTensors.from_inputs(inputs, device)
    train_idx = training_rows(inputs, "train", spec.task_loss)
    val_idx = training_rows(inputs, "val", spec.task_loss)
    if len(train_idx) < 2:
        raise HafInputError(
            f"fold_inputs fold {inputs.fold}",
            f"{spec.name}: only {len(train_idx)} training patients usable for the {spec.task_loss} loss",
        )
    log_cohort(spec, inputs, train_idx, val_idx)
    missing = check_training_coverage(spec, inputs, train_idx)

    if spec.uses_stage2:
        bank = projectors.subset(spec.modalities)
        bank.requires_grad_(False)
        untrained = list(stage2_meta["untrained"]) if stage2_meta else []
        if untrained:
            log.warning(
                "%s fold %d: Stage 2 left these projectors untrained (no training patient): %s",
                spec.name,
                inputs.fold,
                ", ".join(untrained),
            )
    else:
        bank = ProjectorBank(inputs.dims(), spec.modalities, stage2.hidden, stage2.d_out)
        for m in missing:
            bank.proj[m].requires_grad_(False)
    model = FusionModel(bank, stage3.hidden, stage3.dropout, slot_index(spec)).to(device)
    frozen = spec.uses_stage2

    all_rows = torch.arange(inputs.n, device=device)
    if frozen:  # detached projections: computed once, the fusion MLP trains on them
        with torch.no_grad():
            model.projectors.eval()
            x_all, present_all = tensors.rows(all_rows)
            u_all = model.embed(x_all, model.slots(present_all))

    def embed(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, present = tensors.rows(rows)
        mask = model.slots(present)
        if frozen:
            return u_all[rows], mask
        return model.embed(x, mask), mask

    cfg = stage3.train
    optimizer = make_optimizer(model.parameters(), cfg)
    batch_size = stage3.batch_size
    lambda_mofe = stage3.lambda_mofe
    components: list[dict[str, float]] = []

    def train_epoch(epoch: int) -> float:
        if frozen:
            model.projectors.eval()
        sums: dict[str, float] = {}
        total, n_batches = 0.0, 0
        for batch in minibatches(train_idx, batch_size, rng):
            rows = torch.as_tensor(batch, device=device)
            u, mask = embed(rows)
            loss, parts = fusion_loss(
                model.head,
                u,
                mask,
                targets_of(tensors, rows),
                kind=spec.task_loss,
                drop=spec.drop,
                lambda_mofe=lambda_mofe,
                generator=generator,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            n_batches += 1
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
        components.append({"epoch": epoch, **{f"train_{k}": v / max(n_batches, 1) for k, v in sums.items()}})
        return total / max(n_batches, 1)

    val_rows = torch.as_tensor(val_idx, device=device)

    def validate() -> tuple[float, float]:
        if len(val_idx) == 0:
            return float("nan"), float("nan")
        u, mask = embed(val_rows)
        score = model.head(u, mask)
        loss = float(task_loss(score, targets_of(tensors, val_rows), spec.task_loss))
        return validation_score(spec.task_loss, inputs, val_idx, score.cpu().numpy()), loss

    history = fit(
        {"model": model},
        optimizer,
        cfg,
        train_epoch,
        validate,
        name=f"{spec.name} fold {inputs.fold}",
        progress=progress,
    )
    if components:
        history = history.merge(pd.DataFrame(components), on="epoch", how="left")
    history.insert(0, "method", spec.name)
    model.eval()
    notes = [f"no training patient has {m}: projector not trained" for m in missing]
    checkpoint = make_checkpoint(spec, model, inputs.fold, stage2_meta=stage2_meta, untrained=missing)
    return FusionRun(spec, model, history, inputs, tensors, checkpoint, notes)


def make_checkpoint(
    spec: MethodSpec,
    model: FusionModel,
    fold: int,
    *,
    stage2_meta: dict[str, Any] | None = None,
    untrained: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything :func:`load_fusion_model` needs: declaration, dims, state dict (CPU tensors)."""
    checkpoint = {
        "method": spec.name,
        "declaration": spec.as_dict(),
        "fold": int(fold),
        "model_spec": model_spec(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "untrained": list(untrained or []),
        "stage2": {k: v for k, v in (stage2_meta or {}).items() if k != "state_dict"},
    }
    checkpoint.update(extra or {})
    return checkpoint


def load_fusion_model(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[FusionModel, dict[str, Any]]:
    """Rebuild a trained fusion model (eval mode) from ``model.pt`` for prediction."""
    checkpoint = load_checkpoint(path, map_location=device)
    try:
        model = build_model(checkpoint["model_spec"])
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise HafInputError(path, f"cannot load fusion model: {exc}") from exc
    return model.to(device).eval(), checkpoint


def train_method(
    name: str,
    declaration: dict[str, Any],
    fold_inputs: str | Path,
    params: dict[str, Any],
    device: torch.device,
    *,
    projectors: str | Path | None = None,
    bags: dict[str, Any] | None = None,
    progress: bool = False,
) -> FusionRun:
    """Train method ``name`` on one fold.

    ``params`` holds the settings (or schema-filled config sections) ``stage1``, ``stage2``, ``stage3``; ``projectors`` is the
    fold's Stage 2 ``projectors.pt`` (detached aligned methods); ``bags`` the bag sources of the
    no-detach methods (``manifest`` and ``tma_index`` paths).
    """
    spec = MethodSpec.from_declaration(name, declaration)
    params = {
        "stage1": Stage1Settings.from_config(params["stage1"]),
        "stage2": Stage2Settings.from_config(params["stage2"]),
        "stage3": Stage3Settings.from_config(params["stage3"]),
    }
    inputs = FoldInputs.load(fold_inputs)  # validates: NaN/inf errors name the modality and the patient
    log.info("%s fold %d: %s; %d patients; device %s", name, inputs.fold, spec.as_dict(), inputs.n, device)
    if not spec.detach:
        from haf.fusion.joint import train_joint

        if bags is None:
            raise ValueError(f"{name}: detach false needs the bags (manifest, tma_index)")
        return train_joint(inputs, spec, params, device, bags=bags, progress=progress)
    bank, meta = (None, None)
    if spec.uses_stage2:
        if projectors is None:
            raise ValueError(f"{name}: align {spec.align} needs stage2/{spec.align}/fold_k/projectors.pt")
        bank, meta = load_projectors(projectors, device)
        if meta.get("align") != spec.align:
            raise ValueError(
                f"{projectors}: holds {meta.get('align')!r} projectors, {name} needs {spec.align!r}"
            )
        if int(meta["fold"]) != inputs.fold:
            raise ValueError(
                f"{projectors}: fold {meta.get('fold')} but the fold inputs are fold {inputs.fold}"
            )
    return train_fusion(
        inputs,
        spec,
        params["stage3"],
        params["stage2"],
        device,
        projectors=bank,
        stage2_meta=meta,
        progress=progress,
    )


def write_run(
    run: FusionRun, outputs: dict[str, str | Path], *, seed: int, evaluation: dict[str, Any]
) -> pd.DataFrame:
    """Predictions (val, test), masked test predictions, train log and model.pt via haf.runtime."""
    return write_method_outputs(
        outputs,
        method=run.spec.name,
        seed=seed,
        inputs=run.inputs,
        tensors=run.tensors,
        score_fn=run.score_fn,
        task_loss=run.spec.task_loss,
        evaluation=evaluation,
        history=run.history,
        checkpoint=run.checkpoint,
    )
