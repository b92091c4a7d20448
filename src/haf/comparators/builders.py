"""Model builders of the comparator families: ``(declaration, dims, settings, layers) -> untrained model``.

:data:`haf.methods.METHOD_FAMILIES` names one of these per comparator family; a checkpoint is rebuilt
through the same function (:func:`haf.comparators.train.load_model`, plain layers).  ``settings`` is
the family's section (:class:`~haf.settings.Stage3Settings` for the binary comparators,
:class:`~haf.settings.ParachuteSettings` for PARACHUTE); family options come from the declaration,
whose defaults the schema fills.  ``layers`` (None: plain modules) builds the same model stacked over
K folds, with ``dims`` then giving each modality's width per member.
"""

from __future__ import annotations

from typing import Any

from haf.comparators.models import MFMF, AttentionFusion, ComparatorModel, FeatureInteraction, LateFusion
from haf.comparators.parachute import Parachute
from haf.runtime.stacked import Layers


def late_fusion(
    decl: dict[str, Any], dims: dict[str, Any], s: Any, layers: Layers | None = None
) -> ComparatorModel:
    return LateFusion(
        dims, decl["modalities"], s.hidden, s.dropout, aux_weight=float(decl["aux_weight"]), layers=layers
    )


def attention_fusion(
    decl: dict[str, Any], dims: dict[str, Any], s: Any, layers: Layers | None = None
) -> ComparatorModel:
    return AttentionFusion(
        dims,
        decl["modalities"],
        s.hidden,
        int(decl["heads"]),
        s.dropout,
        n_blocks=int(decl["layers"]),
        layers=layers,
    )


def mfmf(decl: dict[str, Any], dims: dict[str, Any], s: Any, layers: Layers | None = None) -> ComparatorModel:
    return MFMF(
        dims,
        decl["modalities"],
        decl["value_modality"],
        s.hidden,
        int(decl["heads"]),
        s.dropout,
        value_tokens=int(decl["value_tokens"]),
        layers=layers,
    )


def feature_interaction(
    decl: dict[str, Any], dims: dict[str, Any], s: Any, layers: Layers | None = None
) -> ComparatorModel:
    return FeatureInteraction(dims, decl["modalities"], s.hidden, int(decl["rank"]), s.dropout, layers=layers)


def parachute(
    decl: dict[str, Any], dims: dict[str, Any], s: Any, layers: Layers | None = None
) -> ComparatorModel:
    return Parachute(
        dims,
        decl["modalities"],
        d=s.d,
        d_int=s.d_int,
        heads=s.heads,
        dropout=s.dropout,
        ties=s.ties,
        layers=layers,
        cox_normalisation=s.cox_normalisation,
    )
