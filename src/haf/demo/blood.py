"""blood_data.json (long format) and blood_data_reference_ranges.json, HANCOCK's 38 analytes.

Values are drawn around sex-specific means; analytes with a non-zero ``coef`` move with the blood
view ``x_blood`` (which is pure noise at the default signal strength 0). A few patients have an
analyte measured twice on different days (a reader must resolve duplicates), and one patient has
extreme leukocyte and basophil counts (the official code removes exactly one such outlier).
Reference ranges are null for the ``%`` variants and the three extra hematology counts, so that
HANCOCK's official selection (``group == "Hematology"`` with a female maximum, no ``%``) yields its
16 BLOOD_FEATURES. LOINC codes and names are real LOINC entries chosen to match the analytes; the
ones in the official feature list are spelled exactly as there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from haf.demo.common import rng_for
from haf.demo.latent import Latent

HEM, COAG, ROUTINE = "Hematology", "Coagulation", "Routine"
K3, K6 = "x10^3/\u00b5l", "x10^6/\u00b5l"


@dataclass(frozen=True)
class Analyte:
    name: str
    code: str
    loinc_name: str
    unit: str | None
    group: str
    rows: int  # rows in the real file (of 693 patients with blood): sets the coverage
    mean_m: float
    mean_f: float
    sd: float  # additive sd, or log-sd when lognormal
    lognormal: bool
    range_m: tuple[float | None, float | None] | None
    range_f: tuple[float | None, float | None] | None
    coef: float  # loading on the blood view
    decimals: int


A = Analyte
ANALYTES: tuple[Analyte, ...] = (
    A("Leukocytes", "6690-2", "Leukocytes [#/volume] in Blood", K3, HEM, 684, 7.8, 7.4, 0.28, True, (3.9, 10.2), (3.9, 10.2), 0.5, 2),
    A("Hemoglobin", "718-7", "Hemoglobin [Mass/volume] in Blood", "g/dl", HEM, 684, 14.2, 12.8, 1.5, False, (13.5, 17.2), (12.0, 15.6), -0.5, 1),
    A("Platelets", "777-3", "Platelets [#/volume] in Blood", K3, HEM, 684, 255, 280, 70, False, (150, 370), (150, 370), 0.4, 0),
    A("Erythrocytes", "789-8", "Erythrocytes [#/volume] in Blood", K6, HEM, 684, 4.7, 4.3, 0.45, False, (4.3, 5.75), (3.9, 5.15), -0.3, 2),
    A("Hematocrit", "4544-3", "Hematocrit [Volume Fraction] of Blood", "%", HEM, 684, 42.0, 38.5, 4.2, False, (39.5, 50.5), (35.5, 45.5), -0.4, 1),
    A("MCH", "785-6", "Erythrocyte mean corpuscular hemoglobin [Entitic mass]", "pg", HEM, 684, 30.5, 30.0, 1.8, False, (26.0, 34.0), (26.0, 34.0), 0.0, 1),
    A("MCV", "787-2", "Erythrocyte mean corpuscular volume [Entitic volume]", "fl", HEM, 684, 91.0, 90.0, 5.0, False, (80.0, 99.0), (80.0, 99.0), 0.1, 1),
    A("MHCH", "786-4", "Erythrocyte mean corpuscular hemoglobin concentration [Mass/volume]", "g/dl", HEM, 684, 33.6, 33.3, 1.0, False, (31.5, 36.0), (31.5, 36.0), 0.0, 1),
    A("Granulocytes", "30394-1", "Granulocytes [#/volume] in Blood", K3, HEM, 684, 5.0, 4.8, 0.33, True, (1.8, 7.7), (1.8, 7.7), 0.5, 2),
    A("Granulocytes %", "30395-8", "Granulocytes/100 leukocytes in Blood", "%", HEM, 684, 64.0, 63.0, 8.5, False, None, None, 0.3, 1),
    A("Lymphocytes", "26474-7", "Lymphocytes [#/volume] in Blood", K3, HEM, 684, 1.9, 2.0, 0.35, True, (1.0, 4.0), (1.0, 4.0), -0.4, 2),
    A("Lymphocytes %", "26478-8", "Lymphocytes/100 leukocytes in Blood", "%", HEM, 684, 25.0, 27.0, 7.5, False, None, None, -0.3, 1),
    A("RDW", "788-0", "Erythrocyte distribution width [Ratio]", "%", HEM, 682, 13.8, 13.9, 1.1, False, (11.6, 14.4), (11.6, 14.4), 0.3, 1),
    A("Basophils %", "30180-4", "Basophils/100 leukocytes in Blood", "%", HEM, 642, 0.6, 0.6, 0.25, False, None, None, 0.0, 1),
    A("Eosinophils %", "26450-7", "Eosinophils/100 leukocytes in Blood", "%", HEM, 642, 2.6, 2.4, 1.4, False, None, None, 0.0, 1),
    A("Monocytes %", "26485-3", "Monocytes/100 leukocytes in Blood", "%", HEM, 642, 8.0, 7.6, 2.1, False, None, None, 0.1, 1),
    A("Basophils", "26444-0", "Basophils [#/volume] in Blood", K3, HEM, 640, 0.04, 0.04, 0.45, True, (0.0, 0.1), (0.0, 0.1), 0.0, 2),
    A("Eosinophils", "26449-9", "Eosinophils [#/volume] in Blood", K3, HEM, 640, 0.18, 0.17, 0.6, True, (0.02, 0.5), (0.02, 0.5), 0.0, 2),
    A("Monocytes", "26484-6", "Monocytes [#/volume] in Blood", K3, HEM, 640, 0.62, 0.55, 0.3, True, (0.2, 1.0), (0.2, 1.0), 0.2, 2),
    A("PDW", "32207-3", "Platelet distribution width [Entitic volume] in Blood by Automated count", "fl", HEM, 637, 12.5, 12.3, 1.9, False, (9.0, 17.0), (9.0, 17.0), 0.0, 1),
    A("PLCR", "48386-7", "Platelets Large/Platelets in Blood by Automated count", "%", HEM, 637, 28.0, 27.0, 6.5, False, None, None, 0.0, 1),
    A("Immature Granulocytes", "51584-1", "Immature granulocytes [#/volume] in Blood", K3, HEM, 624, 0.03, 0.03, 0.5, True, None, None, 0.2, 2),
    A("MPV", "32623-1", "Platelet mean volume [Entitic volume] in Blood", "fl", HEM, 608, 10.5, 10.6, 0.9, False, (9.2, 12.6), (9.2, 12.6), 0.0, 1),
    A("Normoblasts", "771-6", "Nucleated erythrocytes [#/volume] in Blood", K3, HEM, 606, 0.004, 0.004, 0.8, True, None, None, 0.0, 3),
    A("INR", "6301-6", "INR in Platelet poor plasma by Coagulation assay", None, COAG, 684, 1.02, 1.01, 0.08, False, (0.85, 1.15), (0.85, 1.15), 0.0, 2),
    A("PT", "5894-1", "Prothrombin time (PT) actual/normal in Platelet poor plasma by Coagulation assay", "%", COAG, 684, 98.0, 99.0, 12.0, False, (70.0, 130.0), (70.0, 130.0), 0.0, 0),
    A("aPPT", "14979-9", "aPTT in Platelet poor plasma by Coagulation assay", "s", COAG, 684, 28.0, 28.5, 3.0, False, (25.0, 37.0), (25.0, 37.0), 0.0, 1),
    A("Thrombin time", "3243-3", "Thrombin time", "s", COAG, 683, 17.0, 17.2, 1.5, False, (14.0, 21.0), (14.0, 21.0), 0.0, 1),
    A("Creatinine", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dl", ROUTINE, 684, 0.95, 0.78, 0.22, True, (0.7, 1.2), (0.5, 0.9), 0.0, 2),
    A("Calcium", "2000-8", "Calcium [Moles/volume] in Serum or Plasma", "mmol/l", ROUTINE, 682, 2.35, 2.33, 0.1, False, (2.15, 2.55), (2.15, 2.55), 0.0, 2),
    A("Potassium", "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/l", ROUTINE, 682, 4.2, 4.1, 0.35, False, (3.5, 5.1), (3.5, 5.1), 0.0, 1),
    A("Sodium", "2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/l", ROUTINE, 682, 139.0, 139.0, 2.5, False, (136.0, 145.0), (136.0, 145.0), 0.0, 0),
    A("GFR", "33914-3", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or Blood by Creatinine-based formula (MDRD)", "ml/min", ROUTINE, 646, 85.0, 86.0, 18.0, False, (60.0, None), (60.0, None), 0.0, 0),
    A("Chloride", "2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/l", ROUTINE, 462, 102.0, 102.0, 2.5, False, (98.0, 107.0), (98.0, 107.0), 0.0, 0),
    A("Urea", "3091-6", "Urea [Mass/volume] in Serum or Plasma", "mg/dl", ROUTINE, 389, 33.0, 30.0, 0.3, True, (17.0, 43.0), (17.0, 43.0), 0.0, 0),
    A("Glucose", "2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dl", ROUTINE, 179, 105.0, 102.0, 0.22, True, (74.0, 106.0), (74.0, 106.0), 0.0, 0),
    A("Magnesium", "2601-3", "Magnesium [Moles/volume] in Serum or Plasma", "mmol/l", ROUTINE, 152, 0.85, 0.84, 0.08, False, (0.66, 1.07), (0.66, 1.07), 0.0, 2),
    A("CRP", "1988-5", "C reactive protein [Mass/volume] in Serum or Plasma", "mg/l", ROUTINE, 93, 4.0, 4.0, 1.1, True, (0.0, 5.0), (0.0, 5.0), 0.6, 1),
)  # fmt: skip
BLOOD_PATIENTS_REAL = 693


def reference_records() -> list[dict[str, Any]]:
    """blood_data_reference_ranges.json: one row per analyte, ranges by sex (null where none)."""
    out = []
    for a in ANALYTES:
        m = a.range_m or (None, None)
        f = a.range_f or (None, None)
        out.append(
            {
                "LOINC_name": a.loinc_name,
                "analyte_name": a.name,
                "group": a.group,
                "unit": a.unit,
                "normal_male_min": m[0],
                "normal_male_max": m[1],
                "normal_female_min": f[0],
                "normal_female_max": f[1],
            }
        )
    return out


def blood_records(
    ids: list[str], sex: list[str], latent: Latent, seed: int
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Long-format rows for the patients with blood; also counts (rows, repeats, patients)."""
    rng = rng_for(seed, "blood")
    n = len(ids)
    x = latent.views["blood"]
    has = latent.available["blood"]
    female = np.array([s == "female" for s in sex])
    values = np.zeros((n, len(ANALYTES)))
    measured = np.zeros((n, len(ANALYTES)), dtype=bool)
    for j, a in enumerate(ANALYTES):
        z = a.coef * x + np.sqrt(1.0 - a.coef**2) * rng.standard_normal(n)
        mean = np.where(female, a.mean_f, a.mean_m)
        v = mean * np.exp(a.sd * z - a.sd**2 / 2) if a.lognormal else np.maximum(mean + a.sd * z, 0.0)
        values[:, j] = v
        measured[:, j] = has & (rng.random(n) < a.rows / BLOOD_PATIENTS_REAL)
    # every blood patient has at least the basic panel's first analyte
    measured[has & ~measured.any(axis=1), 0] = True

    # one patient with extreme leukocyte and basophil counts (the official code drops exactly one)
    blood_idx = np.flatnonzero(has)
    i_leu = [a.name for a in ANALYTES].index("Leukocytes")
    i_baso = [a.name for a in ANALYTES].index("Basophils")
    if len(blood_idx):
        outlier = int(rng.choice(blood_idx))
        values[outlier, i_leu] = max(48.0, values[:, i_leu].max() * 1.5)
        values[outlier, i_baso] = max(1.2, values[:, i_baso].max() * 1.5)
        measured[outlier, [i_leu, i_baso]] = True

    day = rng.geometric(0.3, n) - 1
    repeat = has & (rng.random(n) < 0.03)
    if has.any() and not repeat.any():  # even a small demo exercises the duplicate rule once
        repeat[int(rng.choice(np.flatnonzero(has)))] = True
    rows: list[dict[str, Any]] = []
    n_repeats = 0
    for i in np.flatnonzero(has):
        repeated = set()
        if repeat[i]:
            cand = np.flatnonzero(measured[i])
            repeated = set(rng.choice(cand, size=min(len(cand), int(rng.integers(1, 4))), replace=False))
        for j, a in enumerate(ANALYTES):
            if not measured[i, j]:
                continue
            rows.append(_row(ids[i], a, values[i, j], int(day[i])))
            if j in repeated:
                later = int(day[i] + rng.integers(1, 21))
                jitter = rng.normal(0.0, 0.3)
                v2 = (
                    values[i, j] * np.exp(0.3 * a.sd * jitter)
                    if a.lognormal
                    else values[i, j] + 0.3 * a.sd * jitter
                )
                rows.append(_row(ids[i], a, max(v2, 0.0), later))
                n_repeats += 1
    counts = {"rows": len(rows), "repeated_rows": n_repeats, "patients": int(has.sum())}
    return rows, counts


def _row(pid: str, a: Analyte, value: float, day: int) -> dict[str, Any]:
    return {
        "patient_id": pid,
        "value": round(float(value), a.decimals),
        "unit": a.unit,
        "analyte_name": a.name,
        "LOINC_code": a.code,
        "LOINC_name": a.loinc_name,
        "group": a.group,
        "days_before_first_treatment": day,
    }
