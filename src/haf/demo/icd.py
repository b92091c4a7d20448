"""TextData/icd_codes/<prefix>_<NNN>.txt: one line of free text with bracketed ICD-10 codes.

Each file names the primary tumour's code (from the patient's site, independent of the risk), with
a laterality suffix for paired organs (``[C09.9 R]``). Codes that HANCOCK's 40-column vocabulary
holds for lymph-node involvement and distant spread (C77.0, C77.8, R59.0, R59.9) become more frequent
with the ICD view ``x_icd``, in-situ/uncertain-behaviour codes (D00.0, D37.0, D38.0) less frequent;
post-operative complications (T81.0) and comorbidities outside the vocabulary are independent noise.
The real file-name prefix is unknown (HANCOCK.md section 5); readers take any prefix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from haf.demo.common import rng_for
from haf.demo.latent import Latent

ICD_PREFIX = "SurgeryReport_ICD_Codes"

SITE_CODES: dict[str, tuple[tuple[str, str, bool], ...]] = {
    # (code, description, paired organ -> laterality suffix)
    "Larynx": (
        ("C32.0", "malignant neoplasm of glottis", False),
        ("C32.1", "malignant neoplasm of supraglottis", False),
        ("C32.2", "malignant neoplasm of subglottis", False),
        ("C32.8", "malignant neoplasm of overlapping sites of larynx", False),
        ("C32.9", "malignant neoplasm of larynx, unspecified", False),
    ),
    "Oropharynx": (
        ("C09.0", "malignant neoplasm of tonsillar fossa", True),
        ("C09.1", "malignant neoplasm of tonsillar pillar", True),
        ("C09.9", "malignant neoplasm of tonsil, unspecified", True),
        ("C10.8", "malignant neoplasm of overlapping sites of oropharynx", False),
        ("C10.9", "malignant neoplasm of oropharynx, unspecified", False),
        ("C10.0", "malignant neoplasm of vallecula", False),
        ("C01", "malignant neoplasm of base of tongue", False),
    ),
    "Oral_Cavity": (
        ("C02.1", "malignant neoplasm of border of tongue", True),
        ("C02.0", "malignant neoplasm of dorsal surface of tongue", False),
        ("C02.2", "malignant neoplasm of ventral surface of tongue", True),
        ("C04.8", "malignant neoplasm of overlapping sites of floor of mouth", False),
        ("C06.8", "malignant neoplasm of overlapping sites of other parts of mouth", False),
        ("C05.1", "malignant neoplasm of soft palate", False),
        ("C03.1", "malignant neoplasm of lower gum", False),
    ),
    "Hypopharynx": (
        ("C13.8", "malignant neoplasm of overlapping sites of hypopharynx", False),
        ("C13.9", "malignant neoplasm of hypopharynx, unspecified", False),
        ("C13.1", "malignant neoplasm of aryepiglottic fold", True),
        ("C12", "malignant neoplasm of pyriform sinus", True),
    ),
    "CUP": (("C80.0", "malignant neoplasm, primary site unknown", False),),
}
ADVANCED = (
    ("C77.0", "secondary malignant neoplasm of lymph nodes of head, face and neck", True),
    ("C77.8", "secondary malignant neoplasm of lymph nodes of multiple regions", False),
    ("R59.0", "localized enlarged lymph nodes", True),
    ("R59.9", "enlarged lymph nodes, unspecified", False),
)
EARLY = (
    ("D00.0", "carcinoma in situ of lip, oral cavity and pharynx", False),
    ("D37.0", "neoplasm of uncertain behaviour of lip, oral cavity and pharynx", False),
    ("D38.0", "neoplasm of uncertain behaviour of larynx", False),
)
NOISE = (
    ("T81.0", "haemorrhage complicating a procedure", False),
    ("I10.90", "essential hypertension", False),
    ("E11.9", "type 2 diabetes mellitus without complications", False),
    ("F17.2", "nicotine dependence", False),
    ("J44.9", "chronic obstructive pulmonary disease", False),
)


def _token(rng: np.random.Generator, code: str, paired: bool) -> str:
    side = f" {rng.choice(['R', 'L', 'R', 'L', 'B'])}" if paired and rng.random() < 0.7 else ""
    return f"[{code}{side}]"


def write_icd_files(
    folder: Path, ids: list[str], sites: list[str], latent: Latent, seed: int
) -> dict[str, int]:
    """Write one file per patient with ICD codes; return counts (files, codes)."""
    rng = rng_for(seed, "icd")
    x = latent.views["icd"]
    folder.mkdir(parents=True, exist_ok=True)
    n_files = n_codes = 0
    for i, pid in enumerate(ids):
        if not latent.available["icd"][i]:
            continue
        parts: list[str] = []
        choices = SITE_CODES[sites[i]]
        code, text, paired = choices[int(rng.integers(len(choices)))]
        parts.append(f"Main diagnosis: {text} {_token(rng, code, paired)}")
        k_adv = int(rng.poisson(np.exp(-1.0 + 0.9 * x[i])))
        for code, text, paired in [ADVANCED[j] for j in rng.integers(0, len(ADVANCED), k_adv)]:
            parts.append(f"{text} {_token(rng, code, paired)}")
        k_early = int(rng.poisson(np.exp(-2.0 - 0.6 * x[i])))
        for code, text, paired in [EARLY[j] for j in rng.integers(0, len(EARLY), k_early)]:
            parts.append(f"{text} {_token(rng, code, paired)}")
        for code, text, paired in NOISE:
            if rng.random() < 0.07:
                parts.append(f"{text} {_token(rng, code, paired)}")
        line = "; ".join(parts) + "."
        (folder / f"{ICD_PREFIX}_{pid}.txt").write_text(line + "\n", encoding="utf-8")
        n_files += 1
        n_codes += len(parts)
    return {"files": n_files, "codes": n_codes}
