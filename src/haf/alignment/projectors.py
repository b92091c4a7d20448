"""Per-modality projectors phi_m (Eq. 4): a two-layer MLP from each modality's features to d_out.

The bank returns L2-normalised projections with absent slots set to zero, in the slot order of the
modalities it was built for.  Alignment (Stage 2) works on these unit vectors, and Stage 3 consumes
the same unit vectors, so every fusion method (aligned or not) sees the same kind of input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from haf.runtime.stacked import Layers


class Projector(nn.Module):
    """Linear(d_in, hidden) -> ReLU -> Linear(hidden, d_out); a zero-width input gets one zero column.

    ``d_in`` may be a list (stacked over members whose fold gives this modality different widths: the
    inputs are zero-padded to the widest, each member keeps its own fan-in).
    """

    def __init__(
        self, d_in: int | Sequence[int], hidden: int, d_out: int, layers: Layers | None = None
    ) -> None:
        super().__init__()
        layers = layers or Layers()
        widths = [int(w) for w in d_in] if isinstance(d_in, (list, tuple)) else None
        self.d_in = max(widths) if widths is not None else int(d_in)
        first = layers.linear(
            max(self.d_in, 1), hidden, in_widths=[max(w, 1) for w in widths] if widths is not None else None
        )
        self.net = nn.Sequential(first, nn.ReLU(), layers.linear(hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.d_in == 0:
            x = x.new_zeros(*x.shape[:-1], 1)
        return self.net(x)


class ProjectorBank(nn.Module):
    """The projectors of a set of modalities; ``forward`` gives (B, M, d_out) unit vectors, zero where absent."""

    def __init__(
        self,
        dims: dict[str, int] | dict[str, list[int]],
        modalities: Sequence[str],
        hidden: int,
        d_out: int,
        layers: Layers | None = None,
    ) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.dims = {m: dims[m] if isinstance(dims[m], list) else int(dims[m]) for m in self.modalities}
        self.hidden = int(hidden)
        self.d_out = int(d_out)
        self.proj = nn.ModuleDict(
            {m: Projector(self.dims[m], hidden, d_out, layers) for m in self.modalities}
        )

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """``x``: modality -> (..., B, d_m); ``present``: (..., B, M) over this bank's modalities."""
        u = torch.stack([F.normalize(self.proj[m](x[m]), dim=-1) for m in self.modalities], dim=-2)
        return u * present.unsqueeze(-1).to(u.dtype)

    def spec(self) -> dict[str, Any]:
        """What is needed to rebuild the bank (saved next to its state dict)."""
        return {
            "dims": dict(self.dims),
            "modalities": list(self.modalities),
            "hidden": self.hidden,
            "d_out": self.d_out,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ProjectorBank:
        return cls(spec["dims"], spec["modalities"], spec["hidden"], spec["d_out"])

    def subset(self, modalities: Sequence[str]) -> ProjectorBank:
        """A bank over some of these modalities sharing the same projector modules."""
        sub = ProjectorBank(self.dims, modalities, self.hidden, self.d_out)
        for m in modalities:
            sub.proj[m] = self.proj[m]
        return sub
