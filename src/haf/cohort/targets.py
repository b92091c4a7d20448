"""Targets: binary label by a configurable rule, and (time, event) for time-to-event work.

``time`` = ``days_to_last_information`` (days from diagnosis), ``event`` = ``survival_status ==
"deceased"`` (HANCOCK.md section 2). Binary rules:

* ``horizon``: 1 = death within ``horizon_days``; 0 = known alive at the horizon (follow-up >= horizon)
  or died after it; no label = living with follow-up shorter than the horizon (``censored_before_horizon``).
* ``status``: HANCOCK's ``survival_status`` (deceased = 1), no horizon.
* ``status_tumor_specific``: HANCOCK's official target: as ``status``, but patients whose
  ``survival_status_with_cause`` is ``deceased not tumor specific`` get no label (``non_tumour_death``).

Patients without a binary label stay in the cohort (their time/event still count); patients without
survival data at all, or with a follow-up of 0 days (no time at risk), are excluded from targets.tsv.
Every case is counted and logged with the ids. A negative follow-up is an error naming the patient.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from haf.artifacts.targets import TARGET_COLUMNS
from haf.errors import HafInputError

log = logging.getLogger(__name__)

TARGET_RULES: tuple[str, ...] = ("horizon", "status", "status_tumor_specific")
NON_TUMOUR_DEATH = "deceased not tumor specific"


def build_targets(
    clinical: pd.DataFrame,
    cohort: list[str] | pd.Index,
    rule: str = "horizon",
    horizon_days: float = 1825,
    source: str | Path = "clinical_data.json",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Targets of the cohort patients (manifest order) from the clinical records.

    Returns the targets table (``patient_id, time, event, label, label_reason``; ``label`` NaN where
    there is no binary label) and the counts behind every exclusion.
    """
    if rule not in TARGET_RULES:
        raise ValueError(f"target.rule must be one of {TARGET_RULES}, got {rule!r}")
    counts: dict[str, Any] = {"rule": rule, "cohort": len(cohort)}
    if rule == "horizon":
        counts["horizon_days"] = horizon_days
    rows = []
    excluded: dict[str, list[str]] = {
        "no_clinical_record": [],
        "no_survival_status": [],
        "no_follow_up_time": [],
        "zero_follow_up_time": [],
    }
    for pid in cohort:
        if pid not in clinical.index:
            excluded["no_clinical_record"].append(pid)
            continue
        record = clinical.loc[pid]
        status = record.get("survival_status")
        if not isinstance(status, str):
            excluded["no_survival_status"].append(pid)
            continue
        time = record.get("days_to_last_information")
        if time is None or (isinstance(time, float) and math.isnan(time)):
            excluded["no_follow_up_time"].append(pid)
            continue
        time = float(time)
        if time < 0:
            raise HafInputError(
                source,
                f"negative follow-up time {time:g}",
                where=f"patient {pid}",
                field="days_to_last_information",
            )
        if time == 0:  # no time at risk: no survival information, and a label would be a guess
            excluded["zero_follow_up_time"].append(pid)
            continue
        event = int(status == "deceased")
        cause = record.get("survival_status_with_cause")
        label, reason = _label(rule, event, time, horizon_days, cause if isinstance(cause, str) else None)
        rows.append((pid, time, event, label, reason))
    targets = pd.DataFrame(rows, columns=list(TARGET_COLUMNS))
    targets["label"] = targets["label"].astype(float)
    for key, ids in excluded.items():
        counts[f"excluded_{key}"] = len(ids)
        if ids:
            log.warning(
                "%d patients excluded from targets (%s): %s%s",
                len(ids),
                key.replace("_", " "),
                ", ".join(ids[:20]),
                " ..." if len(ids) > 20 else "",
            )
    counts["n_patients"] = len(targets)
    counts["events"] = int(targets["event"].sum())
    reasons = targets["label_reason"].value_counts().sort_index()
    counts["label_reasons"] = {str(k): int(v) for k, v in reasons.items()}
    labelled = targets["label"].notna()
    counts["labelled"] = int(labelled.sum())
    counts["positives"] = int((targets["label"] == 1).sum())
    counts["no_label"] = int((~labelled).sum())
    log.info(
        "targets (rule %s%s): %d patients, %d events; binary label for %d (%d positive, %.1f %%), none for %d",
        rule,
        f", horizon {horizon_days:g} days" if rule == "horizon" else "",
        len(targets),
        counts["events"],
        counts["labelled"],
        counts["positives"],
        100.0 * counts["positives"] / max(counts["labelled"], 1),
        counts["no_label"],
    )
    for reason, n in counts["label_reasons"].items():
        log.info("  label_reason %-26s %d", reason, n)
    return targets, counts


def _label(rule: str, event: int, time: float, horizon: float, cause: str | None) -> tuple[float, str]:
    if rule == "horizon":
        if event and time <= horizon:
            return 1.0, "death_within_horizon"
        if event:
            return 0.0, "death_after_horizon"
        if time >= horizon:
            return 0.0, "alive_at_horizon"
        return math.nan, "censored_before_horizon"
    if rule == "status_tumor_specific" and cause is not None and cause.strip().lower() == NON_TUMOUR_DEATH:
        return math.nan, "non_tumour_death"
    return (1.0, "deceased") if event else (0.0, "living")
