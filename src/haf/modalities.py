"""The seven modalities, in the one order every array, mask and table of the project uses."""

from __future__ import annotations

MODALITIES: tuple[str, ...] = ("wsi", "tma", "cell", "clin", "path", "blood", "icd")
"""Slot order of the presence mask and of every per-modality array."""

PATHOLOGY: tuple[str, ...] = ("wsi", "tma")
"""Bag modalities: UNI patch embeddings aggregated by Stage 1 (CLAM)."""

TABULAR: tuple[str, ...] = ("cell", "clin", "path", "blood", "icd")
"""Vector modalities: preprocessed per fold, fitted on the training part only."""

PATHOLOGY_MODELS: tuple[str, ...] = ("wsi", "tma", "wsi_tma")
"""Stage 1 models: one per pathology modality, plus WSI and TMA instances pooled into one bag."""

MODALITY_NAMES: dict[str, str] = {
    "wsi": "WSI (H&E primary tumour)",
    "tma": "TMA cores",
    "cell": "TMA cell density",
    "clin": "Clinical",
    "path": "Pathological",
    "blood": "Blood",
    "icd": "ICD codes",
}


def modality_index(name: str) -> int:
    """Slot of ``name`` in :data:`MODALITIES`; a clear error for an unknown name."""
    try:
        return MODALITIES.index(name)
    except ValueError:
        raise ValueError(f"unknown modality {name!r}; expected one of {', '.join(MODALITIES)}") from None
