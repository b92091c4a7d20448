"""Fake evaluation inputs in the exact contract formats, for tests and for trying the evaluation rules.

Writes what the evaluation rules read (docs/ARCHITECTURE.md): ``cohort/folds.tsv``,
``cohort/targets.tsv``, per method and fold ``predictions.tsv`` (through
:func:`haf.artifacts.predictions.make_predictions`) and ``masked.tsv.gz`` (through
:func:`haf.eval.masking.masked_prediction_table`), and ``stage2/ga/fold_k/aligned.npz``.  Nothing here
is a model: each method's risk is a noisy copy of a latent patient risk that also drives survival,
with a per-method signal strength, so a better method is known in advance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from haf.artifacts.aligned import write_aligned
from haf.artifacts.folds import write_folds
from haf.artifacts.masked import write_masked
from haf.artifacts.predictions import make_predictions, write_predictions
from haf.artifacts.targets import write_targets
from haf.eval.masking import masked_prediction_table, masking_protocols
from haf.modalities import MODALITIES


def fake_cohort(
    n: int, k: int, seed: int = 0, horizon: float = 1825.0
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """(targets, folds, latent risk z, presence (n, 7)) for ``n`` patients in ``k`` folds."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    death = rng.exponential(2500 * np.exp(-0.8 * z))
    censor = rng.uniform(300, 4000, size=n)
    time = np.minimum(death, censor).round()
    time = np.maximum(time, 1.0)
    event = (death <= censor).astype(int)
    label = np.where(event & (time <= horizon), 1.0, np.where(event | (time >= horizon), 0.0, np.nan))
    ids = np.array([f"{i + 1:03d}" for i in range(n)], dtype=object)
    targets = pd.DataFrame(
        dict(
            patient_id=ids,
            time=time,
            event=event,
            label=label,
            label_reason=np.where(np.isnan(label), "censored_before_horizon", "ok"),
        )
    )
    test_fold = rng.permutation(np.arange(n) % k)
    rows = []
    for fold in range(k):
        rest = np.flatnonzero(test_fold != fold)
        val = set(rng.choice(rest, size=max(4, len(rest) // 6), replace=False).tolist())
        for i in range(n):
            part = "test" if test_fold[i] == fold else ("val" if i in val else "train")
            rows.append(dict(patient_id=ids[i], repeat=0, fold=fold, part=part))
    present = rng.random((n, len(MODALITIES))) < 0.8
    present[np.arange(n), rng.integers(0, len(MODALITIES), size=n)] = True
    return targets, pd.DataFrame(rows), z, present


def _risk(z: np.ndarray, noise: np.ndarray, strength: float, mask: np.ndarray) -> np.ndarray:
    """Risk under a presence mask: mean over present modalities of strength * z + modality noise."""
    contrib = strength * z[:, None] + noise
    return (contrib * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)


def write_fake_results(
    root: str | Path,
    methods: dict[str, dict[str, Any]],
    *,
    n: int = 60,
    k: int = 3,
    seed: int = 0,
    strengths: dict[str, float] | None = None,
    evaluation: dict[str, Any] | None = None,
    with_masked: bool = True,
) -> dict[str, Any]:
    """Write a results tree under ``root`` for ``methods`` (name -> declaration with family/task_loss)."""
    root = Path(root)
    from fakes.config import load_config

    # a partial section gets the schema's defaults for the rest, as Snakemake's validation would
    given = {"dropout_p": [0.0, 0.5], "repeats": 3} if evaluation is None else evaluation
    evaluation = load_config({"evaluation": dict(given)})["evaluation"]
    targets, folds, z, present = fake_cohort(n, k, seed)
    (root / "cohort").mkdir(parents=True, exist_ok=True)
    write_targets(root / "cohort" / "targets.tsv", targets)
    write_folds(root / "cohort" / "folds.tsv", folds)
    rng = np.random.default_rng(seed + 1)
    strengths = strengths or {}
    for name, decl in methods.items():
        strength = strengths.get(name, 1.0)
        noise = rng.normal(size=(n, len(MODALITIES)))
        cox = decl.get("task_loss", "bce") == "cox" or decl["family"] == "parachute"
        for fold in range(k):
            part = folds[folds["fold"] == fold].set_index("patient_id").loc[targets["patient_id"], "part"]
            idx = np.flatnonzero(part.isin(["val", "test"]).to_numpy())
            risk = _risk(z, noise, strength, present)[idx]
            frame = make_predictions(
                method=name,
                seed=0,
                fold=fold,
                part=part.to_numpy()[idx],
                patient_id=targets["patient_id"].to_numpy()[idx],
                risk=risk,
                prob=None if cox else 1 / (1 + np.exp(-risk)),
                label=targets["label"].to_numpy()[idx],
                time=targets["time"].to_numpy()[idx],
                event=targets["event"].to_numpy()[idx],
            )
            if decl["family"] == "clam":
                out = root / "stage1" / decl["pathology_model"] / f"fold_{fold}"
            else:
                out = root / "methods" / name / f"fold_{fold}"
            write_predictions(out / "predictions.tsv", frame)
            if decl["family"] == "clam" or not with_masked:
                continue
            test = np.flatnonzero(part.to_numpy() == "test")

            def predict(mask: np.ndarray, test=test, noise=noise, strength=strength, cox=cox):
                r = _risk(z[test], noise[test], strength, mask)
                return r, None if cox else 1 / (1 + np.exp(-r))

            masked = masked_prediction_table(
                predict,
                present[test],
                targets["patient_id"].to_numpy()[test],
                method=name,
                fold=fold,
                seed=int(evaluation["mask_seed"]),
                protocols=masking_protocols(evaluation),
                n_repeats=int(evaluation["repeats"]),
            )
            write_masked(out / "masked.tsv.gz", masked)
    for fold in range(k):
        part = folds[folds["fold"] == fold].set_index("patient_id").loc[targets["patient_id"], "part"]
        shared = rng.normal(size=(n, 128))
        before = np.zeros((n, len(MODALITIES), 128))
        after = np.zeros((n, len(MODALITIES), 128))
        for j in range(len(MODALITIES)):
            before[:, j] = (rng.normal(size=(n, 128)) + 4 * rng.normal(size=128)) * present[:, [j]]
            after[:, j] = (shared + 0.3 * rng.normal(size=(n, 128))) * present[:, [j]]
        write_aligned(
            root / "stage2" / "ga" / f"fold_{fold}" / "aligned.npz",
            patient_id=targets["patient_id"].to_numpy(),
            part=part.to_numpy(),
            present=present,
            trained=list(MODALITIES),
            aligned=after,
            before=before,
        )
    return dict(targets=targets, folds=folds, z=z, present=present)
