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


TOKEN_BATCH_ROWS = 512
"""Rows per forward pass of a token-level model (instance tokens): its attention over ~100 tokens per row
would need gigabytes for the 8192-row batches of the vector models."""


def _distinct_scores(
    score_fn: ScoreFn, tensors: FoldTensors, rows: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Scores of (row, mask) pairs, each distinct pair scored once (a token-level model's forward pass is
    costly and no layer mixes rows, so repeats of a pair give the same score): the masked evaluation's
    repeats draw the same kept set for a patient many times (the demo: 1,718 distinct of 10,820 rows)."""
    key = np.concatenate([rows[:, None], mask.astype(np.int64)], axis=1)
    distinct, inverse = np.unique(key, axis=0, return_inverse=True)
    score = predict_scores(
        score_fn, tensors, distinct[:, 0], present=distinct[:, 1:].astype(bool), batch_size=TOKEN_BATCH_ROWS
    )
    return score[inverse.reshape(-1)]


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
        rows = np.resize(test, len(mask))
        if tensors.tokens is None:
            score = predict_scores(score_fn, tensors, rows, present=mask, batch_size=8192)
        else:
            score = _distinct_scores(score_fn, tensors, rows, mask)
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


def write_fold_result(
    outputs: dict[str, str | Path],
    result: Any,
    *,
    method: str,
    inputs: FoldInputs,
    evaluation: EvaluationSettings | dict[str, Any],
) -> pd.DataFrame:
    """:func:`write_method_outputs` of one trained fold's result: any object with ``seed``, ``tensors``,
    ``score_fn``, ``task_loss``, ``history`` and ``checkpoint`` (a comparator's or a scikit-survival fit's)."""
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
