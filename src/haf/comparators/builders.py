"""Model builders of the comparator families: ``(declaration, dims, settings) -> untrained model``.

:data:`haf.methods.METHOD_FAMILIES` names one of these per comparator family; a checkpoint is rebuilt
through the same function (:func:`haf.comparators.train.load_model`).  ``settings`` is the family's
section (:class:`~haf.settings.Stage3Settings` for the binary comparators,
:class:`~haf.settings.ParachuteSettings` for PARACHUTE); family options come from the declaration,
whose defaults the schema fills.
"""

from __future__ import annotations

from typing import Any

from haf.comparators.models import MFMF, AttentionFusion, ComparatorModel, FeatureInteraction, LateFusion
from haf.comparators.parachute import Parachute


def late_fusion(decl: dict[str, Any], dims: dict[str, int], s: dict[str, Any]) -> ComparatorModel:
    return LateFusion(dims, decl["modalities"], s.hidden, s.dropout, aux_weight=float(decl["aux_weight"]))


def attention_fusion(decl: dict[str, Any], dims: dict[str, int], s: dict[str, Any]) -> ComparatorModel:
    return AttentionFusion(
        dims,
        decl["modalities"],
        s.hidden,
        int(decl["heads"]),
        s.dropout,
        layers=int(decl["layers"]),
    )


def mfmf(decl: dict[str, Any], dims: dict[str, int], s: dict[str, Any]) -> ComparatorModel:
    return MFMF(
        dims,
        decl["modalities"],
        decl["value_modality"],
        s.hidden,
        int(decl["heads"]),
        s.dropout,
        value_tokens=int(decl["value_tokens"]),
    )


def feature_interaction(decl: dict[str, Any], dims: dict[str, int], s: dict[str, Any]) -> ComparatorModel:
    return FeatureInteraction(dims, decl["modalities"], s.hidden, int(decl["rank"]), s.dropout)


def parachute(decl: dict[str, Any], dims: dict[str, int], s: dict[str, Any]) -> ComparatorModel:
    return Parachute(
        dims,
        decl["modalities"],
        d=s.d,
        d_int=s.d_int,
        heads=s.heads,
        dropout=s.dropout,
        ties=s.ties,
    )
