"""DataSplits_DataDictionaries/dataset_split_{in,out,Oropharynx}.json for the demo cohort.

HANCOCK's in/out splits come from a genetic algorithm over the multimodal patient vectors (HANCOCK.md
section 10); the demo uses simple seeded stand-ins with the same format and test size
(``int(0.2 * n)``): ``in`` draws the test patients at random, stratified by survival status;
``out`` takes the most recently diagnosed patients (a temporal shift, ties in seeded order).
``Oropharynx`` is HANCOCK's own rule: test = every oropharynx patient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from haf.demo.common import rng_for


def split_records(
    ids: list[str], sites: list[str], year: np.ndarray, event: np.ndarray, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """The three split files as record lists ``{"patient_id", "dataset": "training"|"test"}``."""
    rng = rng_for(seed, "splits")
    n = len(ids)
    n_test = int(0.2 * n)

    test_in = np.zeros(n, dtype=bool)
    for value in (0, 1):
        members = np.flatnonzero(event == value)
        k = int(round(n_test * len(members) / n)) if n else 0
        test_in[rng.choice(members, size=min(k, len(members)), replace=False)] = True

    tiebreak = rng.random(n)
    order = np.lexsort((tiebreak, -np.asarray(year)))  # newest first
    test_out = np.zeros(n, dtype=bool)
    test_out[order[:n_test]] = True

    test_oro = np.array([s == "Oropharynx" for s in sites])

    def records(test: np.ndarray) -> list[dict[str, Any]]:
        return [
            {"patient_id": pid, "dataset": "test" if t else "training"}
            for pid, t in zip(ids, test, strict=True)
        ]

    return {
        "dataset_split_in.json": records(test_in),
        "dataset_split_out.json": records(test_out),
        "dataset_split_Oropharynx.json": records(test_oro),
    }
