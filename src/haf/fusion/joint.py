"""No-detach ablations (the HAF paper's Table 2): Stages 1-3 trained jointly with Eq. 12.

``L_total = L_WSI + L_TMA + L_align + L_fusion``: the CLAM encoders of the method's pathology
modalities (Eq. 1-3), the projectors with the method's alignment loss (``ga``: Eq. 7; ``clip``: the
CLIP loss; ``none``: no alignment term) and the fusion loss (Eq. 11 with ``drop``, else the task loss)
are optimised together by one Adam optimiser; nothing is detached, so the fusion and alignment
gradients reach the CLAM encoders.

Choices (documented in ``docs/fusion.md``):

* ``init: scratch`` (``*_nodetach``): the CLAM encoders start **from scratch** (seeded, the Stage 1
  architecture and ``stage1`` sizes): end-to-end optimisation across all stages as the paper's ablation
  describes, needing no Stage 1 output as input;
* ``init: stage1`` (``*_nodetach_warm``): the CLAM encoders start from the fold's Stage 1 models
  (``stage1/{pm}/fold_k/model.pt``, every weight copied exactly, bag and instance classifiers included),
  then train under the same Stage 3 budget as ``scratch`` and as the detached fusion step
  (``stage3.max_epochs``, ``es_patience``, LR plateau, optimiser, batch, ``training.selection`` on the
  validation score of the fused prediction), so Table 2's difference is detachment, not initialisation;
  the projectors and fusion head start from the same seeded init in both variants;
* each step takes a minibatch of ``stage3.batch_size`` patients; their bags form one padded batch per
  pathology modality, packed (only real instances), in size-sorted chunks of ``stage1.batch_bags``
  (subsampled to ``stage1.max_instances`` in training, full in evaluation); the CLAM
  loss uses the patients of the step with a binary label and a bag;
* optimiser, schedule and early stopping as every fusion method (``stage3``), on the validation
  score of the fused prediction;
* after training, every patient's z is recomputed with the trained encoders (full bags, eval mode, one
  bag per pass) and predictions and the masked evaluation run from those z, so masked evaluation needs
  no bags.

Many folds in one program (:func:`train_joint_folds`): the K folds of a method are K members of one
stacked model (stacked CLAM encoders, projector bank and fusion head; :mod:`haf.runtime.stacked`) on
one shared bag store.  Member k has its own seed ``fold_seed(stage3.seed, fold)``, minibatches and bag
subsamples (its NumPy generator), dropout masks and MoFe draws (its torch generator), optimiser state,
schedule, early stopping and selected epoch; each step's CLAM chunks of all members run as one stacked
forward, the alignment loss per member on its own rows.  So fold k gives what it gives trained alone
(K = 1, :func:`train_joint`) up to float rounding (tested).  Compared with the per-fold trainer before
the stacked runtime only the random streams changed (per-member generators: one for dropout and MoFe
instead of the global RNG and a MoFe generator; CLAM dropout over real instance rows).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from haf.alignment.losses import alignment_loss
from haf.alignment.projectors import ProjectorBank
from haf.artifacts.fold_inputs import FoldInputs
from haf.errors import HafInputError
from haf.fusion.model import FusionModel, stacked_fusion_loss, task_loss
from haf.fusion.spec import MethodSpec
from haf.fusion.train import (
    FusionRun,
    check_training_coverage,
    log_cohort,
    make_checkpoint,
    record_epoch_means,
    slot_index,
    validation_score,
)
from haf.modalities import MODALITIES, PATHOLOGY
from haf.runtime.device import autocast
from haf.runtime.fit import StackedTrainer, fit_stacked
from haf.runtime.seeds import fold_seed, seed_everything
from haf.runtime.stacked import Layers, Members, member_state_dict, pad_rows, stacked_epoch
from haf.runtime.tensors import FoldTensors, StackedFoldTensors, training_rows
from haf.settings import Stage1Settings, Stage2Settings, Stage3Settings, TrainingSettings

log = logging.getLogger(__name__)


def open_bag_stores(
    paths: dict[str, str | Path], stage1: Stage1Settings, modalities: Sequence[str], device: torch.device
):
    """The WSI/TMA :class:`~haf.mil.bags.BagStore` of the method's pathology modalities, cached if they fit.

    ``paths``: ``manifest``, ``tma_index`` (when TMA is in the run) and ``available`` (the pathology
    modalities the cohort has; default both).
    """
    from haf.mil.bags import BagStore

    settings = Stage1Settings.from_config(stage1)
    budget = settings.cache_budget_bytes(device.type)
    stores = {}
    for pm in PATHOLOGY:
        if pm in modalities and pm in paths.get("available", PATHOLOGY):
            stores[pm] = BagStore.for_pathology_model(
                pm,
                manifest=paths["manifest"],
                tma_index=paths.get("tma_index"),
                wsi_dim=settings.wsi_dim,
                max_abs=settings.max_abs_feature,
            )
            stores[pm].cache(device, budget)
    return stores


def check_bags(inputs: FoldInputs, stores: dict[str, Any]) -> None:
    """Fold inputs and bags must agree: a patient marked as having WSI/TMA needs a non-empty bag.

    A bag of a patient the fold inputs mark absent is ignored (the presence mask of the fold inputs is
    what every method of the fold is evaluated under); such patients are counted in the log.
    """
    for pm, store in stores.items():
        j = MODALITIES.index(pm)
        has = np.array([store.has(p) for p in inputs.patient_id], dtype=bool)
        lacking = inputs.present[:, j] & ~has
        if lacking.any():
            pid = inputs.patient_id[np.flatnonzero(lacking)[0]]
            raise HafInputError(
                f"{pm} bags",
                f"patient {pid} has a {pm} embedding in the fold inputs but no non-empty {pm} bag "
                f"({int(lacking.sum())} such patients): Stage 1 and the bag sources disagree",
                field=pm,
            )
        extra = int((~inputs.present[:, j] & has).sum())
        if extra:
            log.warning("%s: %d patients have a bag but no %s in the fold inputs: bag ignored", pm, extra, pm)


def read_stage1_models(
    paths: dict[str, Sequence[str | Path]],
    inputs: Sequence[FoldInputs],
    stores: dict[str, Any],
    stage1: Stage1Settings,
) -> dict[str, list[dict[str, Any]]]:
    """The fold's Stage 1 CLAM checkpoints a warm-started method starts from, checked against the run.

    ``paths[pm][k]``: ``stage1/{pm}/fold_{fold}/model.pt`` of fold ``inputs[k]``.  Each file must be the
    model of that pathology modality and fold (``meta``), with the input width of the bags and the
    ``stage1`` sizes of this run (``hparams``); anything else is an error naming the file and the field.
    """
    from haf.artifacts.stage1_model import read_stage1_model

    loaded: dict[str, list[dict[str, Any]]] = {}
    for pm, store in stores.items():
        files = list(paths.get(pm) or [])
        if len(files) != len(inputs):
            raise ValueError(
                f"init stage1 needs stage1/{pm}/fold_k/model.pt of each of the {len(inputs)} folds, got "
                f"{len(files)} file(s)"
            )
        loaded[pm] = []
        for path, inp in zip(files, inputs, strict=True):
            payload = read_stage1_model(path)
            meta, hparams = payload["meta"], payload["hparams"]
            want = {"pmod": pm, "fold": int(inp.fold)}
            for key, value in want.items():
                if meta.get(key) != value:
                    raise HafInputError(
                        path,
                        f"is the Stage 1 model of {key} {meta.get(key)!r}, expected {value!r}",
                        field=key,
                    )
            sizes = {"in_dim": store.dim, "d1": stage1.d1, "d2": stage1.d2, "dropout": stage1.dropout}
            for key, value in sizes.items():
                if hparams.get(key) != value:
                    raise HafInputError(
                        path,
                        f"Stage 1 model has {key} = {hparams.get(key)!r}, this run needs {value!r} "
                        "(stage1 settings or bag width changed since Stage 1 ran)",
                        field=f"hparams.{key}",
                    )
            loaded[pm].append({**payload, "path": str(path)})
    return loaded


class JointPathology(nn.Module):
    """The CLAM encoders (one per pathology modality of the method), trained inside Eq. 12.

    ``layers``: ``None`` = one fold; ``Layers(members)`` = the encoders of K folds stacked.  The bag
    stores are shared by every member (the cohort's bags, read once).
    """

    def __init__(self, stores: dict[str, Any], stage1: Stage1Settings, layers: Layers | None = None) -> None:
        from haf.mil.clam import GatedAttentionMIL

        super().__init__()
        self.stores = stores
        self.s1 = stage1
        self.encoders = nn.ModuleDict(
            {
                pm: GatedAttentionMIL(store.dim, stage1.d1, stage1.d2, stage1.dropout, layers=layers)
                for pm, store in stores.items()
            }
        )

    def encode_step(
        self,
        pids: Sequence[Sequence[str]],
        label: torch.Tensor,
        width: int,
        device: torch.device,
        rngs: Sequence[np.random.Generator],
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """z of each pathology modality for each member's step patients and each member's CLAM loss.

        ``pids[k]``: member k's patients of the step (rows ``:len(pids[k])`` of its batch of ``width``),
        ``label`` (K, width) their binary labels (NaN = none).  Returns modality -> z (K, width, d1)
        (zeros without a bag) and the (K,) summed CLAM losses.  Each member's bags are sorted by size
        and encoded in chunks of ``stage1.batch_bags`` (less padding than one batch padded to the largest
        bag; chunk j of every member runs as one stacked forward); a member's CLAM loss is the mean over
        all its valid bags of the step (label and bag present), as one batch would give.
        """
        from haf.mil.clam import clam_loss

        chunk = max(1, self.s1.batch_bags)
        cap = self.s1.max_instances
        k_members = len(pids)
        z: dict[str, torch.Tensor] = {}
        loss = torch.zeros(k_members, device=device)
        for pm, encoder in self.encoders.items():
            store = self.stores[pm]
            orders = []
            for member in pids:
                sizes = np.array([min(store.n_instances(p), cap) for p in member], dtype=np.int64)
                order = np.argsort(sizes, kind="stable")
                orders.append(order[sizes[order] > 0])  # patients without a bag: z = 0, no loss
            z_pm = torch.zeros(k_members, width, encoder.d1, device=device)
            total = torch.zeros(k_members, device=device)
            n_valid = torch.zeros(k_members, device=device)
            n_chunks = max((-(-len(o) // chunk) for o in orders), default=0)
            for c in range(n_chunks):
                rows = [o[c * chunk : (c + 1) * chunk] for o in orders]
                batch = store.stacked_batch(
                    [[pids[k][i] for i in r] for k, r in enumerate(rows)],
                    max_instances=cap,
                    rngs=rngs,
                    device=device,
                )
                with autocast(device):
                    out = encoder(batch.x, batch.mask)
                member = torch.as_tensor(
                    np.repeat(np.arange(k_members), [len(r) for r in rows]), device=device
                )
                at = torch.as_tensor(np.concatenate(rows).astype(np.int64), device=device)
                slot = torch.as_tensor(
                    np.concatenate([np.arange(len(r)) for r in rows]).astype(np.int64), device=device
                )
                z_pm = z_pm.index_put((member, at), out.z[member, slot].float())
                y = torch.full(tuple(batch.mask.shape[:2]), float("nan"), device=device)
                y[member, slot] = label[member, at]
                valid = torch.isfinite(y).sum(dim=1).to(total.dtype)
                term = clam_loss(
                    encoder, out, batch.mask, y, bag_weight=self.s1.bag_weight, k_sample=self.s1.k_sample
                ).total
                total = total + term * valid
                n_valid = n_valid + valid
            z[pm] = z_pm
            loss = loss + torch.where(n_valid > 0, total / n_valid.clamp(min=1), torch.zeros_like(total))
        return z, loss

    def load_stage1(self, models: dict[str, list[dict[str, Any]]]) -> None:
        """Warm start: member k of each encoder takes fold k's Stage 1 weights, exactly
        (:func:`read_stage1_models` gives them)."""
        from haf.runtime.stacked import load_member_state_dict

        for pm, encoder in self.encoders.items():
            for k, payload in enumerate(models[pm]):
                load_member_state_dict(encoder, k, payload["state_dict"])

    @torch.no_grad()
    def embed_members(
        self, ids: Sequence[Sequence[str]], device: torch.device
    ) -> dict[str, list[np.ndarray]]:
        """Full-bag z (eval mode) of each member's patients ``ids[k]`` (zeros without a bag)."""
        from haf.mil.train import embed_members

        return {
            pm: [
                z
                for z, _ in embed_members(
                    encoder,
                    self.stores[pm],
                    ids,
                    batch_bags=self.s1.batch_bags,
                    instance_budget=self.s1.instance_budget,
                    device=device,
                )
            ]
            for pm, encoder in self.encoders.items()
        }


def with_embeddings(inputs: FoldInputs, z: dict[str, np.ndarray]) -> FoldInputs:
    """A copy of the fold inputs whose WSI/TMA features are the given z (zeros where absent)."""
    features = dict(inputs.features)
    columns = dict(inputs.columns)
    for pm, values in z.items():
        j = MODALITIES.index(pm)
        features[pm] = (values * inputs.present[:, j : j + 1]).astype(np.float32)
        columns[pm] = [f"z{k}" for k in range(values.shape[1])]
    return replace(inputs, features=features, columns=columns).validate("<jointly trained embeddings>")


def train_joint(
    inputs: FoldInputs,
    spec: MethodSpec,
    params: dict[str, Any],
    device: torch.device,
    *,
    bags: dict[str, Any],
    stage1_models: dict[str, str | Path] | None = None,
    progress: bool = False,
) -> FusionRun:
    """Train a ``detach: false`` method with Eq. 12 on one fold (:func:`train_joint_folds` with one fold);
    ``bags``: pathology modality -> BagStore (or the rule's ``manifest``/``tma_index`` paths);
    ``stage1_models`` (``init: stage1``): pathology modality -> the fold's Stage 1 ``model.pt``."""
    models = {pm: [path] for pm, path in stage1_models.items()} if stage1_models else None
    return train_joint_folds(
        [inputs], spec, params, device, bags=bags, stage1_models=models, progress=progress
    )[0]


class _JointTask:
    """The stacked task of a no-detach method: K folds' CLAM encoders, projectors and fusion heads
    trained side by side with Eq. 12 by :func:`haf.runtime.fit.fit_stacked`."""

    def __init__(
        self,
        inputs: list[FoldInputs],
        spec: MethodSpec,
        settings: dict[str, Any],
        stores: dict[str, Any],
        device: torch.device,
        stage1_models: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        self.inputs, self.spec, self.device = inputs, spec, device
        self.stage1_models = stage1_models or {}
        self.stage1, self.stage2, self.stage3 = settings["stage1"], settings["stage2"], settings["stage3"]
        self.members = Members([fold_seed(self.stage3.seed, i.fold) for i in inputs], device)
        seed_everything(self.members.seeds[0])
        self.tensors = StackedFoldTensors.from_inputs(inputs, device)
        self.train_rows = [training_rows(i, "train", spec.task_loss) for i in inputs]
        self.val_rows = [training_rows(i, "val", spec.task_loss) for i in inputs]
        self.val_index, self.val_valid = pad_rows(self.val_rows, device)
        self.val_counts = [len(r) for r in self.val_rows]  # fit_stacked warns below min_val_patients
        for inp, tr, va in zip(inputs, self.train_rows, self.val_rows, strict=True):
            log_cohort(spec, inp, tr, va)
        self.missing = [
            check_training_coverage(spec, i, r) for i, r in zip(inputs, self.train_rows, strict=True)
        ]
        layers = Layers(self.members)
        k = len(inputs)
        pathology = JointPathology(stores, self.stage1, layers)
        if spec.warm_start:  # after the seeded init, so projectors and head start as in init: scratch
            pathology.load_stage1(self.stage1_models)
        dims = {m: self.tensors.widths[m] for m in spec.modalities}
        for pm in stores:
            dims[pm] = [self.stage1.d1] * k
        bank = ProjectorBank(dims, spec.modalities, self.stage2.hidden, self.stage2.d_out, layers)
        fusion = FusionModel(bank, self.stage3.hidden, self.stage3.dropout, slot_index(spec), layers)
        self.model = nn.ModuleDict({"pathology": pathology, "fusion": fusion}).to(device)
        self.pathology, self.fusion = pathology, fusion
        self.components: list[list[dict[str, float]]] = [[] for _ in inputs]

    def _embed(
        self, rows: torch.Tensor, valid: torch.Tensor, z: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, present = self.tensors.rows(rows, valid)
        for pm, value in z.items():
            j = MODALITIES.index(pm)
            x[pm] = value * present[..., j : j + 1].float()
        mask = self.fusion.slots(present)
        return self.fusion.embed(x, mask), mask

    def _alignment(self, u: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(K,) alignment losses, each on its member's own rows (the loss is defined on a set)."""
        zero = u.sum(dim=(1, 2, 3)) * 0.0
        if self.spec.align == "none":
            return zero
        active = set(self.members.active_ids())
        terms = []
        for k in range(u.shape[0]):
            n = int(valid[k].sum())
            if k not in active or n == 0:
                terms.append(zero[k])
                continue
            terms.append(alignment_loss(u[k, :n], mask[k, :n], self.spec.align, self.stage2).loss)
        return torch.stack(terms)

    def train_epoch(self, epoch: int, running: np.ndarray, trainer: StackedTrainer) -> np.ndarray:
        if epoch == 0:
            for k, missing in enumerate(self.missing):
                for m in missing:
                    trainer.flat.freeze(k, self.fusion.projectors.proj[m])
        k_members = self.members.k
        total, steps = np.zeros(k_members), np.zeros(k_members)
        sums = [dict.fromkeys(("img", "align", "task", "reduced", "mofe"), 0.0) for _ in range(k_members)]
        for batch in stacked_epoch(
            self.members, self.train_rows, self.stage3.batch_size, running, self.device
        ):
            self.members.set_active(batch.active)
            rows_np, valid_np = batch.rows.cpu().numpy(), batch.valid.cpu().numpy()
            pids = [self.inputs[k].patient_id[rows_np[k, valid_np[k]]].tolist() for k in range(k_members)]
            targets = self.tensors.targets(batch.rows)
            label = torch.where(
                batch.valid, targets["label"], torch.full_like(targets["label"], float("nan"))
            )
            z, l_img = self.pathology.encode_step(
                pids, label, batch.rows.shape[1], self.device, self.members.rngs
            )
            u, mask = self._embed(batch.rows, batch.valid, z)
            l_align = self._alignment(u, mask, batch.valid)
            l_fusion, parts = stacked_fusion_loss(
                self.fusion.head, u, mask, targets, batch.valid,
                kind=self.spec.task_loss, drop=self.spec.drop, lambda_mofe=self.stage3.lambda_mofe,
                members=self.members, reduced_draw=self.stage3.reduced_draw,
            )  # fmt: skip
            loss = l_img + l_align + l_fusion
            trainer.backward_step(loss, batch.active)
            act = batch.active.numpy()
            total += loss.detach().cpu().numpy() * act
            steps += act
            img, align = l_img.detach().cpu().numpy(), l_align.detach().cpu().numpy()
            for i in np.flatnonzero(act):
                sums[i]["img"] += float(img[i])
                sums[i]["align"] += float(align[i])
                for key, value in parts.items():
                    sums[i][key] += float(value[i])
        record_epoch_means(self.components, sums, steps, running, epoch)
        return total / np.maximum(steps, 1)

    def validate(self, running: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k_members = self.members.k
        score, loss = np.full(k_members, np.nan), np.full(k_members, np.nan)
        if self.val_index.shape[1] == 0:
            return score, loss
        ids = [
            self.inputs[k].patient_id[self.val_rows[k]].tolist() if running[k] else []
            for k in range(k_members)
        ]
        z_np = self.pathology.embed_members(ids, self.device)
        width = self.val_index.shape[1]
        z = {}
        for pm, values in z_np.items():
            padded = np.zeros((k_members, width, self.stage1.d1), dtype=np.float32)
            for k, v in enumerate(values):
                padded[k, : len(v)] = v
            z[pm] = torch.as_tensor(padded, device=self.device)
        u, mask = self._embed(self.val_index, self.val_valid, z)
        out = self.fusion.head(u, mask)
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

    def fold_run(self, k: int, history: pd.DataFrame) -> FusionRun:
        """Member k as the plain single-fold models: z of every patient (one bag per pass), predictions'
        inputs, checkpoint."""
        from haf.mil.clam import GatedAttentionMIL
        from haf.mil.train import embed_bags

        inp, s1 = self.inputs[k], self.stage1
        encoders = {}
        z_all = {}
        for pm, stacked in self.pathology.encoders.items():
            store = self.pathology.stores[pm]
            plain = GatedAttentionMIL(store.dim, s1.d1, s1.d2, s1.dropout)
            plain.load_state_dict(member_state_dict(stacked, k))
            plain = plain.to(self.device).eval()
            z_all[pm] = embed_bags(plain, store, inp.patient_id.tolist(), self.device)[0]
            encoders[pm] = plain.cpu().checkpoint(pmod=pm, fold=inp.fold, joint=True)
        final_inputs = with_embeddings(inp, z_all)
        dims = inp.dims()
        for pm in self.pathology.stores:
            dims[pm] = s1.d1
        bank = ProjectorBank(dims, self.spec.modalities, self.stage2.hidden, self.stage2.d_out)
        model = FusionModel(bank, self.stage3.hidden, self.stage3.dropout, slot_index(self.spec))
        model.load_state_dict(member_state_dict(self.fusion, k))
        missing = self.missing[k]
        for m in missing:  # kept at its initialisation (frozen in the stacked run)
            model.projectors.proj[m].requires_grad_(False)
        model = model.to(self.device).eval()
        checkpoint = make_checkpoint(
            spec=self.spec, model=model, fold=inp.fold, untrained=missing,
            extra={
                "encoders": encoders, "encoder_init": self.spec.init, "seed": self.members.seeds[k],
                "encoder_sources": {
                    pm: {key: payload["meta"].get(key) for key in ("pmod", "fold", "seed", "best_epoch")}
                    | {"path": payload["path"]}
                    for pm, models in self.stage1_models.items()
                    for payload in models[k : k + 1]
                },
            },
        )  # fmt: skip
        notes = [f"no training patient has {m}: projector not trained" for m in missing]
        return FusionRun(
            self.spec, model, history, final_inputs, FoldTensors.from_inputs(final_inputs, self.device),
            checkpoint, notes,
        )  # fmt: skip


def train_joint_folds(
    inputs: list[FoldInputs],
    spec: MethodSpec,
    params: dict[str, Any],
    device: torch.device,
    *,
    bags: dict[str, Any],
    stage1_models: dict[str, Sequence[str | Path]] | None = None,
    selection: TrainingSettings | None = None,
    progress: bool = False,
) -> list[FusionRun]:
    """Train a ``detach: false`` method with Eq. 12 on several folds at once (one stacked member per fold).

    ``bags``: pathology modality -> BagStore, shared by every fold (or the rule's ``manifest`` /
    ``tma_index`` paths, opened once with :func:`open_bag_stores`).  ``stage1_models`` (``init: stage1``
    only): pathology modality -> each fold's ``stage1/{pm}/fold_k/model.pt``, in the order of ``inputs``.  Each fold keeps its own seed
    (``fold_seed(stage3.seed, fold)``), data, random draws, optimiser state, schedule, early stopping and
    selected epoch: a fold's result is the same trained with the others or alone.  Fold inputs that
    disagree with the bags stop the job naming the patient before any training.
    """
    settings = {
        "stage1": Stage1Settings.from_config(params["stage1"]),
        "stage2": Stage2Settings.from_config(params["stage2"]),
        "stage3": Stage3Settings.from_config(params["stage3"]),
    }
    if spec.detach:
        raise ValueError(f"{spec.name}: detach true is trained by haf.fusion.train.train_fusion")
    if not inputs:
        raise ValueError(f"{spec.name}: train_joint_folds needs at least one fold")
    if "manifest" in bags:
        bags = open_bag_stores(bags, settings["stage1"], spec.modalities, device)
    stores = {pm: bags[pm] for pm in PATHOLOGY if pm in spec.modalities}
    if spec.warm_start:
        models = read_stage1_models(stage1_models or {}, inputs, stores, settings["stage1"])
    elif stage1_models:
        raise ValueError(
            f"{spec.name}: init {spec.init!r} starts the CLAM encoders fresh; it takes no Stage 1 models"
        )
    else:
        models = {}
    for k, inp in enumerate(inputs):
        check_bags(inp, stores)
        start = "from scratch"
        if spec.warm_start:
            start = "from Stage 1: " + ", ".join(
                f"{pm} {m[k]['path']} (best epoch {m[k]['meta'].get('best_epoch')})"
                for pm, m in models.items()
            )
        log.info(
            "%s fold %d: joint training (Eq. 12) of CLAM encoders for %s (%s), projectors "
            "(align %s) and the fusion MLP (drop %s)",
            spec.name,
            inp.fold,
            ", ".join(stores) or "no pathology modality",
            start,
            spec.align,
            spec.drop,
        )
    task = _JointTask(inputs, spec, settings, stores, device, stage1_models=models)
    names = [f"{spec.name} fold {i.fold}" for i in inputs]
    histories = fit_stacked(
        task, settings["stage3"].train, names=names, selection=selection, progress=progress
    )
    runs = []
    for k in range(len(inputs)):
        history = histories[k]
        if task.components[k]:
            history = history.merge(pd.DataFrame(task.components[k]), on="epoch", how="left")
        history.insert(0, "method", spec.name)
        runs.append(task.fold_run(k, history))
    return runs
