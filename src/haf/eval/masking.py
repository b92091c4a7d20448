"""Test-time modality masking, identical for every method of a fold.

Masks depend only on (seed, fold, scenario, p, repeat) and the test patients' presence mask,
never on the method, so every method is scored on the same masked inputs.  Each eligible observed
modality is dropped independently with probability ``p``; a patient left with no modality gets one
of the modalities just dropped back, chosen uniformly (so at least one observed modality is kept).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from haf.modalities import MODALITIES, PATHOLOGY, TABULAR

SCENARIOS: dict[str, tuple[str, ...]] = {
    "dropout": MODALITIES,  # Fig. 2 of the HAF paper: every modality dropped independently
    "pathology": PATHOLOGY,  # PARACHUTE: the pathology group goes missing
    "tabular": TABULAR,  # PARACHUTE: the tabular group goes missing
    "mixed": MODALITIES,  # PARACHUTE: both groups, same probability
}
"""The masking-scenario registry: scenario -> the modalities it may drop (``evaluation.parachute_scenarios``
chooses among the PARACHUTE ones; the order is part of each mask's seed, so append, never reorder)."""
_SCENARIO_ID = {name: i for i, name in enumerate(SCENARIOS)}
PARACHUTE_SCENARIOS: tuple[str, ...] = tuple(s for s in SCENARIOS if s != "dropout")

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
"""Maps a (n_test, 7) presence mask to (risk, prob or None) for the test patients."""


def draw_masks(
    present: np.ndarray, p: float, n_repeats: int, scenario: str, seed: int, fold: int
) -> np.ndarray:
    """Return (n_repeats, n, 7) presence masks: ``present`` with eligible modalities dropped at rate ``p``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown masking scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop probability must be in [0, 1), got {p}")
    present = np.asarray(present, dtype=bool)
    if present.ndim != 2 or present.shape[1] != len(MODALITIES):
        raise ValueError(f"present must have shape (n, {len(MODALITIES)}), got {present.shape}")
    if (~present.any(axis=1)).any():
        raise ValueError("a patient with no observed modality cannot be masked")
    eligible = np.array([m in SCENARIOS[scenario] for m in MODALITIES])
    rng = np.random.default_rng(
        np.random.SeedSequence([seed, fold, _SCENARIO_ID[scenario], round(p * 10_000)])
    )
    n = present.shape[0]
    masks = np.empty((n_repeats, n, len(MODALITIES)), dtype=bool)
    for r in range(n_repeats):
        drop = (rng.random(present.shape) < p) & present & eligible
        kept = present & ~drop
        empty = np.flatnonzero(~kept.any(axis=1))
        for i in empty:
            candidates = np.flatnonzero(drop[i])
            kept[i, rng.choice(candidates)] = True
        masks[r] = kept
    return masks


def masked_prediction_table(
    predict: Predictor,
    present_test: np.ndarray,
    patient_id: Sequence[str],
    *,
    method: str,
    fold: int,
    seed: int,
    protocols: dict[str, Sequence[float]],
    n_repeats: int,
    batched: bool = False,
) -> pd.DataFrame:
    """Run ``predict`` under every (scenario, p, repeat) mask; one row per patient and mask.

    ``protocols`` maps scenario -> drop probabilities, e.g. ``{"dropout": [0, .1, ..., .9],
    "pathology": [.05, .15, .3], ...}``.  p = 0 is evaluated once (repeat 0): it has no randomness.
    With ``batched``, ``predict`` is called once per (scenario, p) with the repeats stacked
    repeat-major, a (repeats * n, 7) mask (row ``r * n + i`` = patient ``i`` under repeat ``r``):
    one large forward pass instead of many small ones.
    """
    frames = []
    ids = np.asarray(patient_id, dtype=object)
    for scenario, probabilities in protocols.items():
        for p in probabilities:
            repeats = 1 if p == 0 else n_repeats
            masks = draw_masks(present_test, float(p), repeats, scenario, seed, fold)
            if batched:
                n = len(ids)
                risk_all, prob_all = predict(masks.reshape(repeats * n, len(MODALITIES)))
                risk_all = np.asarray(risk_all, dtype=float).reshape(repeats, n)
                prob_all = None if prob_all is None else np.asarray(prob_all, dtype=float).reshape(repeats, n)
            for r in range(repeats):
                if batched:
                    risk, prob = risk_all[r], None if prob_all is None else prob_all[r]
                else:
                    risk, prob = predict(masks[r])
                frames.append(
                    pd.DataFrame(
                        {
                            "method": method,
                            "fold": fold,
                            "scenario": scenario,
                            "p": float(p),
                            "repeat": r,
                            "patient_id": ids,
                            "n_present": masks[r].sum(axis=1),
                            "risk": np.asarray(risk, dtype=float),
                            "prob": np.full(len(ids), np.nan)
                            if prob is None
                            else np.asarray(prob, dtype=float),
                        }
                    )
                )
    return pd.concat(frames, ignore_index=True)


def masking_protocols(evaluation: Any) -> dict[str, list[float]]:
    """Fig. 2's dropout grid and the PARACHUTE group scenarios' probabilities, from the evaluation settings."""
    from haf.settings import EvaluationSettings

    ev = EvaluationSettings.from_config(evaluation)
    chosen = {"dropout", *ev.parachute_scenarios}
    return {s: list(ev.dropout_p if s == "dropout" else ev.parachute_p) for s in SCENARIOS if s in chosen}
