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
from haf.fusion.model import FusionHead, FusionModel, build_model, model_spec, stacked_fusion_loss, task_loss
from haf.fusion.spec import MethodSpec
from haf.modalities import MODALITIES
from haf.runtime.fit import StackedTrainer, fit_stacked
from haf.runtime.outputs import write_method_outputs
from haf.runtime.seeds import fold_seed, seed_everything
from haf.runtime.stacked import Layers, Members, gather_rows, member_state_dict, pad_rows, stacked_epoch
from haf.runtime.tensors import FoldTensors, StackedFoldTensors, training_rows
from haf.settings import Stage1Settings, Stage2Settings, Stage3Settings, TrainingSettings

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


def record_epoch_means(
    components: list[list[dict[str, float]]],
    sums: list[dict[str, float]],
    steps: np.ndarray,
    running: np.ndarray,
    epoch: int,
) -> None:
    """Append each running member's epoch means of its loss parts (``train_<part>``) to its log rows."""
    for i in np.flatnonzero(running):
        n = max(steps[i], 1)
        components[i].append({"epoch": epoch, **{f"train_{key}": v / n for key, v in sums[i].items()}})


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
    selection: TrainingSettings | None = None,
    progress: bool = False,
) -> FusionRun:
    """One fold of :func:`train_fusion_folds` (a stacked run with one member)."""
    return train_fusion_folds(
        [inputs],
        spec,
        stage3,
        stage2,
        device,
        projectors=None if projectors is None else [projectors],
        stage2_meta=None if stage2_meta is None else [stage2_meta],
        selection=selection,
        progress=progress,
    )[0]


class _DetachedFusionTask:
    """The stacked task of a detached fusion method: K folds' fusion models (and, with ``align: none``,
    their projectors) trained side by side by :func:`haf.runtime.fit.fit_stacked`."""

    def __init__(
        self,
        inputs: list[FoldInputs],
        spec: MethodSpec,
        stage3: Stage3Settings,
        stage2: Stage2Settings,
        device: torch.device,
        banks: list[ProjectorBank] | None,
    ) -> None:
        self.inputs, self.spec, self.stage3, self.device = inputs, spec, stage3, device
        self.members = Members([fold_seed(stage3.seed, i.fold) for i in inputs], device)
        seed_everything(self.members.seeds[0])
        self.tensors = StackedFoldTensors.from_inputs(inputs, device)
        self.train_rows = [training_rows(i, "train", spec.task_loss) for i in inputs]
        self.val_rows = [training_rows(i, "val", spec.task_loss) for i in inputs]
        self.val_index, self.val_valid = pad_rows(self.val_rows, device)
        self.val_counts = [len(r) for r in self.val_rows]
        layers = Layers(self.members)
        self.frozen = spec.uses_stage2
        slots = slot_index(spec)
        self.missing = [
            check_training_coverage(spec, i, r) for i, r in zip(inputs, self.train_rows, strict=True)
        ]
        if self.frozen:
            # detached projections: computed once per fold with that fold's Stage 2 projectors
            n_max, d_out = max(i.n for i in inputs), banks[0].d_out
            u_all = torch.zeros(len(inputs), n_max, len(spec.modalities), d_out, device=device)
            with torch.no_grad():
                for k, (inp, bank) in enumerate(zip(inputs, banks, strict=True)):
                    sub = bank.subset(spec.modalities).to(device).eval()
                    plain = FoldTensors.from_inputs(inp, device)
                    x, present = plain.rows(np.arange(inp.n))
                    u_all[k, : inp.n] = sub(x, present[:, slots].bool())
            self.u_all = u_all
            self.model = FusionHead(len(spec.modalities), d_out, stage3.hidden, stage3.dropout, layers).to(
                device
            )
        else:
            dims = {m: self.tensors.widths[m] for m in spec.modalities}
            bank = ProjectorBank(dims, spec.modalities, stage2.hidden, stage2.d_out, layers)
            self.model = FusionModel(bank, stage3.hidden, stage3.dropout, slots, layers).to(device)
        self.slots = slots
        self.components: list[list[dict[str, float]]] = [[] for _ in inputs]

    def freeze_untrainable(self, trainer: StackedTrainer) -> None:
        if self.frozen:
            return
        for k, missing in enumerate(self.missing):
            for m in missing:
                trainer.flat.freeze(k, self.model.projectors.proj[m])

    def head(self) -> FusionHead:
        return self.model if self.frozen else self.model.head

    def embed(self, rows: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, present = self.tensors.rows(rows, valid)
        mask = present[..., self.slots].bool()
        if self.frozen:
            return gather_rows(self.u_all, rows) * mask.unsqueeze(-1).to(torch.float32), mask
        return self.model.embed(x, mask), mask

    def train_epoch(self, epoch: int, running: np.ndarray, trainer: StackedTrainer) -> np.ndarray:
        if epoch == 0:
            self.freeze_untrainable(trainer)
        k = self.members.k
        total, steps = np.zeros(k), np.zeros(k)
        sums: list[dict[str, float]] = [{} for _ in range(k)]
        for batch in stacked_epoch(
            self.members, self.train_rows, self.stage3.batch_size, running, self.device
        ):
            self.members.set_active(batch.active)
            u, mask = self.embed(batch.rows, batch.valid)
            loss, parts = stacked_fusion_loss(
                self.head(), u, mask, self.tensors.targets(batch.rows), batch.valid,
                kind=self.spec.task_loss, drop=self.spec.drop, lambda_mofe=self.stage3.lambda_mofe,
                members=self.members, reduced_draw=self.stage3.reduced_draw,
            )  # fmt: skip
            trainer.backward_step(loss, batch.active)
            act = batch.active.numpy()
            total += loss.detach().cpu().numpy() * act
            steps += act
            for i in np.flatnonzero(act):
                for key, value in parts.items():
                    sums[i][key] = sums[i].get(key, 0.0) + float(value[i])
        record_epoch_means(self.components, sums, steps, running, epoch)
        return total / np.maximum(steps, 1)

    def validate(self, running: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.members.k
        score, loss = np.full(k, np.nan), np.full(k, np.nan)
        if self.val_index.shape[1] == 0:
            return score, loss
        u, mask = self.embed(self.val_index, self.val_valid)
        out = self.head()(u, mask)
        targets = self.tensors.targets(self.val_index)
        for i in np.flatnonzero(running):
            n = len(self.val_rows[i])
            if n == 0:
                continue
            sub = {key: value[i, :n] for key, value in targets.items()}
            loss[i] = float(task_loss(out[i, :n], sub, self.spec.task_loss))
            score[i] = validation_score(
                self.spec.task_loss, self.inputs[i], self.val_rows[i], out[i, :n].cpu().numpy()
            )
        return score, loss

    def fold_model(self, k: int, bank: ProjectorBank | None) -> FusionModel:
        """Member k as the plain single-fold model (eval mode) that predictions and checkpoints use."""
        inp = self.inputs[k]
        if self.frozen:
            plain = FusionModel(
                bank.subset(self.spec.modalities), self.stage3.hidden, self.stage3.dropout, self.slots
            )
            plain.head.load_state_dict(member_state_dict(self.model, k))
        else:
            dims = {m: inp.dims()[m] for m in self.spec.modalities}
            plain = FusionModel(
                ProjectorBank(dims, self.spec.modalities, self.model.projectors.hidden, self.model.projectors.d_out),
                self.stage3.hidden, self.stage3.dropout, self.slots,
            )  # fmt: skip
            plain.load_state_dict(member_state_dict(self.model, k))
            for m in self.missing[k]:  # kept at its initialisation (frozen in the stacked run)
                plain.projectors.proj[m].requires_grad_(False)
        return plain.to(self.device).eval()


def train_fusion_folds(
    inputs: list[FoldInputs],
    spec: MethodSpec,
    stage3: Stage3Settings,
    stage2: Stage2Settings,
    device: torch.device,
    *,
    projectors: list[ProjectorBank] | None = None,
    stage2_meta: list[dict[str, Any]] | None = None,
    selection: TrainingSettings | None = None,
    progress: bool = False,
) -> list[FusionRun]:
    """Train one detached fusion method on several folds at once (one stacked member per fold).

    Each fold keeps its own seed (``fold_seed(stage3.seed, fold)``), data, dropout and modality draws,
    optimiser state, schedule, early stopping and selected epoch: a fold's result is the same trained
    with the others or alone.  A fold without enough usable training patients stops the job naming it.
    """
    if not spec.detach:
        raise ValueError(f"{spec.name}: detach false is trained by haf.fusion.joint.train_joint")
    if spec.uses_stage2 and projectors is None:
        raise ValueError(f"{spec.name}: align {spec.align!r} needs the Stage 2 projectors of every fold")
    stage3, stage2 = Stage3Settings.from_config(stage3), Stage2Settings.from_config(stage2)
    for k, inp in enumerate(inputs):
        train_idx = training_rows(inp, "train", spec.task_loss)
        val_idx = training_rows(inp, "val", spec.task_loss)
        if len(train_idx) < 2:
            raise HafInputError(
                f"fold_inputs fold {inp.fold}",
                f"{spec.name}: only {len(train_idx)} training patients usable for the {spec.task_loss} loss",
            )
        log_cohort(spec, inp, train_idx, val_idx)
        untrained = list(stage2_meta[k]["untrained"]) if stage2_meta else []
        if spec.uses_stage2 and untrained:
            log.warning(
                "%s fold %d: Stage 2 left these projectors untrained (no training patient): %s",
                spec.name,
                inp.fold,
                ", ".join(untrained),
            )
    task = _DetachedFusionTask(inputs, spec, stage3, stage2, device, projectors)
    names = [f"{spec.name} fold {i.fold}" for i in inputs]
    histories = fit_stacked(task, stage3.train, names=names, selection=selection, progress=progress)
    runs = []
    for k, inp in enumerate(inputs):
        history = histories[k]
        if task.components[k]:
            history = history.merge(pd.DataFrame(task.components[k]), on="epoch", how="left")
        history.insert(0, "method", spec.name)
        model = task.fold_model(k, projectors[k] if projectors else None)
        missing = task.missing[k]
        notes = [f"no training patient has {m}: projector not trained" for m in missing]
        checkpoint = make_checkpoint(
            spec, model, inp.fold, stage2_meta=stage2_meta[k] if stage2_meta else None, untrained=missing,
            extra={"seed": task.members.seeds[k]},
        )  # fmt: skip
        runs.append(
            FusionRun(spec, model, history, inp, FoldTensors.from_inputs(inp, device), checkpoint, notes)
        )
    return runs


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
    selection: TrainingSettings | None = None,
    progress: bool = False,
) -> FusionRun:
    """Train method ``name`` on one fold (:func:`train_method_folds` with one fold)."""
    return train_method_folds(
        name,
        declaration,
        [fold_inputs],
        params,
        device,
        projectors=None if projectors is None else [projectors],
        bags=bags,
        selection=selection,
        progress=progress,
    )[0]


def _load_fold_projectors(path: str | Path, spec: MethodSpec, fold: int, device: torch.device):
    bank, meta = load_projectors(path, device)
    if meta.get("align") != spec.align:
        raise ValueError(f"{path}: holds {meta.get('align')!r} projectors, {spec.name} needs {spec.align!r}")
    if int(meta["fold"]) != fold:
        raise ValueError(f"{path}: fold {meta.get('fold')} but the fold inputs are fold {fold}")
    return bank, meta


def train_method_folds(
    name: str,
    declaration: dict[str, Any],
    fold_inputs: list[str | Path],
    params: dict[str, Any],
    device: torch.device,
    *,
    projectors: list[str | Path] | None = None,
    bags: dict[str, Any] | None = None,
    stage1_models: dict[str, list[str | Path]] | None = None,
    selection: TrainingSettings | None = None,
    progress: bool = False,
) -> list[FusionRun]:
    """Train method ``name`` on every given fold (the rule's job: all folds side by side).

    ``params`` holds the settings (or schema-filled config sections) ``stage1``, ``stage2``, ``stage3``;
    ``projectors`` the folds' Stage 2 ``projectors.pt`` (detached aligned methods), in the order of
    ``fold_inputs``; ``bags`` the bag sources of the no-detach methods (``manifest``, ``tma_index``);
    ``stage1_models`` the folds' Stage 1 ``model.pt`` per pathology modality (``init: stage1``).
    """
    spec = MethodSpec.from_declaration(name, declaration)
    params = {
        "stage1": Stage1Settings.from_config(params["stage1"]),
        "stage2": Stage2Settings.from_config(params["stage2"]),
        "stage3": Stage3Settings.from_config(params["stage3"]),
    }
    inputs = [FoldInputs.load(path) for path in fold_inputs]  # validates: NaN/inf errors name the patient
    for inp in inputs:
        log.info("%s fold %d: %s; %d patients; device %s", name, inp.fold, spec.as_dict(), inp.n, device)
    if not spec.detach:
        from haf.fusion.joint import train_joint_folds

        if bags is None:
            raise ValueError(f"{name}: detach false needs the bags (manifest, tma_index)")
        return train_joint_folds(
            inputs,
            spec,
            params,
            device,
            bags=bags,
            stage1_models=stage1_models,
            selection=selection,
            progress=progress,
        )
    banks = metas = None
    if spec.uses_stage2:
        if projectors is None or len(projectors) != len(inputs):
            raise ValueError(
                f"{name}: align {spec.align} needs stage2/{spec.align}/fold_k/projectors.pt of every fold"
            )
        loaded = [
            _load_fold_projectors(path, spec, inp.fold, device)
            for path, inp in zip(projectors, inputs, strict=True)
        ]
        banks, metas = [b for b, _ in loaded], [m for _, m in loaded]
    return train_fusion_folds(
        inputs,
        spec,
        params["stage3"],
        params["stage2"],
        device,
        projectors=banks,
        stage2_meta=metas,
        selection=selection,
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
