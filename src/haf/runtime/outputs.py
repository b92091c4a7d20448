"""The four outputs every per-fold method job writes: predictions, masked predictions, train log, model.

Fusion methods (Stage 3) and comparators train differently but predict through the same
``(x, present) -> score`` call and write the same four files (``model.pt``, ``predictions.tsv``,
``masked.tsv.gz``, ``train_log.tsv``).  Keeping that here means a masked evaluation or a prediction
file cannot differ between methods by accident.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from haf.artifacts.checkpoints import save_checkpoint
from haf.artifacts.fold_inputs import FoldInputs
from haf.artifacts.masked import write_masked
from haf.artifacts.predictions import make_predictions, write_predictions
from haf.artifacts.train_log import write_train_log
from haf.eval.masking import masked_prediction_table, masking_protocols
from haf.runtime.tensors import FoldTensors, ScoreFn, predict_scores
from haf.settings import EvaluationSettings

log = logging.getLogger(__name__)


def write_method_outputs(
    outputs: dict[str, str | Path],
    *,
    method: str,
    seed: int,
    inputs: FoldInputs,
    tensors: FoldTensors,
    score_fn: ScoreFn,
    task_loss: str,
    evaluation: EvaluationSettings | dict[str, Any],
    history: pd.DataFrame,
    checkpoint: dict[str, Any],
) -> pd.DataFrame:
    """Predict val and test, run the masked evaluation on test, write the four outputs; return predictions."""
    evaluation = EvaluationSettings.from_config(evaluation)

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
        seed=evaluation.mask_seed,
        protocols=masking_protocols(evaluation),
        n_repeats=evaluation.repeats,
        batched=True,
    )
    write_masked(outputs["masked"], masked)
    write_train_log(outputs["train_log"], history)
    save_checkpoint(outputs["model"], checkpoint)
    log.info(
        "%s fold %d: wrote %d val/test predictions and %d masked predictions",
        method,
        inputs.fold,
        len(predictions),
        len(masked),
    )
    return predictions
