"""Test-time modality masking, identical for every method of a fold.

Masks depend only on (seed, fold, scenario, p, repeat) and the test patients' presence mask,
never on the method, so every method is scored on the same masked inputs.

A scenario is a list of *units*, each a set of modalities that goes missing together
(:data:`SCENARIOS`).  For every patient and unit one uniform number is drawn; a unit the patient has
(any of its modalities observed) is dropped, all its observed modalities at once, when the number is
below ``p``.  A patient left with no modality gets one of the units just dropped back, chosen uniformly
(so at least one observed modality is kept):

* ``dropout`` (Fig. 2 of the HAF paper): seven units, one per modality; each observed modality is
  dropped independently with probability p.
* ``pathology`` / ``tabular`` (PARACHUTE's "WSI-missing" / "Radiology Image-missing", one group retained):
  one unit, the whole group ({wsi, tma} or {cell, clin, path, blood, icd}); a patient who has the group
  and some modality outside it loses the whole group with probability exactly p; a patient with nothing
  outside the group always keeps it.
* ``mixed`` (PARACHUTE's "Mixed-missing: both modalities are randomly masked with the same probability
  applied in alternation"): two units, the pathology and the tabular group, each dropped independently
  with probability p; a patient drawn to lose both gets one group back (uniformly), so a patient with
  both groups loses a given group with probability p (1 - p) + p^2 / 2 = p - p^2 / 2 and is never left
  without both.  PARACHUTE's two modalities (radiology, WSI) map onto our two groups; the masking is per
  group, not per modality.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from haf.modalities import MODALITIES, PATHOLOGY, TABULAR

SCENARIOS: dict[str, tuple[tuple[str, ...], ...]] = {
    "dropout": tuple((m,) for m in MODALITIES),  # Fig. 2 of the HAF paper: every modality on its own
    "pathology": (PATHOLOGY,),  # PARACHUTE: the whole pathology group goes missing
    "tabular": (TABULAR,),  # PARACHUTE: the whole tabular (contextual) group goes missing
    "mixed": (PATHOLOGY, TABULAR),  # PARACHUTE: either group, the same probability, never both
}
"""The masking-scenario registry: scenario -> its units (modalities dropped together).
``evaluation.parachute_scenarios`` chooses among the PARACHUTE ones; the order of the scenarios is part
of each mask's seed, so append, never reorder."""
_SCENARIO_ID = {name: i for i, name in enumerate(SCENARIOS)}
PARACHUTE_SCENARIOS: tuple[str, ...] = tuple(s for s in SCENARIOS if s != "dropout")

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
"""Maps a (n_test, 7) presence mask to (risk, prob or None) for the test patients."""


def scenario_units(scenario: str) -> np.ndarray:
    """(n_units, 7) boolean membership of each of the scenario's units (a clear error for an unknown one)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown masking scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    return np.array([[m in unit for m in MODALITIES] for unit in SCENARIOS[scenario]], dtype=bool)


def draw_masks(
    present: np.ndarray, p: float, n_repeats: int, scenario: str, seed: int, fold: int
) -> np.ndarray:
    """Return (n_repeats, n, 7) presence masks: ``present`` with the scenario's units dropped at rate ``p``.

    The random stream is ``default_rng(SeedSequence([seed, fold, scenario index, round(p * 10000)]))``;
    per repeat one uniform per (patient, unit), then one ``choice`` per patient left empty.
    """
    units = scenario_units(scenario)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop probability must be in [0, 1), got {p}")
    present = np.asarray(present, dtype=bool)
    if present.ndim != 2 or present.shape[1] != len(MODALITIES):
        raise ValueError(f"present must have shape (n, {len(MODALITIES)}), got {present.shape}")
    if (~present.any(axis=1)).any():
        raise ValueError("a patient with no observed modality cannot be masked")
    rng = np.random.default_rng(
        np.random.SeedSequence([seed, fold, _SCENARIO_ID[scenario], round(p * 10_000)])
    )
    n = present.shape[0]
    has_unit = (present.astype(np.int64) @ units.T.astype(np.int64)) > 0  # (n, n_units)
    masks = np.empty((n_repeats, n, len(MODALITIES)), dtype=bool)
    for r in range(n_repeats):
        drop = (rng.random(has_unit.shape) < p) & has_unit  # (n, n_units)
        kept = present & ~((drop.astype(np.int64) @ units.astype(np.int64)) > 0)
        for i in np.flatnonzero(~kept.any(axis=1)):
            back = units[rng.choice(np.flatnonzero(drop[i]))]
            kept[i] = present[i] & back
        masks[r] = kept
    return masks


def kept_labels(masks: np.ndarray) -> np.ndarray:
    """Each row's kept modalities as comma-separated keys in :data:`MODALITIES` order (``masked.tsv.gz``)."""
    masks = np.asarray(masks, dtype=bool)
    names = np.asarray(MODALITIES, dtype=object)
    return np.array([",".join(names[row]) for row in masks.reshape(-1, len(MODALITIES))], dtype=object)


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
                            "kept": kept_labels(masks[r]),
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
