"""clinical_data.json and pathological_data.json records in HANCOCK's fields and vocabularies.

The clinical features the official code uses (age, sex, smoking, primary metastasis) carry the clinical
view ``x_clin``; the pathological staging (pT, pN, nodes, invasion, HPV, grading, depth, resection)
carries ``x_path``. Tumour site, sex and the treatment fields are independent of the risk. The outcome
fields (survival, cause, recurrence, progression, metastasis) follow the latent risk itself: they are
targets, never features. Frequencies follow HANCOCK.md sections 2-3; vocabularies HANCOCK does not
document (histologic types other than ``SCC_Basaloid``, the CIS resection names other than
``CIS Absent``) are synthetic stand-ins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import ndtri

from haf.demo.common import rng_for, sigmoid
from haf.demo.latent import Latent

SITES = ("CUP", "Hypopharynx", "Larynx", "Oral_Cavity", "Oropharynx")
SITE_WEIGHTS = np.array([2, 89, 207, 134, 331], dtype=float)

HISTOLOGIC_TYPES = (
    "SCC_Keratinizing",
    "SCC_Nonkeratinizing",
    "SCC_Basaloid",
    "SCC_Papillary",
    "SCC_Verrucous",
    "SCC_Spindle_cell",
    "SCC_Adenosquamous",
    "SCC_Lymphoepithelial",
    "SCC_Acantholytic",
)
HISTOLOGIC_WEIGHTS = np.array([0.55, 0.25, 0.07, 0.03, 0.02, 0.02, 0.01, 0.01, 0.01])

# pN categories from least to most advanced, with their share among patients with a neck dissection
PN_ORDER = ("pN0", "pN1", "pN1a", "pN2a", "pN2", "pN2b", "pN2c", "pN3a", "pN3b")
PN_SHARE = np.array([200, 112, 1, 30, 37, 124, 55, 20, 32], dtype=float)
# pT groups (excluding TX/pTis) from least to most advanced
PT_ORDER = ("T1", "pT2", "pT3", "pT4a", "pT4b")
PT_SHARE = np.array([272, 267, 130, 84, 5], dtype=float)

SYSTEMIC_MODALITIES = ("fluorouracil + cisplatin", "cisplatin", "cetuximab", "carboplatin + paclitaxel")
METASTASIS_SITES = ("Lung", "Bones", "LymphNodes", "Liver", "SoftTissue", "Brain")


def _ordinal(score: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Category index of a standard-normal score cut at the quantiles of ``shares``."""
    cuts = ndtri(np.cumsum(shares)[:-1] / shares.sum())
    return np.searchsorted(cuts, score)


def _score(rng: np.random.Generator, view: np.ndarray, loading: float) -> np.ndarray:
    """A standard-normal score with correlation ``loading`` with the view."""
    return loading * view + np.sqrt(1.0 - loading**2) * rng.standard_normal(len(view))


def _maybe_null(rng: np.random.Generator, values: list[Any], rate: float) -> list[Any]:
    drop = rng.random(len(values)) < rate
    return [None if d else v for v, d in zip(values, drop, strict=True)]


def pathological_records(ids: list[str], latent: Latent, seed: int) -> list[dict[str, Any]]:
    """One record per patient, HANCOCK field order; staging driven by ``x_path``."""
    rng = rng_for(seed, "pathological")
    n = len(ids)
    x = latent.views["path"]
    site = rng.choice(len(SITES), size=n, p=SITE_WEIGHTS / SITE_WEIGHTS.sum())

    # HPV (p16) is tested in oropharynx; HPV-positive tumours have the better prognosis and are not graded
    hpv_pos = (site == SITES.index("Oropharynx")) & (rng.random(n) < sigmoid(-0.33 - 1.0 * x))
    hpv = np.where(site == SITES.index("Oropharynx"), "negative", "not_tested").astype(object)
    hpv[hpv_pos] = "positive"
    oro_untested = (site == SITES.index("Oropharynx")) & ~hpv_pos & (rng.random(n) < 0.004)
    hpv[oro_untested] = "not_tested"
    other_tested = (site != SITES.index("Oropharynx")) & (rng.random(n) < 0.005)
    hpv[other_tested] = "negative"

    t_idx = _ordinal(_score(rng, x, 0.85), PT_SHARE)
    pt = np.array(PT_ORDER, dtype=object)[t_idx]
    larynx = site == SITES.index("Larynx")
    u = rng.random(n)
    t1 = pt == "T1"
    pt[t1] = "pT1"
    pt[t1 & larynx & (u < 0.37)] = "pT1a"
    pt[t1 & larynx & (u >= 0.37) & (u < 0.42)] = "pT1b"
    pt[t1 & ~larynx & (u < 0.03)] = "pT1a"
    u = rng.random(n)
    pt[u < 0.005] = "TX"
    pt[(u >= 0.005) & (u < 0.0065)] = "pTis"
    pt[site == SITES.index("CUP")] = "TX"

    dissected = (rng.random(n) < 0.80) | (site == SITES.index("CUP"))
    n_idx = _ordinal(_score(rng, x, 0.75), PN_SHARE)
    pn = np.array(PN_ORDER, dtype=object)[n_idx]
    pn[~dissected] = "NX"
    positive = np.zeros(n, dtype=int)
    positive[np.isin(pn, ["pN1", "pN1a", "pN2a"])] = 1
    sel = pn == "pN2"
    positive[sel] = rng.integers(2, 5, sel.sum())
    sel = pn == "pN2b"
    positive[sel] = 2 + rng.poisson(2.0, sel.sum())
    sel = pn == "pN2c"
    positive[sel] = 2 + rng.poisson(1.5, sel.sum())
    sel = pn == "pN3a"
    positive[sel] = 1 + rng.poisson(1.0, sel.sum())
    sel = pn == "pN3b"
    positive[sel] = np.minimum(3 + rng.negative_binomial(1, 0.12, sel.sum()), 52)
    resected = np.where(dissected, positive + 8 + rng.poisson(22.0, n), 0)

    perinodal = np.where(rng.random(n) < sigmoid(-0.1 + 0.8 * x), "yes", "no").astype(object)
    perinodal[np.isin(pn, ["pN0", "NX"]) | (rng.random(n) < 0.03)] = None

    def yes_no(logit: np.ndarray, unknown: float) -> np.ndarray:
        out = np.where(rng.random(n) < sigmoid(logit), "yes", "no").astype(object)
        out[rng.random(n) < unknown] = "unknown"
        return out

    lymphovascular = yes_no(-1.6 + 0.9 * x, 0.005)
    vascular = yes_no(-2.9 + 0.9 * x, 0.005)
    perineural = yes_no(-1.65 + 0.8 * x, 0.005)

    u = rng.random(n)
    r1 = u < sigmoid(-2.8 + 0.6 * x)
    resection = np.full(n, "R0", dtype=object)
    resection[r1] = "R1"
    u2 = rng.random(n)
    resection[~r1 & (u2 < 0.003)] = "R2"
    resection[~r1 & (u2 >= 0.003) & (u2 < 0.036)] = "RX"

    cis = rng.random(n) < 0.33
    cis_resection = np.where(cis, np.where(rng.random(n) < 0.95, "CIS R0", "CIS R1"), "CIS Absent")
    g_idx = _ordinal(_score(rng, x, 0.5), np.array([16, 236, 370], dtype=float))
    grading = np.array(["G1", "G2", "G3"], dtype=object)[g_idx]
    grading[hpv == "positive"] = "hpv_association_p16"

    margin_v = np.clip(np.round(rng.gamma(2.0, 0.25, n), 1), 0.1, 1.3)
    close = rng.random(n) < np.where(resection == "R1", 0.6, 0.15)
    margins = ["<0.1" if c else f"{v:.1f}" for c, v in zip(close, margin_v, strict=True)]
    margins = _maybe_null(rng, margins, 0.03)

    histo = rng.choice(len(HISTOLOGIC_TYPES), size=n, p=HISTOLOGIC_WEIGHTS / HISTOLOGIC_WEIGHTS.sum())
    histologic = _maybe_null(rng, [HISTOLOGIC_TYPES[i] for i in histo], 0.03)
    depth = np.clip(np.round(np.exp(np.log(7.0) + 0.35 * x + 0.65 * rng.standard_normal(n)), 1), 0.2, 53.0)
    depths = _maybe_null(rng, [float(d) for d in depth], 0.18)

    records = []
    for i, pid in enumerate(ids):
        records.append(
            {
                "patient_id": pid,
                "primary_tumor_site": SITES[site[i]],
                "pT_stage": str(pt[i]),
                "pN_stage": str(pn[i]),
                "grading": str(grading[i]),
                "hpv_association_p16": str(hpv[i]),
                "number_of_positive_lymph_nodes": int(positive[i]) if dissected[i] else None,
                "number_of_resected_lymph_nodes": int(resected[i]),
                "perinodal_invasion": perinodal[i],
                "lymphovascular_invasion_L": str(lymphovascular[i]),
                "vascular_invasion_V": str(vascular[i]),
                "perineural_invasion_Pn": str(perineural[i]),
                "resection_status": str(resection[i]),
                "resection_status_carcinoma_in_situ": str(cis_resection[i]),
                "carcinoma_in_situ": "yes" if cis[i] else "no",
                "closest_resection_margin_in_cm": margins[i],
                "histologic_type": histologic[i],
                "infiltration_depth_in_mm": depths[i],
            }
        )
    return records


def clinical_records(ids: list[str], latent: Latent, seed: int) -> list[dict[str, Any]]:
    """One record per patient, HANCOCK field order; the four used features driven by ``x_clin``."""
    rng = rng_for(seed, "clinical")
    n = len(ids)
    x = latent.views["clin"]
    r = latent.outcome  # outcome fields follow the outcome's risk (another patient's under permuted_labels)
    age = np.clip(np.rint(61 + 11 * _score(rng, x, 0.75)), 22, 92).astype(int)
    sex = np.where(rng.random(n) < 614 / 763, "male", "female")
    s_idx = _ordinal(_score(rng, x, 0.8), np.array([211, 186, 350], dtype=float))
    smoking = _maybe_null(rng, [("non-smoker", "former", "smoker")[i] for i in s_idx], 16 / 763)
    meta = _score(rng, x, 0.8) > ndtri(1 - 49 / 739)
    primarily_metastasis = _maybe_null(rng, ["yes" if m else "no" for m in meta], 24 / 763)

    palliative = rng.random(n) < np.where(meta, 0.5, 0.02)
    first_intent = _maybe_null(rng, ["palliative" if p else "curative" for p in palliative], 0.01)
    days_to_first = 7 + rng.poisson(20.0, n)

    adjuvant = rng.random(n) < 479 / 763
    radio = adjuvant & (rng.random(n) < 0.92)
    systemic = adjuvant & ((rng.random(n) < 0.5) | ~radio)
    unknown_radio = ~adjuvant & (rng.random(n) < 0.01)

    tumour_specific = rng.random(n) < sigmoid(0.2 + 0.8 * r)
    cause_unknown = rng.random(n) < 0.04

    time = latent.time
    recurrence = (rng.random(n) < sigmoid(-1.5 + 0.9 * r)) & (time > 60)
    rec_day = np.rint(time * rng.uniform(0.15, 0.9, n)).astype(int)
    progress1 = (rng.random(n) < sigmoid(-1.4 + 0.8 * r)) & (time > 60)
    prog1_day = np.rint(time * rng.uniform(0.1, 0.9, n)).astype(int)
    progress2 = progress1 & (rng.random(n) < 0.3)
    prog2_day = np.rint(prog1_day + (time - prog1_day) * rng.uniform(0.2, 0.95, n)).astype(int)
    n_meta = np.zeros(n, dtype=int)
    has_meta = (rng.random(n) < sigmoid(-1.7 + 0.9 * r)) & (time > 60)
    n_meta[has_meta] = 1
    for k in (2, 3, 4):
        n_meta[(n_meta == k - 1) & (rng.random(n) < 0.33)] = k
    meta_frac = np.sort(rng.uniform(0.1, 0.95, (n, 4)), axis=1)
    null_progress = rng.random(n) < 0.03

    records = []
    for i, pid in enumerate(ids):
        deceased = bool(latent.event[i])
        if not deceased:
            cause = "living"
        elif cause_unknown[i]:
            cause = "deceased"
        else:
            cause = "deceased tumor specific" if tumour_specific[i] else "deceased not tumor specific"
        rec: dict[str, Any] = {
            "patient_id": pid,
            "year_of_initial_diagnosis": int(latent.year[i]),
            "age_at_initial_diagnosis": int(age[i]),
            "sex": str(sex[i]),
            "smoking_status": smoking[i],
            "primarily_metastasis": primarily_metastasis[i],
            "days_to_last_information": int(time[i]),
            "first_treatment_intent": first_intent[i],
            "first_treatment_modality": "local surgery",
            "days_to_first_treatment": int(days_to_first[i]),
            "adjuvant_treatment_intent": (
                ("curative" if rng.random() < 0.95 else "palliative") if adjuvant[i] else None
            ),
            "adjuvant_radiotherapy": "unknown" if unknown_radio[i] else ("yes" if radio[i] else "no"),
            "adjuvant_radiotherapy_modality": (
                ("percutaneous radiotherapy" if rng.random() < 0.95 else "brachytherapy")
                if radio[i]
                else None
            ),
            "adjuvant_systemic_therapy": "yes" if systemic[i] else ("no" if adjuvant[i] else None),
            "adjuvant_systemic_therapy_modality": (
                SYSTEMIC_MODALITIES[int(rng.integers(len(SYSTEMIC_MODALITIES)))] if systemic[i] else None
            ),
            "adjuvant_radiochemotherapy": (
                "yes" if (radio[i] and systemic[i]) else ("no" if adjuvant[i] else None)
            ),
            "survival_status": "deceased" if deceased else "living",
            "survival_status_with_cause": cause,
            "recurrence": "yes" if recurrence[i] else "no",
            "days_to_recurrence": int(rec_day[i]) if recurrence[i] else None,
            "progress_1": None if null_progress[i] else ("yes" if progress1[i] else "no"),
            "progress_2": None if null_progress[i] else ("yes" if progress2[i] else "no"),
            "days_to_progress_1": int(prog1_day[i]) if progress1[i] and not null_progress[i] else None,
            "days_to_progress_2": int(prog2_day[i]) if progress2[i] and not null_progress[i] else None,
        }
        for k in range(1, 5):
            if n_meta[i] >= k:
                n_sites = 1 + int(rng.random() < 0.3)
                where = rng.choice(len(METASTASIS_SITES), size=n_sites, replace=False)
                rec[f"metastasis_{k}_locations"] = " ".join(METASTASIS_SITES[j] for j in sorted(where))
                rec[f"days_to_metastasis_{k}"] = int(round(time[i] * meta_frac[i, k - 1]))
            else:
                rec[f"metastasis_{k}_locations"] = None
                rec[f"days_to_metastasis_{k}"] = None
        records.append(rec)
    return records
