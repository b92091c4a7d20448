"""Fake evaluation inputs in the exact contract formats, for tests and for trying the evaluation rules.

Writes what the evaluation rules read (docs/ARCHITECTURE.md): ``cohort/folds.tsv``,
``cohort/targets.tsv``, per method and fold ``predictions.tsv`` (through
:func:`haf.artifacts.predictions.make_predictions`) and ``masked.tsv.gz`` (through
:func:`haf.eval.masking.masked_prediction_table`), and ``stage2/ga/fold_k/aligned.npz``.  Nothing here
is a model: each method's risk is a noisy copy of a latent patient risk that also drives survival,
with a per-method signal strength, so a better method is known in advance.

Knobs that make a claim's answer known by construction (docs/evaluation.md, claims table):

* ``strengths``: a method's signal strength (its risk = strength * z + modality noise, averaged over
  the modalities it is given).
* ``behaviours``: how a method's risk reacts to test-time masking: ``mean`` (default: the mean over the
  kept modalities, so dropping modalities adds noise), ``robust`` (masking changes nothing: a flat
  Fig. 2 curve, and all modalities are never worse than fewer), ``fragile`` (the signal sits in the
  first modality only: the AUC falls as it gets dropped).
* ``copies``: method -> method whose predictions it repeats exactly (the same noise and strength).
* ``geometry``: the ``aligned.npz`` embeddings: ``aligned`` (after = a shared patient vector + noise,
  before = modality offsets + noise), ``none`` (after = before exactly), ``reverse`` (the two swapped).
* ``control``: cohorts like the demo generator's controls (``demo.control``): ``no_signal`` (every
  strength 0, no shared geometry), ``permuted_labels`` (survival outcomes permuted across patients
  after the risks are drawn).
* ``repeats``: CV repeats (each with its own seeded split); ``identical_repeats``: every repeat a copy
  of repeat 0 (same split, same predictions and masks), which must give repeat 0's numbers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from haf.artifacts.aligned import write_aligned
from haf.artifacts.folds import write_folds
from haf.artifacts.masked import read_masked, write_masked
from haf.artifacts.predictions import make_predictions, read_predictions, write_predictions
from haf.artifacts.targets import write_targets
from haf.eval.masking import masked_prediction_table, masking_protocols
from haf.modalities import MODALITIES

BEHAVIOURS = ("mean", "robust", "fragile")
GEOMETRIES = ("aligned", "none", "reverse")
CONTROLS = ("none", "no_signal", "permuted_labels")


def _split_rows(rng: np.random.Generator, ids: np.ndarray, k: int, repeat: int) -> list[dict]:
    n = len(ids)
    test_fold = rng.permutation(np.arange(n) % k)
    rows = []
    for fold in range(k):
        rest = np.flatnonzero(test_fold != fold)
        val = set(rng.choice(rest, size=max(4, len(rest) // 6), replace=False).tolist())
        for i in range(n):
            part = "test" if test_fold[i] == fold else ("val" if i in val else "train")
            rows.append(dict(patient_id=ids[i], repeat=repeat, fold=repeat * k + fold, part=part))
    return rows


def fake_cohort(
    n: int,
    k: int,
    seed: int = 0,
    horizon: float = 1825.0,
    repeats: int = 1,
    identical_repeats: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray]:
    """(targets, folds, latent risk z, presence (n, 7)) for ``n`` patients in ``repeats`` x ``k`` folds."""
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
    rows = _split_rows(rng, ids, k, 0)
    present = rng.random((n, len(MODALITIES))) < 0.8
    present[np.arange(n), rng.integers(0, len(MODALITIES), size=n)] = True
    for r in range(1, repeats):
        if identical_repeats:
            rows += [dict(row, repeat=r, fold=row["fold"] + r * k) for row in rows if row["repeat"] == 0]
        else:
            rows += _split_rows(np.random.default_rng([seed, 1000 + r]), ids, k, r)
    return targets, pd.DataFrame(rows), z, present


def _risk(
    z: np.ndarray, noise: np.ndarray, strength: float, mask: np.ndarray, behaviour: str = "mean"
) -> np.ndarray:
    """Risk under a presence mask (``behaviour``: see the module docstring)."""
    if behaviour == "fragile":
        rest = (noise * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
        return strength * z * mask[:, 0] + rest
    contrib = strength * z[:, None] + noise
    return (contrib * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)


def _aligned_arrays(
    rng: np.random.Generator, n: int, present: np.ndarray, geometry: str
) -> tuple[np.ndarray, np.ndarray]:
    shared = rng.normal(size=(n, 128))
    before = np.zeros((n, len(MODALITIES), 128))
    after = np.zeros((n, len(MODALITIES), 128))
    for j in range(len(MODALITIES)):
        before[:, j] = (rng.normal(size=(n, 128)) + 4 * rng.normal(size=128)) * present[:, [j]]
        after[:, j] = (shared + 0.3 * rng.normal(size=(n, 128))) * present[:, [j]]
    if geometry == "none":
        after = before.copy()
    elif geometry == "reverse":
        before, after = after, before
    return before, after


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
    repeats: int = 1,
    identical_repeats: bool = False,
    behaviours: dict[str, str] | None = None,
    copies: dict[str, str] | None = None,
    geometry: str = "aligned",
    control: str = "none",
) -> dict[str, Any]:
    """Write a results tree under ``root`` for ``methods`` (name -> declaration with family/task_loss)."""
    root = Path(root)
    from fakes.config import load_config

    # a partial section gets the schema's defaults for the rest, as Snakemake's validation would
    given = {"dropout_p": [0.0, 0.5], "repeats": 3} if evaluation is None else evaluation
    evaluation = load_config({"evaluation": dict(given)})["evaluation"]
    if control not in CONTROLS or geometry not in GEOMETRIES:
        raise ValueError(f"control {control!r} / geometry {geometry!r}: expected {CONTROLS} / {GEOMETRIES}")
    behaviours = behaviours or {}
    copies = copies or {}
    bad = {m: b for m, b in behaviours.items() if b not in BEHAVIOURS}
    if bad:
        raise ValueError(f"behaviours {bad}: expected one of {BEHAVIOURS}")
    targets, folds, z, present = fake_cohort(
        n, k, seed, repeats=1 if identical_repeats else repeats, identical_repeats=False
    )
    if control == "permuted_labels":
        perm = np.random.default_rng([seed, 77]).permutation(n)
        for column in ("time", "event", "label", "label_reason"):
            targets[column] = targets[column].to_numpy()[perm]
    if control == "no_signal":
        geometry = "none"
    (root / "cohort").mkdir(parents=True, exist_ok=True)
    write_targets(root / "cohort" / "targets.tsv", targets)
    rng = np.random.default_rng(seed + 1)
    strengths = strengths or {}
    noises: dict[str, np.ndarray] = {}
    fold_ids = sorted(folds["fold"].unique())
    for name, decl in methods.items():
        source = copies.get(name, name)
        strength = 0.0 if control == "no_signal" else strengths.get(source, 1.0)
        behaviour = behaviours.get(source, "mean")
        if source in noises:
            noise = noises[source]
        else:
            noise = noises[source] = rng.normal(size=(n, len(MODALITIES)))
        if source != name and source not in methods:
            raise ValueError(f"copies: {name} copies {source}, which is not among the methods")
        cox = decl.get("task_loss", "bce") == "cox" or decl["family"] == "parachute"
        for fold in fold_ids:
            part = folds[folds["fold"] == fold].set_index("patient_id").loc[targets["patient_id"], "part"]
            idx = np.flatnonzero(part.isin(["val", "test"]).to_numpy())
            risk = _risk(z, noise, strength, present, behaviour)[idx]
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
            out = _method_dir(root, name, decl, fold)
            write_predictions(out / "predictions.tsv", frame)
            if decl["family"] == "clam" or not with_masked:
                continue
            test = np.flatnonzero(part.to_numpy() == "test")

            def predict(
                mask: np.ndarray, test=test, noise=noise, strength=strength, cox=cox, behaviour=behaviour
            ):
                used = present[test] if behaviour == "robust" else mask
                r = _risk(z[test], noise[test], strength, used, behaviour)
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
    for fold in fold_ids:
        part = folds[folds["fold"] == fold].set_index("patient_id").loc[targets["patient_id"], "part"]
        before, after = _aligned_arrays(rng, n, present, geometry)
        write_aligned(
            root / "stage2" / "ga" / f"fold_{fold}" / "aligned.npz",
            patient_id=targets["patient_id"].to_numpy(),
            part=part.to_numpy(),
            present=present,
            trained=list(MODALITIES),
            aligned=after,
            before=before,
        )
    if identical_repeats and repeats > 1:
        folds = _repeat_identically(root, methods, folds, k, repeats)
    write_folds(root / "cohort" / "folds.tsv", folds)
    return dict(targets=targets, folds=folds, z=z, present=present)


def _method_dir(root: Path, name: str, decl: dict[str, Any], fold: int) -> Path:
    if decl["family"] == "clam":
        return root / "stage1" / decl["pathology_model"] / f"fold_{fold}"
    return root / "methods" / name / f"fold_{fold}"


def _repeat_identically(
    root: Path, methods: dict[str, dict[str, Any]], folds: pd.DataFrame, k: int, repeats: int
) -> pd.DataFrame:
    """Repeats 1 .. R-1 as copies of repeat 0: folds, predictions, masked tables, aligned embeddings."""
    base = folds[folds["repeat"] == 0]
    out = [base]
    for r in range(1, repeats):
        out.append(base.assign(repeat=r, fold=base["fold"] + r * k))
        for fold in range(k):
            new = fold + r * k
            for name, decl in methods.items():
                src, dst = _method_dir(root, name, decl, fold), _method_dir(root, name, decl, new)
                write_predictions(
                    dst / "predictions.tsv", read_predictions(src / "predictions.tsv").assign(fold=new)
                )
                if (src / "masked.tsv.gz").exists():
                    write_masked(dst / "masked.tsv.gz", read_masked(src / "masked.tsv.gz").assign(fold=new))
            aligned = root / "stage2" / "ga"
            (aligned / f"fold_{new}").mkdir(parents=True, exist_ok=True)
            shutil.copy(aligned / f"fold_{fold}" / "aligned.npz", aligned / f"fold_{new}" / "aligned.npz")
    return pd.concat(out, ignore_index=True)


def write_fake_attention(
    root: str | Path,
    folds: pd.DataFrame,
    fold: int,
    *,
    pmods: tuple[str, ...] = ("tma", "wsi"),
    seed: int = 0,
    core_px: int = 96,
    tile: int = 32,
    without_image: tuple[str, ...] = (),
) -> dict[str, Path]:
    """Stage 1 ``attention.h5`` of fold ``fold`` (every patient of the fold) per pathology model in ``pmods``.

    TMA: two core PNGs per patient under ``root/fake_cores`` (``core_px`` square, pink noise), tiles of
    ``tile`` core pixels on the core's grid (a random 60-100 % of the positions kept), the bag's tiles core
    after core; WSI: 20-60 patches of 256 px at random grid positions.  Attention: a softmax of random
    scores with one planted hot instance; risk: random.  Patients in ``without_image`` get core paths that
    do not exist ('' images).  Returns pmod -> path.
    """
    from PIL import Image

    from haf.artifacts.attention import BagAttention, write_attention

    root = Path(root)
    rng = np.random.default_rng([seed, fold])
    rows = folds[folds["fold"] == fold]
    grid = [(x, y) for y in range(0, core_px - tile + 1, tile) for x in range(0, core_px - tile + 1, tile)]
    out = {}
    for pmod in pmods:
        bags = []
        for pid, part in zip(rows["patient_id"], rows["part"], strict=True):
            if pmod == "tma":
                coords, core, files, images = [], [], [], []
                for c in range(2):
                    keep = rng.permutation(len(grid))[: max(1, int(rng.uniform(0.6, 1.0) * len(grid)))]
                    coords += [grid[i] for i in sorted(keep)]
                    core += [c] * len(keep)
                    path = root / "fake_cores" / f"{pid}_core{c}.png"
                    if pid not in without_image:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        pixels = rng.integers(0, 60, size=(core_px, core_px, 3)) + np.array([180, 120, 170])
                        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
                    files.append(f"cores/{pid}_core{c}.png")
                    images.append(str(path) if pid not in without_image else "")
                n, sources = len(coords), (f"tma/{pid}.h5",)
                extra = dict(core=np.array(core), core_files=tuple(files), core_images=tuple(images))
                size = float(tile)
            else:
                n = int(rng.integers(20, 61))
                coords = (rng.choice(400, size=n, replace=False)[:, None] // np.array([20, 1]) % 20) * 256
                sources, size = (f"wsi/{pid}.h5",), 256.0
                extra = dict(core=np.full(n, -1))
            scores = rng.normal(size=n)
            scores[rng.integers(n)] += 4.0  # one planted hot instance
            attention = np.exp(scores - scores.max())
            bags.append(
                BagAttention(
                    patient_id=str(pid),
                    part=str(part),
                    risk=float(rng.normal()),
                    attention=(attention / attention.sum()).astype(np.float32),
                    coords=np.asarray(coords, dtype=np.int64).reshape(n, 2),
                    source=np.zeros(n, dtype=np.int32),
                    source_files=sources,
                    source_modality=(pmod,),
                    source_patch_size=(size,),
                    **extra,
                )
            )
        out[pmod] = root / "stage1" / pmod / f"fold_{fold}" / "attention.h5"
        write_attention(out[pmod], bags, pmod=pmod, fold=fold)
    return out


def write_fake_job_outputs(root: str | Path, paths: list[str | Path]) -> None:
    """A placeholder in each of ``paths`` (relative to ``root``) that does not exist yet: the outputs of
    training jobs that a rule depends on only for its order (rule ``benchmarks``) or that the report shows
    (a ``.png``: a real 8 x 8 grey image, e.g. Stage 1's ``loss_curve.png``)."""
    from PIL import Image

    for path in paths:
        path = Path(root) / path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".png":
                Image.new("RGB", (8, 8), (128, 128, 128)).save(path)
            else:
                path.write_text("placeholder: a fake training job's output\n")


def write_fake_metric_tables(
    root: str | Path, methods: list[str], *, in_table1: list[str] | None = None, seed: int = 0
) -> tuple[Path, Path]:
    """``table1.csv`` and ``survival_metrics.csv`` under ``root`` with random values in every column
    ``metrics.json`` reports, through the tables' own writer (6 significant digits), plus a formatted
    column it does not.  ``in_table1``: the methods of Table 1 (default: all); the integrated Brier
    score is NaN for every method but the last (the binary methods' undefined IBS)."""
    from haf.eval.run_metrics import BINARY_FIELDS, SURVIVAL_FIELDS
    from haf.eval.tables import write_csv

    root = Path(root)
    rng = np.random.default_rng(seed)
    first = list(methods if in_table1 is None else in_table1)
    binary = pd.DataFrame({f: rng.uniform(0.4, 0.9, len(first)) for f in BINARY_FIELDS})
    for f in ("n_test", "n_labelled", "n_label_positive", "n_events", "n_boot"):
        binary[f] = rng.integers(10, 200, len(first))
    binary["threshold_rule"] = "fixed"
    binary.insert(0, "method", first)
    binary.insert(0, "group", [f"group of {m}" for m in first])
    binary["auc_ci"] = "0.7 [0.6, 0.8]"
    survival = pd.DataFrame({f: rng.uniform(0.4, 0.9, len(methods)) for f in SURVIVAL_FIELDS})
    for f in ("n", "n_events", "n_boot"):
        survival[f] = rng.integers(10, 200, len(methods))
    survival.insert(0, "method", list(methods))
    survival["ibs_status"] = ["binary method: no survival curve"] * (len(methods) - 1) + ["ok"]
    for f in ("ibs_pooled", "ibs_ci_low", "ibs_ci_high"):
        survival.loc[: len(methods) - 2, f] = np.nan
    paths = (root / "tables" / "table1.csv", root / "tables" / "survival_metrics.csv")
    write_csv(paths[0], binary)
    write_csv(paths[1], survival)
    return paths


def write_fake_train_logs(root: str | Path, seed: int = 0, max_epochs: int = 12) -> dict[Path, int]:
    """A ``train_log.tsv`` beside every ``predictions.tsv`` (Stage 1, methods) and ``aligned.npz`` (Stage 2)
    under ``root`` that has none: a seeded number of epochs and a seeded kept epoch among them. Returns
    each written log's kept epoch."""
    from haf.artifacts.train_log import write_train_log

    root = Path(root)
    rng = np.random.default_rng(seed)
    dirs = sorted(
        {p.parent for pattern in ("**/predictions.tsv", "**/aligned.npz") for p in root.glob(pattern)}
    )
    kept = {}
    for d in dirs:
        path = d / "train_log.tsv"
        if path.exists():
            continue
        n = int(rng.integers(2, max_epochs + 1))
        best = int(rng.integers(0, n))
        history = pd.DataFrame(
            dict(
                epoch=np.arange(n),
                train_loss=np.linspace(1.0, 0.5, n),
                val_loss=np.linspace(0.9, 0.6, n),
                val_score=np.linspace(0.5, 0.7, n),
                lr=1e-4,
                best=np.arange(n) == best,
            )
        )
        write_train_log(path, history)
        kept[path] = best
    return kept
