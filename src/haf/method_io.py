"""What every per-fold method job shares: tensors from fold inputs, batched prediction, outputs.

Fusion methods (Stage 3) and comparators train differently but read the same :class:`FoldInputs`,
predict through the same ``(x, present) -> score`` call and write the same four outputs
(``model.pt``, ``predictions.tsv``, ``masked.tsv.gz``, ``train_log.tsv``).  Keeping that here means a
masked evaluation or a prediction file cannot differ between methods by accident.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from haf.data.fold_inputs import FoldInputs
from haf.eval.masking import SCENARIOS, masked_prediction_table
from haf.io_utils import atomic_path, write_tsv
from haf.modalities import MODALITIES
from haf.predictions import make_predictions, write_predictions

log = logging.getLogger(__name__)

ScoreFn = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
"""``score_fn(x, present) -> (B,)``: a logit (binary methods) or a log hazard (Cox methods)."""


@dataclass
class FoldTensors:
    """Fold inputs as tensors on one device (the cohort is small: everything fits at once)."""

    x: dict[str, torch.Tensor]
    present: torch.Tensor  # (n, 7) bool
    label: torch.Tensor  # (n,) float, NaN = no binary label
    time: torch.Tensor
    event: torch.Tensor
    device: torch.device

    @classmethod
    def from_inputs(cls, inputs: FoldInputs, device: torch.device) -> FoldTensors:
        return cls(
            x={
                m: torch.as_tensor(inputs.features[m], dtype=torch.float32, device=device) for m in MODALITIES
            },
            present=torch.as_tensor(inputs.present, dtype=torch.bool, device=device),
            label=torch.as_tensor(inputs.label, dtype=torch.float32, device=device),
            time=torch.as_tensor(inputs.time, dtype=torch.float32, device=device),
            event=torch.as_tensor(inputs.event, dtype=torch.float32, device=device),
            device=device,
        )

    def rows(
        self, idx: np.ndarray | torch.Tensor, present: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Features and presence of some rows; ``present`` overrides the observed mask (masked evaluation).

        Features of modalities absent under the mask are zeroed, so a masked modality's values can
        never reach a model, whatever the model does with its mask.
        """
        idx_t = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        mask = self.present[idx_t] if present is None else present.to(self.device)
        x = {m: self.x[m][idx_t] * mask[:, j : j + 1].to(torch.float32) for j, m in enumerate(MODALITIES)}
        return x, mask


def training_rows(inputs: FoldInputs, part: str, task_loss: str) -> np.ndarray:
    """Rows of a part that a loss can use: binary losses need a label, Cox losses use everyone."""
    idx = inputs.index(part)
    if task_loss == "bce":
        idx = idx[~np.isnan(inputs.label[idx])]
    return idx


def minibatches(idx: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled minibatches; a trailing batch of one is merged into the previous one (BatchNorm/Cox need 2+)."""
    order = rng.permutation(idx)
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] < 2:
        starts.pop()
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(order)
        yield order[start:end]


@torch.no_grad()
def predict_scores(
    score_fn: ScoreFn,
    tensors: FoldTensors,
    idx: np.ndarray,
    present: np.ndarray | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """Scores for rows ``idx`` (optionally under a presence mask for those rows), in batches."""
    out = []
    for start in range(0, len(idx), batch_size):
        rows = idx[start : start + batch_size]
        mask = (
            None
            if present is None
            else torch.as_tensor(present[start : start + batch_size], dtype=torch.bool)
        )
        x, m = tensors.rows(rows, mask)
        out.append(score_fn(x, m).float().reshape(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def masking_protocols(evaluation: dict[str, Any]) -> dict[str, list[float]]:
    """Fig. 2 dropout grid plus the PARACHUTE group scenarios, from the ``evaluation`` config section."""
    protocols = {"dropout": list(evaluation["dropout_p"])}
    for scenario in SCENARIOS:
        if scenario != "dropout":
            protocols[scenario] = list(evaluation["parachute_p"])
    return protocols


def write_method_outputs(
    outputs: dict[str, str | Path],
    *,
    method: str,
    seed: int,
    inputs: FoldInputs,
    tensors: FoldTensors,
    score_fn: ScoreFn,
    task_loss: str,
    evaluation: dict[str, Any],
    history: pd.DataFrame,
    checkpoint: dict[str, Any],
) -> pd.DataFrame:
    """Predict val and test, run the masked evaluation on test, write the four outputs; return predictions."""

    def to_prob(score: np.ndarray) -> np.ndarray | None:
        return 1.0 / (1.0 + np.exp(-score)) if task_loss == "bce" else None

    idx = np.concatenate([inputs.index("val"), inputs.index("test")])
    scores = predict_scores(score_fn, tensors, idx)
    predictions = make_predictions(
        method=method,
        seed=seed,
        fold=inputs.fold,
        part=inputs.part[idx],
        patient_id=inputs.patient_id[idx],
        risk=scores,
        prob=to_prob(scores),
        label=inputs.label[idx],
        time=inputs.time[idx],
        event=inputs.event[idx],
    )
    write_predictions(outputs["predictions"], predictions)

    test = inputs.index("test")

    def predict_masked(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        # masks arrive stacked repeat-major: row r * n + i is test patient i under repeat r
        score = predict_scores(score_fn, tensors, np.resize(test, len(mask)), present=mask, batch_size=8192)
        return score, to_prob(score)

    masked = masked_prediction_table(
        predict_masked,
        inputs.present[test],
        inputs.patient_id[test],
        method=method,
        fold=inputs.fold,
        seed=int(evaluation["mask_seed"]),
        protocols=masking_protocols(evaluation),
        n_repeats=int(evaluation["repeats"]),
        batched=True,
    )
    write_tsv(outputs["masked"], masked, float_format="%.6g")
    write_tsv(outputs["train_log"], history, float_format="%.6g")
    with atomic_path(outputs["model"], ".pt") as tmp:
        torch.save(checkpoint, tmp)
    log.info(
        "%s fold %d: wrote %d val/test predictions and %d masked predictions",
        method,
        inputs.fold,
        len(predictions),
        len(masked),
    )
    return predictions
