"""``results/metrics.json`` (rule ``metrics``): each method's pooled metrics in one file, for experiment trackers.

Nothing is recomputed: the values are read from the tables the evaluation writes (``tables/table1.csv``
and ``tables/survival_metrics.csv``), so the JSON and the tables cannot disagree.  Layout::

    {
      "format": "haf-metrics", "version": 1,
      "synthetic": true | false,                       # demo.enabled: SYNTHETIC numbers
      "cv": {"scheme", "k", "repeats", "seed", "n_folds"},
      "sources": {"binary": "<table1.csv>", "survival": "<survival_metrics.csv>"},
      "fields": {"binary": [...], "survival": [...]},  # the keys below, in this order
      "methods": {
        "<method>": {
          "label", "task_loss" (bce | cox), "group" (Table 1's group; null if not in Table 1),
          "binary":   {<BINARY_FIELDS>}   or null (not in Table 1: the no-detach ablations, see table2),
          "survival": {<SURVIVAL_FIELDS>} or null
        }, ...
      }
    }

Numbers are JSON numbers (counts as integers), an undefined metric (NaN in the table: e.g. the
integrated Brier score of a binary method) is ``null``; ``threshold_rule`` and ``ibs_status`` are strings.
To log into a tracker, flatten ``methods.<m>.<block>.<field>`` (e.g. MLflow ``log_metrics`` with keys
``haf/binary/auc_pooled``).  Field meanings: docs/evaluation.md ("metrics.json").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from haf.errors import HafInputError

FORMAT = "haf-metrics"
VERSION = 1
BINARY_FIELDS: tuple[str, ...] = (
    "n_test", "n_labelled", "n_label_positive", "n_events",
    "auc_pooled", "auc_ci_low", "auc_ci_high", "auc_mean", "auc_std",
    "accuracy_pooled", "accuracy_ci_low", "accuracy_ci_high", "accuracy_mean", "accuracy_std",
    "balanced_accuracy_pooled", "balanced_accuracy_ci_low", "balanced_accuracy_ci_high",
    "balanced_accuracy_mean", "balanced_accuracy_std", "majority_accuracy_mean",
    "n_boot", "threshold_rule",
)  # fmt: skip
"""From ``table1.csv``: test counts, pooled out-of-fold metrics with their patient-bootstrap 95% CIs and
the fold mean and SD (over each repeat's folds, averaged over repeats)."""
SURVIVAL_FIELDS: tuple[str, ...] = (
    "n", "n_events", "tau_days",
    "harrell_c_pooled", "harrell_c_ci_low", "harrell_c_ci_high", "harrell_c_fold_mean", "harrell_c_fold_std",
    "uno_c_pooled", "uno_c_ci_low", "uno_c_ci_high",
    "td_auc_mean_pooled", "td_auc_mean_ci_low", "td_auc_mean_ci_high",
    "ibs_pooled", "ibs_ci_low", "ibs_ci_high", "ibs_status",
    "logrank_chisq", "logrank_p", "n_boot",
)  # fmt: skip
"""From ``survival_metrics.csv``: pooled Harrell's and Uno's C, integrated td-AUC and Brier score with their
95% CIs, Harrell's C over folds, and the log-rank test of the predicted risk groups."""
INTEGER_FIELDS = {"n_test", "n_labelled", "n_label_positive", "n_events", "n", "n_boot"}
TEXT_FIELDS = {"threshold_rule", "ibs_status"}


def _read(path: str | Path, fields: tuple[str, ...], what: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype={"method": str}, keep_default_na=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HafInputError(path, f"cannot read {what}: {exc}") from exc
    for column in ("method", *fields):
        if column not in frame.columns:
            raise HafInputError(path, f"{what} lacks a column metrics.json reports", field=column)
    if frame["method"].duplicated().any():
        dup = frame.loc[frame["method"].duplicated(), "method"].iloc[0]
        raise HafInputError(path, f"method {dup} appears twice", field="method")
    return frame.set_index("method")


def _value(name: str, value: Any) -> Any:
    if name in TEXT_FIELDS:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    if value is None or pd.isna(value):
        return None
    if name in INTEGER_FIELDS:
        return int(value)
    return float(value)


def build_metrics(
    table1: str | Path,
    survival: str | Path,
    *,
    methods: Mapping[str, Mapping[str, Any]],
    cv: Mapping[str, Any],
    n_folds: int,
    synthetic: bool,
) -> dict[str, Any]:
    """The ``metrics.json`` payload (see the module docstring) for ``methods`` (name -> declaration).

    A method of the run that is in neither table is an error naming it and both files (the tables were
    made for another ``run_methods``).
    """
    binary = _read(table1, BINARY_FIELDS, "Table 1")
    surv = _read(survival, SURVIVAL_FIELDS, "the survival table")
    out: dict[str, Any] = {}
    for name, decl in methods.items():
        if name not in binary.index and name not in surv.index:
            raise HafInputError(
                f"{table1}, {survival}", f"method {name} of run_methods is in neither table", field="method"
            )
        b = binary.loc[name] if name in binary.index else None
        s = surv.loc[name] if name in surv.index else None
        out[name] = {
            "label": str(decl.get("label", name)),
            "task_loss": str(decl.get("task_loss", "bce")),
            "group": None if b is None else str(b["group"]) if "group" in binary.columns else None,
            "binary": None if b is None else {f: _value(f, b[f]) for f in BINARY_FIELDS},
            "survival": None if s is None else {f: _value(f, s[f]) for f in SURVIVAL_FIELDS},
        }
    return {
        "format": FORMAT,
        "version": VERSION,
        "synthetic": bool(synthetic),
        "cv": {
            "scheme": str(cv["scheme"]),
            "k": int(cv["k"]),
            "repeats": int(cv["repeats"]),
            "seed": int(cv["seed"]),
            "n_folds": int(n_folds),
        },
        "sources": {"binary": str(table1), "survival": str(survival)},
        "fields": {"binary": list(BINARY_FIELDS), "survival": list(SURVIVAL_FIELDS)},
        "methods": out,
    }
