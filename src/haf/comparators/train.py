"""One trainer for every comparator; what differs per family is its entry in :data:`haf.methods.METHOD_FAMILIES`.

The training loop, validation score, early stopping and outputs are the same for all five
comparators; the registry names each family's model builder, step function and settings section:

* the four binary comparators (late fusion, attention fusion, MFMF, feature interaction) read the
  ``stage3`` config section (the HAF paper's protocol: Adam, ReduceLROnPlateau, batch 64, early
  stopping on validation AUC), train on the patients with a binary label, and step with
  :func:`standard_step`;
* PARACHUTE reads the ``parachute`` section (AdamW + cosine annealing, batch 16, early stopping on
  validation C-index), trains with the Cox loss on every training patient, and steps with
  :class:`haf.comparators.stacked_gcs.StackedGCSStep` (SAM + Gradient Curvature Steering).

Many folds in one program: :func:`train_comparator_folds` trains K folds of one method as K stacked
members (:mod:`haf.runtime.stacked`, :func:`haf.runtime.fit.fit_stacked`).  Each fold keeps its own
seed (``fold_seed(base, fold)``, base = the declaration's ``seed`` or else the section's), data,
minibatches, dropout masks, GCS probes and ``p_miss`` draws, optimiser state, schedule, early stopping
and selected epoch, so a fold trained among others gives what it gives trained alone (up to float
rounding).  What changed against the former one-fold trainer is only the random streams: every fold
used to train from the section's seed and the global torch RNG; now fold k draws from its own seed.
The result of each fold is the plain single-fold model loaded from its member, so predictions, the
masked evaluation and checkpoints are those of one fold (:func:`load_model` rebuilds it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from haf.artifacts.fold_inputs import FoldInputs
from haf.comparators.blocks import presence
from haf.comparators.builders import instance_tokens
from haf.comparators.gcs import GCSConfig
from haf.comparators.models import ComparatorModel, Targets
from haf.comparators.stacked_gcs import StackedGCSStep
from haf.eval.binary import batched_auc
from haf.eval.masking import draw_masks
from haf.eval.scores import cindex_or_nan
from haf.methods import COMPARATOR_FAMILIES, METHOD_FAMILIES, MethodFamily, resolve
from haf.modalities import MODALITIES
from haf.runtime.fit import StackedTrainer, fit_stacked
from haf.runtime.outputs import write_fold_result
from haf.runtime.seeds import fold_seed, seed_everything
from haf.runtime.stacked import Members, StackedBatch, member_minibatches, member_state_dict, pad_rows
from haf.runtime.stacked_attention import RowLayers
from haf.runtime.tensors import FoldTensors, StackedFoldTensors, TokenTable, training_rows
from haf.settings import SECTIONS, Section, TrainingSettings

if TYPE_CHECKING:
    from haf.mil.tokens import InstanceTokens

log = logging.getLogger(__name__)

StackedStep = Callable[..., torch.Tensor]
"""``step(x, present, targets, valid, active, trainer) -> (K,)`` training losses: one optimiser step of
the active members on their minibatches (inputs (K, B, ...), ``valid`` (K, B) their real rows)."""


def standard_step(model: ComparatorModel, members: Members, settings: Section) -> StackedStep:
    """Each member's loss over its valid rows, one backward, the active members' optimiser step."""

    def step(x, present, targets, valid, active, trainer: StackedTrainer) -> torch.Tensor:
        _, losses = model.scores_and_losses(x, present, targets, valid)
        trainer.backward_step(losses, active)
        return losses.detach()

    return step


def gcs_step(model, members: Members, settings) -> StackedGCSStep:
    """PARACHUTE's step: SAM ascent + GCS (``gcs: false`` keeps SAM, ``rho: 0`` drops it)."""
    return StackedGCSStep(model, members, GCSConfig.from_settings(settings))


def comparator_spec(declaration: dict[str, Any]) -> MethodFamily:
    """The registry entry of a comparator declaration's family."""
    fam = declaration.get("family")
    if fam not in COMPARATOR_FAMILIES:
        raise ValueError(
            f"family {fam!r} is not a comparator; expected one of {', '.join(COMPARATOR_FAMILIES)}"
        )
    return METHOD_FAMILIES[fam]


def build_model(
    declaration: dict[str, Any],
    dims: dict[str, Any],
    settings: Section | dict[str, Any],
    layers: RowLayers | None = None,
) -> ComparatorModel:
    """The untrained model of a declaration (also how a checkpoint is rebuilt); ``settings``: the family's
    section; ``layers`` None: the plain one-fold model, else stacked (``dims``: widths per member)."""
    spec = comparator_spec(declaration)
    return resolve(spec.build)(declaration, dims, SECTIONS[spec.section].from_config(settings), layers)


def load_model(checkpoint: dict[str, Any], device: torch.device | str = "cpu") -> ComparatorModel:
    """Rebuild a trained comparator from its ``model.pt`` payload."""
    settings = dict(checkpoint["settings"])
    if checkpoint["declaration"].get("family") == "parachute":
        settings.setdefault("cox_normalisation", "events")  # saved before the option: trained that way
    model = build_model(checkpoint["declaration"], checkpoint["dims"], settings)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


@dataclass
class ComparatorResult:
    """A trained comparator (one fold) and what writing its outputs needs."""

    model: ComparatorModel
    history: pd.DataFrame
    tensors: FoldTensors
    task_loss: str
    seed: int
    checkpoint: dict[str, Any]

    def score_fn(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x, present)


def epoch_steps(
    members: Members,
    train_rows: list[np.ndarray],
    batch_size: int,
    running: np.ndarray,
    device: torch.device | str = "cpu",
) -> Iterator[StackedBatch]:
    """The steps of one epoch: :func:`haf.runtime.stacked.stacked_epoch`'s minibatches (member k's own,
    from its own generator, for the running members), each step padded only to *that step's* widest
    batch.  ``stacked_epoch`` pads every step to the epoch's widest, so a trailing batch of 3 rows in one
    fold would cost a full-width step for every member; the rows a member sees are the same either way,
    and row-aware dropout (:class:`~haf.runtime.stacked_attention.RowDropout`) draws the same numbers.
    """
    k = members.k
    per_member = [
        member_minibatches(np.asarray(train_rows[i]), batch_size, members.rngs[i]) if running[i] else []
        for i in range(k)
    ]
    for step in range(max((len(b) for b in per_member), default=0)):
        batches = [b[step] if step < len(b) else None for b in per_member]
        width = max(len(b) for b in batches if b is not None)
        rows = torch.zeros(k, width, dtype=torch.long)
        valid = torch.zeros(k, width, dtype=torch.bool)
        for i, b in enumerate(batches):
            if b is not None:
                rows[i, : len(b)] = torch.as_tensor(b, dtype=torch.long)
                valid[i, : len(b)] = True
        yield StackedBatch(rows.to(device), valid.to(device), valid.any(dim=1))


def _check_fold(name: str, inputs: FoldInputs, task_loss: str, modalities: list[str]) -> None:
    """Log what each part can use; a fold with fewer than two usable training patients stops the job."""
    train_idx = training_rows(inputs, "train", task_loss)
    val_idx = training_rows(inputs, "val", task_loss)
    for part, idx in (("train", train_idx), ("val", val_idx)):
        n_part = len(inputs.index(part))
        if len(idx) < n_part:
            log.info(
                "%s: %d of %d %s patients have no binary label and are left out of the %s loss/score",
                name, n_part - len(idx), n_part, part, part,
            )  # fmt: skip
    if len(train_idx) < 2:
        raise ValueError(f"{name}: only {len(train_idx)} training patients usable")
    used = presence(torch.as_tensor(inputs.present), modalities).numpy().any(axis=1)
    if not used.all():
        log.info(
            "%s: %d patients have none of the method's modalities %s (scored from learned constants)",
            name, int((~used).sum()), ",".join(modalities),
        )  # fmt: skip


class _Run:
    """The stacked members that train in an epoch: every fold, or a compact copy of the running ones.

    A compact run shares the members' own generators (torch and NumPy), so a member's draws continue
    exactly where they were; its parameters and optimiser state are copied in from the full run when it
    is made and copied back after every epoch (validation, early stopping and the schedules act on the
    full run).  Training a member among fewer members changes only the batched kernels' rounding.
    """

    def __init__(self, task: _ComparatorTask, ids: list[int], trainer: StackedTrainer | None = None) -> None:
        self.task, self.ids = task, list(ids)
        full = len(self.ids) == task.members.k
        if full:
            self.members, self.tensors = task.members, task.tensors
        else:
            self.members = Members([task.members.seeds[i] for i in self.ids], task.device)
            self.members.generators = [task.members.generators[i] for i in self.ids]
            self.members.rngs = [task.members.rngs[i] for i in self.ids]
            self.tensors = StackedFoldTensors.from_inputs(
                [task.inputs[i] for i in self.ids], task.device, tokens=task.token_table
            )
        self.layers = RowLayers(self.members)
        dims = {m: self.tensors.widths[m] for m in MODALITIES}
        dims.update({key: [width] * self.members.k for key, width in task.token_dims.items()})
        self.model = build_model(task.declaration, dims, task.settings, self.layers).to(task.device)
        self.trainer = trainer if full else StackedTrainer(self.model, self.members, task.settings.train)
        self.step = resolve(task.spec.step)(self.model, self.members, task.settings)
        self.train_rows = [task.train_rows[i] for i in self.ids]
        self.inputs = [task.inputs[i] for i in self.ids]

    def targets(self, rows: torch.Tensor, valid: torch.Tensor) -> Targets:
        """Targets (K, B); padded entries get harmless values (they never reach a loss)."""
        return _targets(self.tensors, rows, valid)

    def batch_inputs(self, batch: StackedBatch, epoch: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Features and presence of the step's rows; with ``p_miss`` each active member masks its own rows
        with a mask seed from its own generator (as the one-fold trainer did with its generator)."""
        x, present = self.tensors.rows(batch.rows, batch.valid)
        p_miss = self.task.p_miss
        if p_miss <= 0:
            return x, present
        mask = present.clone()
        counts = batch.counts.tolist()
        for k in self.members.active_ids():
            n = counts[k]
            rows = batch.rows[k, :n].cpu().numpy()
            seed = int(self.members.rngs[k].integers(2**31))
            draw = draw_masks(self.inputs[k].present[rows], p_miss, 1, "mixed", seed, epoch)
            mask[k, :n] = torch.as_tensor(draw[0], device=mask.device)
        # instance tokens (token-level models) stay: those models mask them with the presence mask
        x = {**x, **{m: x[m] * mask[..., j : j + 1].to(x[m].dtype) for j, m in enumerate(MODALITIES)}}
        return x, mask

    def train_epoch(self, epoch: int, running: np.ndarray) -> np.ndarray:
        """One epoch of the running members of this run; (K_run,) row-weighted mean training losses."""
        k = self.members.k
        total, count = np.zeros(k), np.zeros(k)
        batches = epoch_steps(self.members, self.train_rows, self.task.batch_size, running, self.task.device)
        for batch in batches:
            self.members.set_active(batch.active)
            self.layers.rows.set(batch.valid)
            x, present = self.batch_inputs(batch, epoch)
            targets = self.targets(batch.rows, batch.valid)
            losses = self.step(x, present, targets, batch.valid, batch.active, self.trainer)
            n = batch.counts.cpu().numpy()
            total += np.where(n > 0, losses.cpu().numpy(), 0.0) * n
            count += n
        self.layers.rows.set(None)
        return total / np.maximum(count, 1)

    def transfer(self, full: StackedTrainer, *, to_full: bool) -> None:
        """Copy parameters, Adam moments, step counts (and, into the run, learning rates) of this run's
        members between the full trainer and this run's trainer."""
        ids = torch.as_tensor(self.ids, device=full.flat.data.device)
        with torch.no_grad():
            for (pf, (of, _)), (pc, (oc, _)) in zip(
                zip(full.flat.params, full.flat.blocks, strict=True),
                zip(self.trainer.flat.params, self.trainer.flat.blocks, strict=True),
                strict=True,
            ):
                trailing = tuple(slice(0, s) for s in pc.shape[1:])  # widths may be padded in the full run
                for buf_full, buf_run in (
                    (full.flat.data, self.trainer.flat.data),
                    (full.optimizer.m, self.trainer.optimizer.m),
                    (full.optimizer.v, self.trainer.optimizer.v),
                ):
                    view_full = buf_full[of : of + pf.numel()].view(pf.shape)
                    view_run = buf_run[oc : oc + pc.numel()].view(pc.shape)
                    if to_full:
                        view_full[(ids, *trailing)] = view_run
                    else:
                        view_run.copy_(view_full[(ids, *trailing)])
            if to_full:
                full.optimizer.t[ids] = self.trainer.optimizer.t
            else:
                self.trainer.optimizer.t.copy_(full.optimizer.t[ids])

    def pull_learning_rates(self, full: StackedTrainer) -> None:
        ids = torch.as_tensor(self.ids, device=full.optimizer.lr.device)
        self.trainer.optimizer.lr.copy_(full.optimizer.lr[ids])


def _targets(tensors: StackedFoldTensors, rows: torch.Tensor, valid: torch.Tensor) -> Targets:
    t = tensors.targets(rows)
    return Targets(
        label=torch.where(valid, t["label"], torch.zeros_like(t["label"])),
        time=torch.where(valid, t["time"], torch.ones_like(t["time"])),
        event=torch.where(valid, t["event"], torch.zeros_like(t["event"])),
    )


class _ComparatorTask:
    """K folds of one comparator as the stacked task of :func:`haf.runtime.fit.fit_stacked`.

    Once at most ``COMPACT`` of the members of the current run are still running, the rest of training
    goes on in a compact run of those members only (members that stopped early cost no more compute).
    """

    COMPACT = 0.75

    def __init__(
        self,
        inputs: list[FoldInputs],
        declaration: dict[str, Any],
        spec: MethodFamily,
        settings: Section,
        device: torch.device,
        seeds: list[int],
        names: list[str],
        tokens: InstanceTokens | None = None,
    ) -> None:
        self.inputs, self.declaration, self.spec, self.settings = inputs, declaration, spec, settings
        self.device, self.names = device, names
        self.members = Members(seeds, device)
        seed_everything(seeds[0])
        # instance tokens (token-level comparators): one table on the device, shared by every member
        self.token_table = None if tokens is None else TokenTable.from_tokens(tokens, device)
        self.token_dims = token_dims(tokens)
        self.tensors = StackedFoldTensors.from_inputs(inputs, device, tokens=self.token_table)
        self.train_rows = [training_rows(i, "train", spec.task_loss) for i in inputs]
        self.val_rows = [training_rows(i, "val", spec.task_loss) for i in inputs]
        self.val_index, self.val_valid = pad_rows(self.val_rows, device)
        self.val_counts = [len(r) for r in self.val_rows]  # fit_stacked warns below min_val_patients
        self.batch_size = settings.batch_size
        # the method's own p_miss (per-p protocol), else the section's; the stage3 section has none
        declared = declaration.get("p_miss")
        self.p_miss = float(getattr(settings, "p_miss", 0.0) if declared is None else declared)
        self.full = _Run(self, list(range(len(inputs))))
        self.model = self.full.model
        self.run = self.full
        self.compactions: list[int] = []  # run sizes after each compaction (logged)
        self.gcs_history: list[list[dict[str, float]]] = [[] for _ in inputs]

    def train_epoch(self, epoch: int, running: np.ndarray, trainer: StackedTrainer) -> np.ndarray:
        self.full.trainer = trainer
        ids = [int(i) for i in np.flatnonzero(running)]
        if len(ids) <= self.COMPACT * len(self.run.ids) and len(ids) < len(self.run.ids):
            self.run = _Run(self, ids)  # the previous run was copied back at the end of the last epoch
            self.run.transfer(trainer, to_full=False)
            self.compactions.append(len(ids))
            log.info(
                "%s epoch %d: %d of %d folds still training: compacted to a run of folds %s",
                self.spec.name, epoch, len(ids), self.members.k, ", ".join(str(self.inputs[i].fold) for i in ids),
            )  # fmt: skip
        run = self.run
        if run is not self.full:
            run.pull_learning_rates(trainer)
        sub = running[run.ids]
        losses = np.zeros(self.members.k)
        losses[run.ids] = run.train_epoch(epoch, sub)
        if run is not self.full:
            run.transfer(trainer, to_full=True)
        stats = getattr(run.step, "stats", None)
        if stats is not None:
            local = [j for j, i in enumerate(run.ids) if running[i]]
            means = stats.reset(local)
            for j in local:
                i = run.ids[j]
                self.gcs_history[i].append(means[j])
                log.debug(
                    "%s epoch %d: GCS mean curvature %.3g, mean omega %.3f, mean damping factor %.4f",
                    self.names[i], epoch, means[j]["curvature"], means[j]["omega"], means[j]["damping"],
                )  # fmt: skip
        return losses

    def validate(self, running: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.members.k
        score, loss = np.full(k, np.nan), np.full(k, np.nan)
        if self.val_index.shape[1] == 0:
            return score, loss
        run = torch.as_tensor(running, device=self.val_valid.device).unsqueeze(1)
        valid = self.val_valid & run  # members that stopped are not scored (nor their Cox loss taken)
        x, present = self.tensors.rows(self.val_index, valid)
        targets = _targets(self.tensors, self.val_index, valid)
        out, losses = self.model.scores_and_losses(x, present, targets, valid)
        out, losses = out.float().cpu().numpy(), losses.float().cpu().numpy()
        for i in np.flatnonzero(running):
            rows = self.val_rows[i]
            if len(rows) == 0:
                continue
            s = out[i, : len(rows)]
            inp = self.inputs[i]
            loss[i] = losses[i]
            if self.spec.task_loss == "bce":
                # the Mann-Whitney AUC with mid-ranks (sklearn's roc_auc_score, without its per-call
                # validation overhead, which dominated the epoch of a stacked binary comparator)
                score[i] = float(batched_auc(inp.label[rows][None], s[None].astype(float))[0])
            else:
                score[i] = cindex_or_nan(inp.time[rows], inp.event[rows], s)
        return score, loss

    def fold_dims(self, k: int) -> dict[str, int]:
        """Fold k's input widths (and instance token widths): what rebuilding its model needs."""
        return {**self.inputs[k].dims(), **self.token_dims}

    def fold_model(self, k: int) -> ComparatorModel:
        """Member k as the plain single-fold model (eval mode) that predictions and checkpoints use."""
        plain = build_model(self.declaration, self.fold_dims(k), self.settings)
        plain.load_state_dict(member_state_dict(self.model, k))
        return plain.to(self.device).eval()


def token_dims(tokens: InstanceTokens | None) -> dict[str, int]:
    """The ``dims`` entries of the instance tokens (``"{m}.tokens"`` -> width), empty without tokens."""
    from haf.comparators.models import token_dim_key

    return {} if tokens is None else {token_dim_key(m): d for m, d in tokens.dims().items()}


def _check_tokens(
    declaration: dict[str, Any], tokens: InstanceTokens | None, inputs: list[FoldInputs], names: list[str]
) -> None:
    """A token-level method needs instance tokens that cover every patient the fold inputs mark present."""
    family = declaration.get("family")
    if not instance_tokens(declaration):
        if tokens is not None:
            raise ValueError(f"{family}: instance tokens given, but the declaration has tokens: modality")
        return
    if tokens is None:
        raise ValueError(
            f"{family}: tokens: instance needs the bags' instance tokens (haf.mil.tokens.open_instance_tokens)"
        )
    for name, inp in zip(names, inputs, strict=True):
        tokens.check(inp.patient_id, inp.present, declaration["modalities"])
        log.info(
            "%s: instance tokens of %s (at most %d per modality and patient, subsample seed %d)",
            name, ", ".join(m for m in tokens.modalities if m in declaration["modalities"]), tokens.cap,
            tokens.seed,
        )  # fmt: skip


def train_comparator_folds(
    inputs: list[FoldInputs],
    declaration: dict[str, Any],
    sections: dict[str, Section | dict[str, Any]],
    device: torch.device,
    names: list[str] | None = None,
    selection: TrainingSettings | None = None,
    progress: bool = False,
    tokens: InstanceTokens | None = None,
) -> list[ComparatorResult]:
    """Train one comparator on several folds at once (one stacked member per fold); one result per fold.

    ``declaration`` is a completed method declaration (:func:`haf.methods.method_declaration`);
    ``sections`` maps config section names (``stage3``, ``parachute``) to their settings; ``names``
    (default ``"<family> fold <k>"``) label each fold in the log.  Fold k trains from seed
    ``fold_seed(base, fold)``; a fold without two usable training patients stops the job naming it.
    ``tokens``: the cohort's instance tokens, required by (and only by) a ``tokens: instance`` method;
    they are inputs, not weights: the checkpoint records their widths, and predicting with a rebuilt
    model takes the same tokens again (``FoldTensors.from_inputs(inputs, device, tokens)``).
    """
    if not inputs:
        raise ValueError("train_comparator_folds needs at least one fold")
    spec = comparator_spec(declaration)
    settings = SECTIONS[spec.section].from_config(sections[spec.section])
    base = settings.seed if declaration.get("seed") is None else int(declaration["seed"])
    seeds = [fold_seed(base, i.fold) for i in inputs]
    names = list(names) if names is not None else [f"{spec.name} fold {i.fold}" for i in inputs]
    if len(names) != len(inputs):
        raise ValueError(f"{len(names)} names for {len(inputs)} folds")
    modalities = list(declaration["modalities"])
    for name, inp in zip(names, inputs, strict=True):
        _check_fold(name, inp, spec.task_loss, modalities)
    _check_tokens(declaration, tokens, inputs, names)
    task = _ComparatorTask(inputs, declaration, spec, settings, device, seeds, names, tokens)
    n_params = sum(p.numel() for p in task.model.parameters()) // len(inputs)
    log.info(
        "%s: %s with %d parameters per fold, %d folds stacked on %s",
        spec.name, type(task.model).__name__, n_params, len(inputs), device,
    )  # fmt: skip
    if task.p_miss > 0:
        log.info(
            "%s: training-time masking: mixed scenario (per group) at p_miss = %g%s",
            spec.name, task.p_miss, " (the method's own)" if declaration.get("p_miss") is not None else "",
        )  # fmt: skip
    histories = fit_stacked(task, settings.train, names=names, selection=selection, progress=progress)
    results = []
    for k, inp in enumerate(inputs):
        if task.gcs_history[k]:
            tail = task.gcs_history[k][-1]
            log.info(
                "%s: GCS last epoch: mean curvature %.3g, mean omega %.3f, mean damping factor %.4f",
                names[k], tail["curvature"], tail["omega"], tail["damping"],
            )  # fmt: skip
        model = task.fold_model(k)
        checkpoint = {
            "family": spec.name,
            "declaration": dict(declaration),
            "dims": task.fold_dims(k),
            "settings": settings.as_dict(),
            "state_dict": {key: v.detach().cpu() for key, v in model.state_dict().items()},
            "seed": seeds[k],
        }
        tensors = FoldTensors.from_inputs(inp, device, tokens=task.token_table)
        results.append(ComparatorResult(model, histories[k], tensors, spec.task_loss, seeds[k], checkpoint))
    return results


def train_comparator(
    inputs: FoldInputs,
    declaration: dict[str, Any],
    sections: dict[str, Section | dict[str, Any]],
    device: torch.device,
    *,
    name: str | None = None,
    progress: bool = False,
) -> ComparatorResult:
    """One fold of :func:`train_comparator_folds` (a stacked run with one member)."""
    label = f"{name or comparator_spec(declaration).name} fold {inputs.fold}"
    runs = train_comparator_folds([inputs], declaration, sections, device, names=[label], progress=progress)
    return runs[0]


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
    return write_fold_result(outputs, result, method=method, inputs=inputs, evaluation=evaluation)


def run_comparator_folds(
    inputs_list: list[FoldInputs],
    declaration: dict[str, Any],
    sections: dict[str, Section | dict[str, Any]],
    evaluation: dict[str, Any],
    outputs_per_fold: list[dict[str, str | Path]],
    *,
    method: str,
    device: torch.device,
    selection: TrainingSettings | None = None,
    progress: bool = False,
    tokens: InstanceTokens | None = None,
) -> list[pd.DataFrame]:
    """Train one comparator on several folds at once and write each fold's four outputs (per-fold files,
    the same contracts as :func:`run_comparator`); return each fold's val/test predictions."""
    if len(outputs_per_fold) != len(inputs_list):
        raise ValueError(f"{len(outputs_per_fold)} output sets for {len(inputs_list)} folds")
    names = [f"{method} fold {i.fold}" for i in inputs_list]
    results = train_comparator_folds(
        inputs_list,
        declaration,
        sections,
        device,
        names=names,
        selection=selection,
        progress=progress,
        tokens=tokens,
    )
    return [
        write_fold_result(outputs, result, method=method, inputs=inputs, evaluation=evaluation)
        for result, inputs, outputs in zip(results, inputs_list, outputs_per_fold, strict=True)
    ]
