"""No-detach ablations (the HAF paper's Table 2): Stages 1-3 trained jointly with Eq. 12.

``L_total = L_WSI + L_TMA + L_align + L_fusion``: the CLAM encoders of the method's pathology
modalities (Eq. 1-3), the projectors with the method's alignment loss (``ga``: Eq. 7; ``clip``: the
CLIP loss; ``none``: no alignment term) and the fusion loss (Eq. 11 with ``drop``, else the task loss)
are optimised together by one Adam optimiser; nothing is detached, so the fusion and alignment
gradients reach the CLAM encoders.

Choices (documented in ``docs/fusion.md``):

* the CLAM encoders start **from scratch** (seeded, the Stage 1 architecture and ``stage1`` sizes), not
  from the fold's Stage 1 weights: this is end-to-end optimisation across all stages as the paper's
  ablation describes, and needs no Stage 1 output as input;
* each step takes a minibatch of ``stage3.batch_size`` patients; their bags form one padded batch per
  pathology modality, packed (only real instances), in size-sorted chunks of ``stage1.batch_bags``
  (subsampled to ``stage1.max_instances`` in training, full in evaluation); the CLAM
  loss uses the patients of the step with a binary label and a bag;
* optimiser, schedule and early stopping as every fusion method (``stage3``), on the validation
  score of the fused prediction;
* after training, every patient's z is recomputed with the trained encoders (full bags, eval mode) and
  predictions and the masked evaluation run from those z, so masked evaluation needs no bags.
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
from haf.fusion.model import FusionModel, fusion_loss, task_loss
from haf.fusion.spec import MethodSpec
from haf.fusion.train import (
    FusionRun,
    check_training_coverage,
    log_cohort,
    make_checkpoint,
    slot_index,
    targets_of,
    validation_score,
)
from haf.modalities import MODALITIES, PATHOLOGY
from haf.runtime.device import autocast
from haf.runtime.fit import fit, make_optimizer
from haf.runtime.seeds import fold_seed, seed_everything
from haf.runtime.tensors import FoldTensors, minibatches, training_rows
from haf.settings import Stage1Settings, Stage2Settings, Stage3Settings

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


class JointPathology(nn.Module):
    """The CLAM encoders (one per pathology modality of the method), trained inside Eq. 12."""

    def __init__(self, stores: dict[str, Any], stage1: Stage1Settings) -> None:
        from haf.mil.clam import GatedAttentionMIL

        super().__init__()
        self.stores = stores
        self.s1 = stage1
        self.encoders = nn.ModuleDict(
            {
                pm: GatedAttentionMIL(store.dim, stage1.d1, stage1.d2, stage1.dropout)
                for pm, store in stores.items()
            }
        )

    def encode_batch(
        self,
        pids: Sequence[str],
        label: torch.Tensor,
        device: torch.device,
        rng: np.random.Generator,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """z of each pathology modality for these patients (zeros without a bag) and the summed CLAM loss.

        The step's bags are sorted by size and encoded in chunks of ``stage1.batch_bags`` (less padding
        than one batch padded to the largest bag); the CLAM loss is the mean over all valid bags of the
        step (label and bag present), as one batch would give.
        """
        from haf.mil.clam import clam_loss

        pids = list(pids)
        chunk = max(1, self.s1.batch_bags)
        cap = self.s1.max_instances
        label = label.reshape(-1)
        z = {}
        loss = torch.zeros((), device=device)
        for pm, encoder in self.encoders.items():
            store = self.stores[pm]
            sizes = np.array([min(store.n_instances(p), cap) for p in pids])
            order = np.argsort(sizes, kind="stable")
            order = order[sizes[order] > 0]  # patients without a bag: z = 0, no loss
            z_pm = torch.zeros(len(pids), encoder.d1, device=device)
            total = torch.zeros((), device=device)
            n_valid = 0
            for start in range(0, len(order), chunk):
                rows = order[start : start + chunk]
                batch = store.batch(
                    [pids[i] for i in rows], max_instances=cap, rng=rng, device=device, packed=True
                )
                with autocast(device):
                    out = encoder(batch.x, batch.mask)
                rows_t = torch.as_tensor(rows, device=device)
                z_pm = z_pm.index_copy(0, rows_t, out.z.float())
                y = label[rows_t]
                valid = int(torch.isfinite(y).sum())
                if valid:
                    term = clam_loss(
                        encoder,
                        out,
                        batch.mask,
                        y,
                        bag_weight=self.s1.bag_weight,
                        k_sample=self.s1.k_sample,
                    ).total
                    total = total + term * valid
                    n_valid += valid
            z[pm] = z_pm
            if n_valid:
                loss = loss + total / n_valid
        return z, loss

    @torch.no_grad()
    def embed(self, pids: Sequence[str], device: torch.device) -> dict[str, np.ndarray]:
        """Full-bag z (eval mode) of these patients, in ``pids`` order; zeros for patients without a bag."""
        was_training = self.training
        self.eval()
        budget = self.s1.instance_budget
        where = {p: i for i, p in enumerate(pids)}
        out: dict[str, np.ndarray] = {}
        for pm, encoder in self.encoders.items():
            z = np.zeros((len(pids), encoder.d1), dtype=np.float32)
            for batch in self.stores[pm].batches(
                list(pids),
                batch_bags=self.s1.batch_bags,
                shuffle=False,
                instance_budget=budget,
                device=device,
                packed=True,
            ):
                with autocast(device):
                    res = encoder(batch.x, batch.mask)
                z[[where[p] for p in batch.patient_id]] = res.z.float().cpu().numpy()
            out[pm] = z
        self.train(was_training)
        return out


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
    progress: bool = False,
) -> FusionRun:
    """Train a ``detach: false`` method with Eq. 12 on one fold; ``bags``: pathology modality -> BagStore
    (or the rule's ``manifest``/``tma_index`` paths, opened with :func:`open_bag_stores`)."""
    stage1 = Stage1Settings.from_config(params["stage1"])
    stage2 = Stage2Settings.from_config(params["stage2"])
    stage3 = Stage3Settings.from_config(params["stage3"])
    if spec.detach:
        raise ValueError(f"{spec.name}: detach true is trained by haf.fusion.train.train_fusion")
    if "manifest" in bags:
        bags = open_bag_stores(bags, stage1, spec.modalities, device)
    stores = {pm: bags[pm] for pm in PATHOLOGY if pm in spec.modalities}
    check_bags(inputs, stores)
    seed = fold_seed(stage3.seed, inputs.fold)
    rng = seed_everything(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    tensors = FoldTensors.from_inputs(inputs, device)
    train_idx = training_rows(inputs, "train", spec.task_loss)
    val_idx = training_rows(inputs, "val", spec.task_loss)
    log_cohort(spec, inputs, train_idx, val_idx)
    missing = check_training_coverage(spec, inputs, train_idx)

    pathology = JointPathology(stores, stage1).to(device)
    dims = inputs.dims()
    for pm in stores:
        dims[pm] = stage1.d1
    bank = ProjectorBank(dims, spec.modalities, stage2.hidden, stage2.d_out)
    for m in missing:
        bank.proj[m].requires_grad_(False)
    model = FusionModel(bank, stage3.hidden, stage3.dropout, slot_index(spec)).to(device)
    log.info(
        "%s fold %d: joint training (Eq. 12) of CLAM encoders for %s (from scratch), projectors (align %s) "
        "and the fusion MLP (drop %s)",
        spec.name,
        inputs.fold,
        ", ".join(stores) or "no pathology modality",
        spec.align,
        spec.drop,
    )
    cfg = stage3.train
    optimizer = make_optimizer(list(pathology.parameters()) + list(model.parameters()), cfg)
    batch_size = stage3.batch_size
    lambda_mofe = stage3.lambda_mofe
    components: list[dict[str, float]] = []

    def forward(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        rows_t = torch.as_tensor(rows, device=device)
        x, present = tensors.rows(rows_t)
        pids = inputs.patient_id[rows].tolist()
        z, l_img = pathology.encode_batch(pids, tensors.label[rows_t], device, rng)
        for pm, value in z.items():
            x[pm] = value * present[:, MODALITIES.index(pm) : MODALITIES.index(pm) + 1].float()
        mask = model.slots(present)
        return model.embed(x, mask), mask, l_img, rows_t

    def train_epoch(epoch: int) -> float:
        sums = {"img": 0.0, "align": 0.0, "task": 0.0, "reduced": 0.0, "mofe": 0.0}
        total, n_batches = 0.0, 0
        for batch in minibatches(train_idx, batch_size, rng):
            u, mask, l_img, rows_t = forward(batch)
            l_align = (
                alignment_loss(u, mask, spec.align, stage2).loss if spec.align != "none" else u.sum() * 0.0
            )
            l_fusion, parts = fusion_loss(
                model.head,
                u,
                mask,
                targets_of(tensors, rows_t),
                kind=spec.task_loss,
                drop=spec.drop,
                lambda_mofe=lambda_mofe,
                generator=generator,
            )
            loss = l_img + l_align + l_fusion
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            n_batches += 1
            sums["img"] += float(l_img.detach())
            sums["align"] += float(l_align.detach())
            for key, value in parts.items():
                sums[key] += value
        components.append({"epoch": epoch, **{f"train_{k}": v / max(n_batches, 1) for k, v in sums.items()}})
        return total / max(n_batches, 1)

    val_pids = inputs.patient_id[val_idx].tolist()

    def validate() -> tuple[float, float]:
        if len(val_idx) == 0:
            return float("nan"), float("nan")
        z = pathology.embed(val_pids, device)
        rows_t = torch.as_tensor(val_idx, device=device)
        x, present = tensors.rows(rows_t)
        for pm, value in z.items():
            j = MODALITIES.index(pm)
            x[pm] = torch.as_tensor(value, device=device) * present[:, j : j + 1].float()
        score = model(x, present)
        loss = float(task_loss(score, targets_of(tensors, rows_t), spec.task_loss))
        return validation_score(spec.task_loss, inputs, val_idx, score.cpu().numpy()), loss

    history = fit(
        {"pathology": pathology, "model": model},
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
    pathology.eval()
    model.eval()
    # predictions and the masked evaluation run from z of the jointly trained encoders
    z_all = pathology.embed(inputs.patient_id.tolist(), device)
    final_inputs = with_embeddings(inputs, z_all)
    encoders = {
        pm: enc.cpu().checkpoint(pmod=pm, fold=inputs.fold, joint=True)
        for pm, enc in pathology.encoders.items()
    }
    pathology.to(device)
    checkpoint = make_checkpoint(
        spec, model, inputs.fold, untrained=missing, extra={"encoders": encoders, "encoder_init": "scratch"}
    )
    notes = [f"no training patient has {m}: projector not trained" for m in missing]
    return FusionRun(
        spec, model, history, final_inputs, FoldTensors.from_inputs(final_inputs, device), checkpoint, notes
    )
