"""Fold inputs as tensors, the rows a loss may use, minibatches and batched prediction.

Every per-fold trainer (Stage 2, Stage 3, comparators) reads :class:`~haf.artifacts.fold_inputs.FoldInputs`
through :class:`FoldTensors` and scores patients through :func:`predict_scores`, so the zeroing of
masked modalities and the batching cannot differ between methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from haf.artifacts.fold_inputs import FoldInputs
from haf.modalities import MODALITIES

if TYPE_CHECKING:
    from haf.mil.tokens import InstanceTokens

ScoreFn = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
"""``score_fn(x, present) -> (B,)``: a logit (binary methods) or a log hazard (Cox methods)."""


def token_keys(modality: str) -> tuple[str, str, str]:
    """The keys of a pathology modality's instance tokens in a batch's ``x`` (token-level comparators).

    ``{m}.tokens`` (..., U, N, D): the tokens of the U distinct (patient, modality present) rows of the
    batch; ``{m}.token_mask`` (..., U, N) bool: real instances; ``{m}.token_index`` (..., B) long: row b's
    entry among the U.  A row whose modality is absent (observed or masked) points at an all-padding
    entry, so the tokens of a dropped modality never reach a model (the model also checks ``present``).
    One entry per distinct patient keeps a masked evaluation (the same test patients under hundreds of
    masks) from copying and projecting every patient's tokens once per mask.
    """
    return f"{modality}.tokens", f"{modality}.token_mask", f"{modality}.token_index"


@dataclass
class TokenTable:
    """Instance tokens on one device: per pathology modality ``x`` (P + 1, N, D) and ``mask`` (P + 1, N);
    row P is all padding (a patient without tokens, or with the modality absent)."""

    x: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]
    patient_rows: dict[str, int]

    @property
    def empty(self) -> int:
        return len(self.patient_rows)

    @classmethod
    def from_tokens(cls, tokens: InstanceTokens, device: torch.device | str) -> TokenTable:
        x, mask = {}, {}
        for m in tokens.modalities:
            arr, valid = tokens.x[m], tokens.mask[m]
            x[m] = torch.as_tensor(
                np.concatenate([arr, np.zeros((1, *arr.shape[1:]), arr.dtype)]), device=device
            )
            mask[m] = torch.as_tensor(
                np.concatenate([valid, np.zeros((1, valid.shape[1]), bool)]), device=device
            )
        return cls(x, mask, {str(p): i for i, p in enumerate(tokens.patient_id)})

    def rows_of(self, patient_ids: np.ndarray) -> np.ndarray:
        """(n,) table row of each patient (the padding row for one without tokens)."""
        return np.array([self.patient_rows.get(str(p), self.empty) for p in patient_ids], dtype=np.int64)

    def batch(self, table_rows: torch.Tensor, present: torch.Tensor) -> dict[str, torch.Tensor]:
        """The :func:`token_keys` entries of a batch: ``table_rows`` (B,) or (K, B), ``present`` (..., B, 7)."""
        out: dict[str, torch.Tensor] = {}
        for m in self.x:
            j = MODALITIES.index(m)
            rows = torch.where(present[..., j], table_rows, torch.full_like(table_rows, self.empty))
            flat = rows.reshape(-1, rows.shape[-1])  # (K or 1, B)
            uniques, inverses = [], []
            for r in flat:
                u, inv = torch.unique(r, return_inverse=True)
                uniques.append(u)
                inverses.append(inv)
            width = max(len(u) for u in uniques)
            index = torch.full((len(uniques), width), self.empty, dtype=torch.long, device=rows.device)
            for i, u in enumerate(uniques):
                index[i, : len(u)] = u
            mask = self.mask[m][index]  # (K or 1, U, N)
            n = max(1, int(mask.sum(dim=-1).max()))  # real instances come first: trim the padding
            lead = rows.shape[:-1]
            key_x, key_mask, key_index = token_keys(m)
            out[key_x] = self.x[m][index, :n].reshape(*lead, width, n, self.x[m].shape[-1])
            out[key_mask] = mask[:, :, :n].reshape(*lead, width, n)
            out[key_index] = torch.stack(inverses).reshape(rows.shape)
        return out


@dataclass
class FoldTensors:
    """Fold inputs as tensors on one device (the cohort is small: everything fits at once)."""

    x: dict[str, torch.Tensor]
    present: torch.Tensor  # (n, 7) bool
    label: torch.Tensor  # (n,) float, NaN = no binary label
    time: torch.Tensor
    event: torch.Tensor
    device: torch.device
    tokens: TokenTable | None = None  # instance tokens (token-level comparators), else None
    token_rows: torch.Tensor | None = None  # (n,) each patient's row in ``tokens``

    @classmethod
    def from_inputs(
        cls,
        inputs: FoldInputs,
        device: torch.device,
        tokens: InstanceTokens | TokenTable | None = None,
    ) -> FoldTensors:
        table, token_rows = _token_table(tokens, [inputs], device)
        return cls(
            x={
                m: torch.as_tensor(inputs.features[m], dtype=torch.float32, device=device) for m in MODALITIES
            },
            present=torch.as_tensor(inputs.present, dtype=torch.bool, device=device),
            label=torch.as_tensor(inputs.label, dtype=torch.float32, device=device),
            time=torch.as_tensor(inputs.time, dtype=torch.float32, device=device),
            event=torch.as_tensor(inputs.event, dtype=torch.float32, device=device),
            device=device,
            tokens=table,
            token_rows=None if token_rows is None else token_rows[0],
        )

    def rows(
        self, idx: np.ndarray | torch.Tensor, present: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Features and presence of some rows; ``present`` overrides the observed mask (masked evaluation).

        Features of modalities absent under the mask are zeroed, so a masked modality's values can
        never reach a model, whatever the model does with its mask; with instance tokens, the
        :func:`token_keys` entries are added (an absent modality's rows point at padding).
        """
        idx_t = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        mask = self.present[idx_t] if present is None else present.to(self.device)
        x = {m: self.x[m][idx_t] * mask[:, j : j + 1].to(torch.float32) for j, m in enumerate(MODALITIES)}
        if self.tokens is not None:
            x.update(self.tokens.batch(self.token_rows[idx_t], mask))
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
    tokens: TokenTable | None = None  # instance tokens shared by the members (token-level comparators)
    token_rows: torch.Tensor | None = None  # (K, n_max) each row's entry in ``tokens`` (padding: none)

    @classmethod
    def from_inputs(
        cls,
        inputs: list[FoldInputs],
        device: torch.device,
        tokens: InstanceTokens | TokenTable | None = None,
    ) -> StackedFoldTensors:
        table, token_rows = _token_table(tokens, inputs, device)
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
            tokens=table,
            token_rows=token_rows,
        )

    def rows(self, rows: torch.Tensor, valid: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Features (K, B, d) and presence (K, B, 7) of these rows; absent modalities and padding zeroed."""
        from haf.runtime.stacked import gather_rows

        present = gather_rows(self.present, rows) & valid.unsqueeze(-1)
        x = {
            m: gather_rows(self.x[m], rows) * present[..., j : j + 1].to(torch.float32)
            for j, m in enumerate(MODALITIES)
        }
        if self.tokens is not None:
            x.update(self.tokens.batch(gather_rows(self.token_rows, rows), present))
        return x, present

    def targets(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        from haf.runtime.stacked import gather_rows

        return {name: gather_rows(getattr(self, name), rows) for name in ("label", "time", "event")}


def _token_table(
    tokens: InstanceTokens | TokenTable | None, inputs: list[FoldInputs], device: torch.device | str
) -> tuple[TokenTable | None, torch.Tensor | None]:
    """The token table on ``device`` and (K, n_max) each fold row's entry in it (padding rows: none)."""
    if tokens is None:
        return None, None
    table = tokens if isinstance(tokens, TokenTable) else TokenTable.from_tokens(tokens, device)
    n_max = max(i.n for i in inputs)
    rows = np.full((len(inputs), n_max), table.empty, dtype=np.int64)
    for k, inp in enumerate(inputs):
        rows[k, : inp.n] = table.rows_of(inp.patient_id)
    return table, torch.as_tensor(rows, device=device)
