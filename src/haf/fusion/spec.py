"""A fusion method is a declaration, not a training loop: which modalities, alignment, drop, detach, loss.

``config.methods.<name>`` (family ``fusion``) is turned into a :class:`MethodSpec`; the one trainer
in :mod:`haf.fusion.train` reads nothing else to decide what to do.

==========================  =========================================================================
``modalities``              slots of the fusion MLP (default all seven, in ``MODALITIES`` order)
``align``                   ``none``: projectors trained with the task loss, jointly with the fusion
                            MLP; ``ga``/``clip``: Stage 2 projectors of that kind
``drop``                    random-modality training with MoFe (Eq. 10-11)
``detach``                  ``true``: Stage 2 projectors frozen (loaded), Stage 1 embeddings fixed;
                            ``false``: Stages 1-3 trained jointly with Eq. 12 (CLAM encoders included)
``init``                    ``detach: false`` only: the CLAM encoders start ``scratch`` (seeded fresh
                            init) or from the fold's ``stage1`` models (``stage1/{pm}/fold_k/model.pt``)
``task_loss``               ``bce`` (binary target, AUC) or ``cox`` (Breslow partial likelihood, C-index)
==========================  =========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from haf.alignment.losses import ALIGNMENTS
from haf.errors import HafConfigError
from haf.methods import ENCODER_INITS, TASK_LOSSES, method_declaration
from haf.modalities import MODALITIES


@dataclass(frozen=True)
class MethodSpec:
    name: str
    modalities: tuple[str, ...]
    align: str = "none"
    drop: bool = False
    detach: bool = True
    task_loss: str = "bce"
    init: str = "scratch"

    @classmethod
    def from_declaration(cls, name: str, declaration: dict[str, Any]) -> MethodSpec:
        """Complete (``haf.methods.method_declaration``) and check one fusion declaration."""
        decl = method_declaration(name, dict(declaration))
        if decl["family"] != "fusion":
            raise HafConfigError(f"methods.{name}: family {decl['family']!r} is not a fusion method")
        spec = cls(
            name=name,
            modalities=tuple(m for m in MODALITIES if m in decl["modalities"]),
            align=str(decl["align"]),
            drop=bool(decl["drop"]),
            detach=bool(decl["detach"]),
            task_loss=str(decl["task_loss"]),
            init=str(decl.get("init", "scratch")),
        )
        if spec.init not in ENCODER_INITS:
            raise HafConfigError(
                f"methods.{name}.init must be one of {', '.join(ENCODER_INITS)}, got {spec.init!r}"
            )
        if spec.detach and spec.init != "scratch":
            raise HafConfigError(
                f"methods.{name}.init: {spec.init!r} applies to no-detach methods only (detach: false); a "
                "detached method always reads the Stage 1 embeddings"
            )
        if spec.align != "none" and spec.align not in ALIGNMENTS:
            raise HafConfigError(
                f"methods.{name}.align must be none or one of {', '.join(ALIGNMENTS)}, got {spec.align!r}"
            )
        if spec.task_loss not in TASK_LOSSES:
            raise HafConfigError(
                f"methods.{name}.task_loss must be one of {', '.join(TASK_LOSSES)}, got {spec.task_loss!r}"
            )
        if spec.align != "none" and spec.modalities != MODALITIES:
            raise HafConfigError(
                f"methods.{name}: align {spec.align!r} uses the Stage 2 projectors of all seven modalities; "
                "drop `modalities` or set align: none"
            )
        if spec.align == "clip" and "wsi" not in spec.modalities:
            raise HafConfigError(
                f"methods.{name}: CLIP alignment is anchored to wsi, which is not among its modalities"
            )
        return spec

    @property
    def warm_start(self) -> bool:
        """Whether a no-detach method's CLAM encoders start from the fold's Stage 1 models."""
        return not self.detach and self.init == "stage1"

    @property
    def uses_stage2(self) -> bool:
        """Whether the method reads ``stage2/{align}/fold_k/projectors.pt`` (aligned and detached)."""
        return self.detach and self.align != "none"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "modalities": list(self.modalities),
            "align": self.align,
            "drop": self.drop,
            "detach": self.detach,
            "task_loss": self.task_loss,
            "init": self.init,
        }
