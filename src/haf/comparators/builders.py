"""Model builders of the comparator families: ``(declaration, dims, settings, layers) -> untrained model``.

:data:`haf.methods.METHOD_FAMILIES` names one of these per comparator family; a checkpoint is rebuilt
through the same function (:func:`haf.comparators.train.load_model`, plain layers).  ``settings`` is
the family's section (:class:`~haf.settings.Stage3Settings` for the binary comparators,
:class:`~haf.settings.ParachuteSettings` for PARACHUTE); family options come from the declaration,
whose defaults the schema fills.  ``layers`` (None: plain modules) builds the same model stacked over
K folds, with ``dims`` then giving each modality's width per member.  ``attention_fusion`` and ``mfmf``
build their token-level variant for ``tokens: instance`` (``dims`` then also holds each pathology
modality's instance token width under ``"{m}.tokens"``); a declaration without the key (saved before it
existed) is ``tokens: modality``, the slide-level model.
"""

from __future__ import annotations

from typing import Any

from haf.comparators.models import (
    MFMF,
    AttentionFusion,
    AttentionFusionTokens,
    ComparatorModel,
    FeatureInteraction,
    LateFusion,
    MFMFTokens,
)
from haf.comparators.parachute import Parachute
from haf.runtime.stacked import Layers


def late_fusion(
    decl: dict[str, Any], dims: dict[str, Any], s: Any, layers: Layers | None = None
) -> ComparatorModel:
    return LateFusion(
        dims, decl["modalities"], s.hidden, s.dropout, aux_weight=float(decl["aux_weight"]), layers=layers
    )


def instance_tokens(decl: dict[str, Any]) -> bool:
    """The declaration asks for the token-level variant (``tokens: instance``)."""
    return decl.get("tokens", "modality") == "instance"


def attention_fusion(
    decl: dict[str, Any], dims: dict[str, Any], s: Any, layers: Layers | None = None
) -> ComparatorModel:
    cls = AttentionFusionTokens if instance_tokens(decl) else AttentionFusion
    return cls(
        dims,
        decl["modalities"],
        s.hidden,
        int(decl["heads"]),
        s.dropout,
        n_blocks=int(decl["layers"]),
        layers=layers,
    )


def mfmf(decl: dict[str, Any], dims: dict[str, Any], s: Any, layers: Layers | None = None) -> ComparatorModel:
    cls = MFMFTokens if instance_tokens(decl) else MFMF
    return cls(
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
