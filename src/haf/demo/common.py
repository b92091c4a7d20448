"""Shared pieces of the demo generator: the SYNTHETIC label, seeded streams, defaults.

Every random draw of the generator comes from a stream named after the part that uses it
(``rng_for(seed, "wsi")``), so adding a draw in one part never changes the files of another.
"""

from __future__ import annotations

import zlib

import numpy as np

SYNTHETIC_NOTE = (
    "SYNTHETIC data: the HAF-flow embedded demo cohort. Every patient, value, image and slide "
    "embedding here is simulated from a seed; nothing comes from a real person. The files follow "
    "the HANCOCK download layout and formats so that the same readers run on real data unchanged."
)
"""The sentence every demo output carries (README.txt, summary JSON, log lines)."""

README_MARKER = "HAF-flow SYNTHETIC demo cohort"
"""First line of ``<data_root>/README.txt``; the generator only ever overwrites a folder that has it."""

SIGNAL_KEYS: tuple[str, ...] = ("wsi", "tma", "cell", "clin", "path", "blood", "icd")

DEFAULT_SIGNAL: dict[str, float] = {
    "wsi": 1.5,
    "tma": 1.0,
    "cell": 0.5,
    "clin": 0.6,
    "path": 1.2,
    "blood": 0.0,
    "icd": 0.3,
}
"""How strongly each modality sees the latent risk (the schema's defaults, checked by a test)."""

DEFAULT_PATHS: dict[str, str] = {
    "clinical": "StructuredData/clinical_data.json",
    "pathological": "StructuredData/pathological_data.json",
    "blood": "StructuredData/blood_data.json",
    "blood_reference": "StructuredData/blood_data_reference_ranges.json",
    "icd_dir": "TextData/icd_codes",
    "cell_density": "TMA_CellDensityMeasurements/TMA_celldensity_measurements.csv",
    "tma_maps": "TMA_Maps",
    "tma_cores": "TMA_TumorCenter_Cores",
    "wsi_h5": "WSI_UNI_encodings/WSI_PrimaryTumor",
    "splits": "DataSplits_DataDictionaries",
}
"""The official HANCOCK layout (config ``paths`` defaults, checked by a test)."""

# Share of the 763 real patients with each modality (HANCOCK.md section 12); the demo draws
# availability with these rates, independently of the latent risk (missing completely at random).
AVAILABILITY: dict[str, float] = {
    "wsi": 705 / 763,
    "tma": 721 / 763,
    "cell": 736 / 763,
    "blood": 693 / 763,
    "icd": 712 / 763,
}


def rng_for(seed: int, part: str) -> np.random.Generator:
    """An independent, reproducible stream for one part of the generator."""
    return np.random.default_rng([int(seed), zlib.crc32(part.encode("utf-8"))])


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def patient_ids(n: int) -> list[str]:
    """HANCOCK ids: zero-padded 3-digit strings ``"001"`` ... ."""
    return [f"{i:03d}" for i in range(1, n + 1)]
