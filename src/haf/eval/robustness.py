"""Metrics under test-time modality masking: Fig. 2 (dropout) and the PARACHUTE protocol (Table 5).

For every method, fold, scenario, drop probability p and repeat, the masked test predictions
(``masked.tsv.gz``) are scored against the patients' outcomes (taken from the same method's
``predictions.tsv`` test part): AUC and accuracy on labelled patients, Harrell's C-index on all.
A point of a curve is the mean over masks within a fold, then the fold mean (and sample SD) within each
cross-validation repeat, averaged over repeats (:mod:`haf.eval.repeats`).
Accuracy uses each fold's threshold from its unmasked validation predictions (haf.eval.binary).

Table 5 (the PARACHUTE paper, section 7): at each p the metric is averaged over the group scenarios
(pathology missing, tabular missing, mixed); Delta(a -> b) = Avg_b - Avg_a and the per-10% slope is
Delta / ((b - a) in percentage points / 10).

PARACHUTE trains a separate model at each p_miss and evaluates it at the same p.  A method's own rows
are one model evaluated at every p; :func:`per_p_protocol` assembles the per-p rows of a base method from
the methods declared ``per_p_of`` it (:func:`haf.methods.per_p_models`): at p, the masked results of the
one trained at p_miss = p, under the method name ``<base>:per_p``.
"""

from __future__ import annotations

import logging
from itertools import combinations

import numpy as np
import pandas as pd

from haf.errors import HafInputError
from haf.eval.binary import Threshold, batched_auc, fold_thresholds
from haf.eval.data import method_predictions
from haf.eval.masking import PARACHUTE_SCENARIOS
from haf.eval.repeats import CV_REPEAT, Repeats, summarise_repeats, with_repeat
from haf.eval.scores import cindex_or_nan

log = logging.getLogger(__name__)


def attach_outcomes(masked: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Add ``label, time, event`` to masked rows from the method's own test predictions."""
    test = predictions.loc[
        predictions["part"] == "test", ["method", "fold", "patient_id", "label", "time", "event"]
    ]
    merged = masked.merge(test, on=["method", "fold", "patient_id"], how="left", validate="many_to_one")
    lost = merged["time"].isna()
    if lost.any():
        row = merged[lost].iloc[0]
        raise HafInputError(
            None,
            f"masked prediction of {row['method']} fold {row['fold']} names patient {row['patient_id']}, "
            "who is not a test patient of that fold's predictions.tsv",
            field="patient_id",
        )
    return merged


def _score_block(
    block: pd.DataFrame, thr: Threshold, with_cindex: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Metrics of every repeat of one (method, fold, scenario, p) block."""
    block = block.sort_values(["repeat", "patient_id"])
    repeats = np.unique(block["repeat"].to_numpy())
    n = len(block) // len(repeats)
    if n * len(repeats) != len(block):
        raise HafInputError(
            None,
            f"masked predictions of {block['method'].iloc[0]} fold {block['fold'].iloc[0]} "
            f"({block['scenario'].iloc[0]}, p={block['p'].iloc[0]}): repeats cover different patients",
        )
    shape = (len(repeats), n)
    ids = block["patient_id"].to_numpy().reshape(shape)
    if not (ids == ids[0]).all():
        raise HafInputError(
            None,
            f"masked predictions of {block['method'].iloc[0]} fold {block['fold'].iloc[0]} "
            f"({block['scenario'].iloc[0]}, p={block['p'].iloc[0]}): repeats cover different patients",
        )
    label = block["label"].to_numpy(dtype=float).reshape(shape)
    risk = block["risk"].to_numpy(dtype=float).reshape(shape)
    decision = (block[thr.column].to_numpy(dtype=float) >= thr.value).astype(float).reshape(shape)
    labelled = ~np.isnan(label[0])
    y = label[:, labelled]
    metrics = {
        "n": np.full(len(repeats), n),
        "n_labelled": np.full(len(repeats), int(labelled.sum())),
        "mean_n_present": block["n_present"].to_numpy(dtype=float).reshape(shape).mean(axis=1),
        "auc": batched_auc(y, risk[:, labelled]),
        "accuracy": (decision[:, labelled] == y).mean(axis=1)
        if labelled.any()
        else np.full(len(repeats), np.nan),
    }
    if with_cindex:
        time = block["time"].to_numpy(dtype=float).reshape(shape)[0]
        event = block["event"].to_numpy(dtype=int).reshape(shape)[0]
        metrics["cindex"] = np.array([cindex_or_nan(time, event, risk[r]) for r in range(len(repeats))])
        metrics["n_events"] = np.full(len(repeats), int(event.sum()))
    return repeats, metrics


def masked_metrics(
    masked: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    rule: str,
    scenarios: tuple[str, ...] | None = None,
    with_cindex: bool = False,
) -> pd.DataFrame:
    """One row per (method, fold, scenario, p, repeat) with n, AUC, accuracy (and Harrell's C)."""
    if scenarios is not None:
        masked = masked[masked["scenario"].isin(scenarios)]
    if masked.empty:
        raise HafInputError(None, f"no masked predictions for scenario(s) {scenarios}")
    data = attach_outcomes(masked, predictions)
    records = []
    for method, mrows in data.groupby("method", sort=False):
        thresholds = fold_thresholds(method_predictions(predictions, str(method)), rule)
        for (fold, scenario, p), block in mrows.groupby(["fold", "scenario", "p"], sort=True):
            repeats, metrics = _score_block(block, thresholds[int(fold)], with_cindex)
            frame = pd.DataFrame(metrics)
            frame.insert(0, "repeat", repeats)
            frame.insert(0, "p", float(p))
            frame.insert(0, "scenario", scenario)
            frame.insert(0, "fold", int(fold))
            frame.insert(0, "method", method)
            records.append(frame)
    return pd.concat(records, ignore_index=True)


def check_repeats(metrics: pd.DataFrame, n_repeats: int) -> None:
    """Every (method, fold, scenario, p) has ``n_repeats`` masks (one at p = 0, which has no randomness)."""
    counts = metrics.groupby(["method", "fold", "scenario", "p"])["repeat"].nunique().reset_index()
    expected = np.where(counts["p"] == 0, 1, n_repeats)
    bad = counts["repeat"].to_numpy() != expected
    if bad.any():
        row = counts[bad].iloc[0]
        raise HafInputError(
            None,
            f"{row['method']} fold {row['fold']} {row['scenario']} p={row['p']}: {row['repeat']} repeats, "
            f"expected {1 if row['p'] == 0 else n_repeats} (evaluation.repeats)",
        )


def check_protocol(metrics: pd.DataFrame, protocols: dict[str, list[float]], n_repeats: int) -> None:
    """Every (method, fold) has every configured p of every scenario, each with the right repeat count."""
    check_repeats(metrics, n_repeats)
    for (method, fold, scenario), rows in metrics.groupby(["method", "fold", "scenario"], sort=False):
        if scenario not in protocols:
            continue
        have = set(np.round(rows["p"].unique(), 6))
        want = set(np.round(np.asarray(protocols[scenario], dtype=float), 6))
        if have != want:
            raise HafInputError(
                None,
                f"{method} fold {fold} {scenario}: masked predictions at p={sorted(have)}, "
                f"config evaluation asks for p={sorted(want)} (re-run the method's job)",
            )
    for scenario in protocols:
        for method, rows in metrics.groupby("method", sort=False):
            if scenario not in set(rows["scenario"]):
                raise HafInputError(None, f"{method}: no masked predictions for scenario {scenario!r}")


def aggregate(
    metrics: pd.DataFrame, columns: tuple[str, ...], repeats: Repeats | None = None
) -> pd.DataFrame:
    """Per (method, scenario, p): the mean over masks within a fold, then the fold mean and sample SD
    within each CV repeat, averaged over repeats (:func:`haf.eval.repeats.summarise_repeats`; also the SD
    over all folds, ``{c}_sd_all_folds``). ``n_repeats`` counts the random masks, ``n_cv_repeats`` the
    cross-validation repeats (``repeats``: fold -> CV repeat; None = one)."""
    per_fold = metrics.groupby(["method", "scenario", "p", "fold"], sort=False).agg(
        **{c: (c, "mean") for c in columns}, n_repeats=("repeat", "nunique")
    )
    per_fold = with_repeat(per_fold.reset_index(), repeats)
    out = []
    for (method, scenario, p), rows in per_fold.groupby(["method", "scenario", "p"], sort=False):
        record = dict(
            method=method,
            scenario=scenario,
            p=float(p),
            n_repeats=int(rows["n_repeats"].max()),
            n_cv_repeats=int(rows[CV_REPEAT].nunique()),
        )
        record.update(summarise_repeats(rows, columns))
        out.append(record)
    return pd.DataFrame.from_records(out)


def percent_label(p: float) -> str:
    """``0.05`` -> ``"5"``, ``0.3`` -> ``"30"``."""
    return f"{round(p * 100, 4):g}"


def degradation_table(
    agg: pd.DataFrame,
    metric: str,
    p_values: list[float],
    scenarios: tuple[str, ...] = PARACHUTE_SCENARIOS,
) -> pd.DataFrame:
    """PARACHUTE Table 5 for one metric: averages over scenarios, deltas and per-10% slopes."""
    ps = sorted(round(float(p), 6) for p in p_values)
    records = []
    for method, rows in agg.groupby("method", sort=False):
        record: dict = dict(method=method, metric=metric)
        avg = {}
        for p in ps:
            at_p = rows[np.isclose(rows["p"], p)].set_index("scenario")
            missing = [s for s in scenarios if s not in at_p.index]
            if missing:
                raise HafInputError(
                    None, f"{method}: no masked results for scenario(s) {', '.join(missing)} at p={p}"
                )
            avg[p] = float(at_p.loc[list(scenarios), f"{metric}_mean"].mean())
            record[f"avg_{percent_label(p)}"] = avg[p]
        for a, b in combinations(ps, 2):
            name = f"{percent_label(a)}_{percent_label(b)}"
            delta = avg[b] - avg[a]
            record[f"delta_{name}"] = delta
            record[f"slope_{name}"] = delta / ((b - a) * 100 / 10)
        records.append(record)
    return pd.DataFrame.from_records(records)


PER_P = ":per_p"
"""Suffix of the method name of a per-p protocol row (``parachute:per_p``)."""


def per_p_protocol(
    agg: pd.DataFrame, groups: dict[str, dict[float, str]], p_values: list[float]
) -> pd.DataFrame:
    """Aggregated rows of PARACHUTE's per-p protocol, one block per base method of ``groups``.

    For base b and each p of ``p_values``: the rows of ``agg`` (every scenario) of the method trained at
    p_miss = p, renamed ``b:per_p``, its name in column ``trained_method``.  A p without such a method,
    or without its masked results, is an error naming the config keys.
    """
    blocks = []
    for base, group in groups.items():
        for p in sorted(round(float(v), 6) for v in p_values):
            member = group.get(p)
            if member is None:
                have = ", ".join(f"{q:g}" for q in group) or "none"
                raise HafInputError(
                    None,
                    f"per-p protocol of {base}: evaluation.parachute_p has p={p:g}, but no method declared "
                    f"per_p_of: {base} has p_miss {p:g} (declared p_miss: {have}); declare one or drop "
                    "the per-p methods from run_methods",
                    field="per_p_of",
                )
            rows = agg[(agg["method"] == member) & np.isclose(agg["p"], p)]
            if rows.empty:
                raise HafInputError(
                    None, f"per-p protocol of {base}: no masked results of {member} at p={p:g}"
                )
            blocks.append(rows.assign(method=f"{base}{PER_P}", trained_method=member))
    if not blocks:
        return agg.iloc[:0].assign(trained_method=pd.Series(dtype=object))
    return pd.concat(blocks, ignore_index=True)
