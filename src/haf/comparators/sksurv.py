"""Classical survival baselines (PARACHUTE's Table 5 CoxPH, its supplement's multimodal CoxNet) via scikit-survival.

Family ``sksurv`` (kind ``sksurv``, rule ``sksurv``): a linear Cox model on the concatenated features of
the method's modalities, fitted per fold on the **training part only**; the validation part only picks
the penalty (Harrell's C, ties: the stronger penalty); the test part is only predicted.

Design matrix (one row per patient; :class:`LinearDesign`): for each modality m of the method, its
features where the patient has m, else the **training mean of m** (over the training patients who have
m), then a presence column (1 = has m).  Every column is then standardised with the training part's
mean and SD (an SD of 0, a column constant on the training part, gets scale 1: its coefficient stays 0).
A missing modality is thus "the average training patient's m, flagged absent"; masking a modality at
test time (Fig. 2, the PARACHUTE protocol) is the same: its features at the training mean, presence 0.
The risk is the linear predictor ``z @ beta`` (log hazard, higher = worse), exactly scikit-survival's
``predict`` on the standardised design.

Estimators (``estimator`` in the declaration; settings in the ``sksurv`` config section):

* ``coxph``: ``CoxPHSurvivalAnalysis(alpha, ties)``, a ridge penalty ``0.5 * alpha * ||beta||^2`` on the
  summed log partial likelihood (scikit-survival's scaling); ``sksurv.coxph_alpha`` one value (fixed) or
  a grid chosen on validation;
* ``coxnet``: ``CoxnetSurvivalAnalysis(l1_ratio, n_alphas, alpha_min_ratio)``, the elastic-net path
  fitted once on the training part; the path's penalty with the best validation Harrell's C is kept.

Deterministic (no random draw): the predictions' ``seed`` column is 0.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from haf.artifacts.fold_inputs import FoldInputs
from haf.errors import HafInputError
from haf.eval.scores import cindex_or_nan
from haf.methods import method_declaration
from haf.modalities import MODALITIES
from haf.runtime.outputs import write_fold_result
from haf.runtime.tensors import FoldTensors
from haf.settings import EvaluationSettings, SksurvSettings

log = logging.getLogger(__name__)

ESTIMATORS: tuple[str, ...] = ("coxph", "coxnet")


@dataclass(frozen=True)
class LinearDesign:
    """How a patient becomes a row of the standardised design matrix (everything fitted on training rows).

    ``fill[m]``: modality m's training mean (what an absent m is replaced by); ``center``/``scale``: the
    training mean and SD of every design column (features of each modality, then its presence column).
    """

    modalities: tuple[str, ...]
    widths: tuple[int, ...]
    fill: dict[str, np.ndarray]
    center: np.ndarray
    scale: np.ndarray
    columns: tuple[str, ...]

    @classmethod
    def fit(cls, inputs: FoldInputs, rows: np.ndarray, modalities: tuple[str, ...]) -> LinearDesign:
        fill, widths, columns = {}, [], []
        for m in modalities:
            j = MODALITIES.index(m)
            have = rows[inputs.present[rows, j]]
            x = inputs.features[m].astype(np.float64)
            fill[m] = x[have].mean(axis=0) if len(have) else np.zeros(x.shape[1])
            widths.append(x.shape[1])
            names = inputs.columns.get(m) or [f"{k}" for k in range(x.shape[1])]
            columns += [f"{m}:{c}" for c in names] + [f"{m}:present"]
        design = cls(tuple(modalities), tuple(widths), fill, np.zeros(0), np.zeros(0), tuple(columns))
        raw = design.raw(inputs.features, inputs.present, rows)
        center = raw.mean(axis=0)
        scale = raw.std(axis=0)
        scale[scale == 0] = 1.0
        return cls(tuple(modalities), tuple(widths), fill, center, scale, tuple(columns))

    def raw(
        self, features: dict[str, np.ndarray], present: np.ndarray, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """Unstandardised design rows: each modality's features (or its training mean where absent), then
        its presence; ``present`` may be a test-time mask (the masked modalities' features are ignored)."""
        take = slice(None) if rows is None else rows
        blocks = []
        for m in self.modalities:
            j = MODALITIES.index(m)
            has = np.asarray(present[take, j], dtype=bool)[:, None]
            x = np.asarray(features[m][take], dtype=np.float64)
            blocks += [np.where(has, x, self.fill[m][None, :]), has.astype(np.float64)]
        return np.concatenate(blocks, axis=1)

    def standardised(
        self, features: dict[str, np.ndarray], present: np.ndarray, rows: np.ndarray | None = None
    ) -> np.ndarray:
        return (self.raw(features, present, rows) - self.center) / self.scale

    def state(self) -> dict[str, torch.Tensor]:
        state = {"center": torch.as_tensor(self.center), "scale": torch.as_tensor(self.scale)}
        state.update({f"fill_{m}": torch.as_tensor(self.fill[m]) for m in self.modalities})
        return state


class LinearCoxModel(torch.nn.Module):
    """The fitted linear predictor as a scorer of the common ``(x, present) -> risk`` call (float64 inside)."""

    def __init__(self, design: LinearDesign, coef: np.ndarray) -> None:
        super().__init__()
        self.design = design
        self.modalities = design.modalities
        self.register_buffer("coef", torch.as_tensor(np.asarray(coef, dtype=np.float64)))
        self.register_buffer("center", torch.as_tensor(design.center))
        self.register_buffer("scale", torch.as_tensor(design.scale))
        for m in design.modalities:
            self.register_buffer(f"fill_{m}", torch.as_tensor(design.fill[m]))

    def forward(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        blocks = []
        for m in self.modalities:
            j = MODALITIES.index(m)
            has = present[:, j : j + 1].to(torch.float64)
            fill = getattr(self, f"fill_{m}")
            blocks += [torch.where(has > 0, x[m].to(torch.float64), fill), has]
        z = (torch.cat(blocks, dim=1) - self.center) / self.scale
        return z @ self.coef


def _surv(inputs: FoldInputs, rows: np.ndarray) -> np.ndarray:
    from sksurv.util import Surv

    return Surv.from_arrays(event=inputs.event[rows].astype(bool), time=inputs.time[rows].astype(float))


def _check_fold(name: str, inputs: FoldInputs, train: np.ndarray) -> None:
    deaths = int(inputs.event[train].sum())
    if deaths < 2:
        raise HafInputError(
            None, f"{name} fold {inputs.fold}: the training part has {deaths} deaths; a Cox fit needs 2+"
        )


@dataclass
class SksurvResult:
    """One fold's fitted baseline and what writing its outputs needs (as the comparators' results)."""

    model: LinearCoxModel
    history: pd.DataFrame
    tensors: FoldTensors
    checkpoint: dict[str, Any]
    task_loss: str = "cox"
    seed: int = 0

    def score_fn(self, x: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.model(x, present)


def _select(
    val_c: list[float], val_loss: list[float], penalties: list[float], n_nonzero: list[int]
) -> tuple[int, str]:
    """The kept candidate and the criterion that chose it.

    The best validation Harrell's C (ties: the stronger penalty); a validation part where no candidate
    has a C (no death, or no comparable pair) falls back to the lowest validation partial likelihood loss
    (needs a death), then to the strongest penalty that keeps a non-zero coefficient (the most
    regularised model that is not a constant); the caller logs a fallback as a warning.
    """
    order = list(range(len(penalties)))
    for values, criterion, sign in ((val_c, "val_cindex", 1.0), (val_loss, "val_loss", -1.0)):
        v = np.asarray(values, dtype=float)
        if np.isfinite(v).any():
            best = np.nanmax(sign * v)
            tied = [i for i in order if sign * v[i] == best]
            return max(tied, key=lambda i: penalties[i]), criterion
    useful = [i for i in order if n_nonzero[i] > 0] or order
    return max(useful, key=lambda i: penalties[i]), "strongest_nonzero"


def fit_fold(
    inputs: FoldInputs, declaration: dict[str, Any], settings: SksurvSettings | dict[str, Any], *, name: str
) -> SksurvResult:
    """Fit one fold's baseline on its training part (penalty by validation Harrell's C)."""
    from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis

    s = SksurvSettings.from_config(settings)
    decl = method_declaration(name, declaration)
    estimator = decl.get("estimator", "coxph")
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"methods.{name}.estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}"
        )
    modalities = tuple(decl["modalities"])
    train, val = inputs.index("train"), inputs.index("val")
    _check_fold(name, inputs, train)
    design = LinearDesign.fit(inputs, train, modalities)
    z_train = design.standardised(inputs.features, inputs.present, train)
    z_val = design.standardised(inputs.features, inputs.present, val)
    y_train = _surv(inputs, train)
    t_val, e_val = inputs.time[val], inputs.event[val]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if estimator == "coxph":
            penalties = [float(a) for a in s.coxph_alpha]
            coefs = [
                CoxPHSurvivalAnalysis(alpha=a, ties=s.coxph_ties, n_iter=100).fit(z_train, y_train).coef_
                for a in penalties
            ]
        else:
            net = CoxnetSurvivalAnalysis(
                l1_ratio=s.coxnet_l1_ratio,
                n_alphas=s.coxnet_n_alphas,
                alpha_min_ratio=s.coxnet_alpha_min_ratio,
                max_iter=s.coxnet_max_iter,
            ).fit(z_train, y_train)
            penalties = [float(a) for a in net.alphas_]
            coefs = [net.coef_[:, i] for i in range(len(penalties))]
    for w in caught:  # convergence warnings name the fold and are kept in the log, never hidden
        log.warning("%s fold %d: scikit-survival: %s", name, inputs.fold, w.message)
    val_c = [cindex_or_nan(t_val, e_val, z_val @ b) for b in coefs]
    val_loss = [_neg_log_partial(z_val @ b, inputs, val) for b in coefs]
    n_nonzero = [int(np.count_nonzero(b)) for b in coefs]
    best, selected_by = _select(val_c, val_loss, penalties, n_nonzero)
    if len(penalties) > 1 and selected_by != "val_cindex":
        log.warning(
            "%s fold %d: the validation part (%d patients, %d deaths) gives no Harrell's C: penalty chosen by "
            "%s (selected_by in train_log.tsv)", name, inputs.fold, len(val), int(e_val.sum()), selected_by,
        )  # fmt: skip
    history = pd.DataFrame(
        {
            "method": name,
            "epoch": np.arange(len(penalties)),
            "alpha": penalties,
            "n_nonzero": n_nonzero,
            "train_loss": [_neg_log_partial(z_train @ b, inputs, train) for b in coefs],
            "val_loss": val_loss,
            "val_score": val_c,
            "train_cindex": [
                cindex_or_nan(inputs.time[train], inputs.event[train], z_train @ b) for b in coefs
            ],
            "lr": np.nan,
            "best": np.arange(len(penalties)) == best,
            "selected_by": selected_by if len(penalties) > 1 else "fixed",
        }
    )
    coef = np.asarray(coefs[best], dtype=np.float64)
    log.info(
        "%s fold %d: %s on %d training patients (%d deaths), %d columns (%s); penalty %.4g of %d by validation "
        "Harrell's C %.4f (%d val patients, %d deaths), %d non-zero coefficients",
        name, inputs.fold, estimator, len(train), int(inputs.event[train].sum()), len(design.columns),
        ", ".join(modalities), penalties[best], len(penalties), val_c[best], len(val), int(e_val.sum()),
        int(np.count_nonzero(coef)),
    )  # fmt: skip
    model = LinearCoxModel(design, coef).eval()
    checkpoint = {
        "method": name,
        "declaration": dict(decl),
        "fold": int(inputs.fold),
        "estimator": estimator,
        "modalities": list(modalities),
        "widths": list(design.widths),
        "columns": list(design.columns),
        "alpha": penalties[best],
        "selected_by": selected_by if len(penalties) > 1 else "fixed",
        "settings": s.as_dict(),
        "state_dict": {"coef": torch.as_tensor(coef), **design.state()},
        "seed": 0,
    }
    tensors = FoldTensors.from_inputs(inputs, torch.device("cpu"))
    return SksurvResult(model, history, tensors, checkpoint)


def _neg_log_partial(risk: np.ndarray, inputs: FoldInputs, rows: np.ndarray) -> float:
    """Breslow negative log partial likelihood averaged over events (haf.losses' convention), for the log."""
    from haf.losses import cox_partial_likelihood

    if int(inputs.event[rows].sum()) == 0:
        return float("nan")
    return float(
        cox_partial_likelihood(
            torch.as_tensor(risk), torch.as_tensor(inputs.time[rows]), torch.as_tensor(inputs.event[rows])
        )
    )


def load_model(checkpoint: dict[str, Any]) -> LinearCoxModel:
    """Rebuild a fitted baseline from its ``model.pt`` payload (weights only: no pickled estimator)."""
    state = checkpoint["state_dict"]
    modalities = tuple(checkpoint["modalities"])
    design = LinearDesign(
        modalities,
        tuple(checkpoint["widths"]),
        {m: state[f"fill_{m}"].numpy() for m in modalities},
        state["center"].numpy(),
        state["scale"].numpy(),
        tuple(checkpoint["columns"]),
    )
    return LinearCoxModel(design, state["coef"].numpy()).eval()


def run_sksurv_folds(
    inputs_list: list[FoldInputs],
    declaration: dict[str, Any],
    settings: SksurvSettings | dict[str, Any],
    evaluation: EvaluationSettings | dict[str, Any],
    outputs_per_fold: list[dict[str, str | Path]],
    *,
    method: str,
) -> list[pd.DataFrame]:
    """Fit every fold and write its four outputs (the comparators' contracts); return each fold's val/test
    predictions."""
    if len(outputs_per_fold) != len(inputs_list):
        raise ValueError(f"{len(outputs_per_fold)} output sets for {len(inputs_list)} folds")
    written = []
    for inputs, outputs in zip(inputs_list, outputs_per_fold, strict=True):
        result = fit_fold(inputs, declaration, settings, name=method)
        written.append(
            write_fold_result(outputs, result, method=method, inputs=inputs, evaluation=evaluation)
        )
    return written
