"""Fold inputs as tensors, the rows a loss may use, minibatches and batched prediction.

Every per-fold trainer (Stage 2, Stage 3, comparators) reads :class:`~haf.artifacts.fold_inputs.FoldInputs`
through :class:`FoldTensors` and scores patients through :func:`predict_scores`, so the zeroing of
masked modalities and the batching cannot differ between methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from haf.artifacts.fold_inputs import FoldInputs
from haf.modalities import MODALITIES

ScoreFn = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
"""``score_fn(x, present) -> (B,)``: a logit (binary methods) or a log hazard (Cox methods)."""


@dataclass
class FoldTensors:
    """Fold inputs as tensors on one device (the cohort is small: everything fits at once)."""

    x: dict[str, torch.Tensor]
    present: torch.Tensor  # (n, 7) bool
    label: torch.Tensor  # (n,) float, NaN = no binary label
    time: torch.Tensor
    event: torch.Tensor
    device: torch.device

    @classmethod
    def from_inputs(cls, inputs: FoldInputs, device: torch.device) -> FoldTensors:
        return cls(
            x={
                m: torch.as_tensor(inputs.features[m], dtype=torch.float32, device=device) for m in MODALITIES
            },
            present=torch.as_tensor(inputs.present, dtype=torch.bool, device=device),
            label=torch.as_tensor(inputs.label, dtype=torch.float32, device=device),
            time=torch.as_tensor(inputs.time, dtype=torch.float32, device=device),
            event=torch.as_tensor(inputs.event, dtype=torch.float32, device=device),
            device=device,
        )

    def rows(
        self, idx: np.ndarray | torch.Tensor, present: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Features and presence of some rows; ``present`` overrides the observed mask (masked evaluation).

        Features of modalities absent under the mask are zeroed, so a masked modality's values can
        never reach a model, whatever the model does with its mask.
        """
        idx_t = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        mask = self.present[idx_t] if present is None else present.to(self.device)
        x = {m: self.x[m][idx_t] * mask[:, j : j + 1].to(torch.float32) for j, m in enumerate(MODALITIES)}
        return x, mask


def training_rows(inputs: FoldInputs, part: str, task_loss: str) -> np.ndarray:
    """Rows of a part that a loss can use: binary losses need a label, Cox losses use everyone."""
    idx = inputs.index(part)
    if task_loss == "bce":
        idx = idx[~np.isnan(inputs.label[idx])]
    return idx


def minibatches(idx: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled minibatches; a trailing batch of one is merged into the previous one (BatchNorm/Cox need 2+)."""
    order = rng.permutation(idx)
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] < 2:
        starts.pop()
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(order)
        yield order[start:end]


@torch.no_grad()
def predict_scores(
    score_fn: ScoreFn,
    tensors: FoldTensors,
    idx: np.ndarray,
    present: np.ndarray | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """Scores for rows ``idx`` (optionally under a presence mask for those rows), in batches."""
    out = []
    for start in range(0, len(idx), batch_size):
        rows = idx[start : start + batch_size]
        mask = (
            None
            if present is None
            else torch.as_tensor(present[start : start + batch_size], dtype=torch.bool)
        )
        x, m = tensors.rows(rows, mask)
        out.append(score_fn(x, m).float().reshape(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class StackedFoldTensors:
    """The fold inputs of K members as padded tensors (K, n_max, ...): member k's rows are its fold's.

    Features are zero-padded to the widest fold of each modality (``widths[m][k]`` is member k's own
    width) and patients to the largest fold; rows beyond member k's ``n[k]`` are never selected.
    """

    x: dict[str, torch.Tensor]  # modality -> (K, n_max, d_max)
    present: torch.Tensor  # (K, n_max, 7) bool
    label: torch.Tensor  # (K, n_max) float, NaN = no binary label
    time: torch.Tensor
    event: torch.Tensor
    n: list[int]
    widths: dict[str, list[int]]
    device: torch.device

    @classmethod
    def from_inputs(cls, inputs: list[FoldInputs], device: torch.device) -> StackedFoldTensors:
        k, n = len(inputs), [i.n for i in inputs]
        n_max = max(n)
        widths = {m: [int(i.features[m].shape[1]) for i in inputs] for m in MODALITIES}
        x = {}
        for m in MODALITIES:
            arr = np.zeros((k, n_max, max(widths[m])), dtype=np.float32)
            for j, i in enumerate(inputs):
                arr[j, : i.n, : widths[m][j]] = i.features[m]
            x[m] = torch.as_tensor(arr, device=device)

        def stack(name: str, fill: float, dtype) -> torch.Tensor:
            arr = np.full((k, n_max), fill, dtype=dtype)
            for j, i in enumerate(inputs):
                arr[j, : i.n] = getattr(i, name)
            return torch.as_tensor(arr, device=device)

        present = np.zeros((k, n_max, len(MODALITIES)), dtype=bool)
        for j, i in enumerate(inputs):
            present[j, : i.n] = i.present
        return cls(
            x=x,
            present=torch.as_tensor(present, device=device),
            label=stack("label", np.nan, np.float32),
            time=stack("time", 1.0, np.float32),
            event=stack("event", 0.0, np.float32),
            n=n,
            widths=widths,
            device=torch.device(device),
        )

    def rows(self, rows: torch.Tensor, valid: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Features (K, B, d) and presence (K, B, 7) of these rows; absent modalities and padding zeroed."""
        from haf.runtime.stacked import gather_rows

        present = gather_rows(self.present, rows) & valid.unsqueeze(-1)
        x = {
            m: gather_rows(self.x[m], rows) * present[..., j : j + 1].to(torch.float32)
            for j, m in enumerate(MODALITIES)
        }
        return x, present

    def targets(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        from haf.runtime.stacked import gather_rows

        return {name: gather_rows(getattr(self, name), rows) for name in ("label", "time", "event")}
