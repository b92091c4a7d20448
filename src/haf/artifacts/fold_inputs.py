"""``fold_inputs/fold_{k}.npz`` (rule ``fold_inputs``): everything a fusion method or comparator needs for one fold.

Written per fold by the ``fold_inputs`` rule from the fold's tabular matrices and its Stage 1
embeddings; read by Stage 2, Stage 3, every comparator and the masked evaluation.  All patients of
the cohort are present (each tagged ``train``/``val``/``test`` for this fold); a modality a patient
lacks has ``present[i, m] = False`` and an all-zero feature row, never an imputed one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from haf.artifacts.files import read_npz, write_npz
from haf.artifacts.predictions import PARTS
from haf.errors import HafInputError
from haf.modalities import MODALITIES


@dataclass
class FoldInputs:
    """Per-fold, per-patient modality features with a presence mask.

    Attributes:
        fold: fold index.
        patient_id: (n,) 3-digit strings.
        part: (n,) ``train``/``val``/``test``.
        label: (n,) float, 0/1 or NaN where the patient has no binary label (censored before the horizon).
        time: (n,) follow-up in days.  event: (n,) 1 = death observed.
        present: (n, 7) bool in :data:`MODALITIES` order.
        features: modality -> float32 (n, d_m); rows of absent modalities are zeros.
        columns: modality -> feature names (for reports and debugging).
    """

    fold: int
    patient_id: np.ndarray
    part: np.ndarray
    label: np.ndarray
    time: np.ndarray
    event: np.ndarray
    present: np.ndarray
    features: dict[str, np.ndarray]
    columns: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.patient_id)

    def dims(self) -> dict[str, int]:
        """Feature width per modality."""
        return {m: int(self.features[m].shape[1]) for m in MODALITIES}

    def index(self, part: str) -> np.ndarray:
        """Row indices of one part (``train``, ``val`` or ``test``)."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        return np.flatnonzero(self.part == part)

    def validate(self, source: str | Path = "<fold inputs>") -> FoldInputs:
        """Shapes, ids, masks and finiteness; NaN/inf errors name the modality and the patient."""
        n = self.n
        for name in ("part", "label", "time", "event"):
            if len(getattr(self, name)) != n:
                raise HafInputError(
                    source, f"{name} has {len(getattr(self, name))} rows, expected {n}", field=name
                )
        if self.present.shape != (n, len(MODALITIES)):
            raise HafInputError(
                source,
                f"present has shape {self.present.shape}, expected {(n, len(MODALITIES))}",
                field="present",
            )
        if len(set(self.patient_id.tolist())) != n:
            raise HafInputError(source, "duplicated patient id", field="patient_id")
        for m_idx, m in enumerate(MODALITIES):
            if m not in self.features:
                raise HafInputError(source, f"no features for modality {m!r}", field=m)
            x = self.features[m]
            if x.ndim != 2 or x.shape[0] != n:
                raise HafInputError(
                    source, f"features of {m!r} have shape {x.shape}, expected ({n}, d)", field=m
                )
            bad = ~np.isfinite(x).all(axis=1)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise HafInputError(
                    source,
                    f"NaN or inf in the {m!r} embedding of patient {self.patient_id[row]}",
                    where=f"patient {self.patient_id[row]}",
                    field=m,
                )
            absent_nonzero = (~self.present[:, m_idx]) & (np.abs(x).sum(axis=1) > 0)
            if absent_nonzero.any():
                row = int(np.flatnonzero(absent_nonzero)[0])
                raise HafInputError(
                    source,
                    f"modality {m!r} is marked absent for patient {self.patient_id[row]} but has non-zero features",
                    field=m,
                )
        no_modality = ~self.present.any(axis=1)
        if no_modality.any():
            raise HafInputError(
                source,
                f"patient {self.patient_id[np.flatnonzero(no_modality)[0]]} has no modality at all",
                field="present",
            )
        return self

    def save(self, path: str | Path) -> None:
        """Write as a compressed npz, atomically (no pickles: strings are fixed-width unicode)."""
        arrays: dict[str, np.ndarray] = {
            "fold": np.asarray(self.fold),
            "patient_id": self.patient_id.astype("U"),
            "part": self.part.astype("U"),
            "label": self.label.astype(np.float64),
            "time": self.time.astype(np.float64),
            "event": self.event.astype(np.int64),
            "present": self.present.astype(bool),
        }
        for m in MODALITIES:
            arrays[f"x_{m}"] = self.features[m].astype(np.float32)
            arrays[f"columns_{m}"] = np.asarray(self.columns.get(m, []), dtype="U")
        write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> FoldInputs:
        """Read and validate."""
        keys = ["fold", "patient_id", "part", "label", "time", "event", "present"]
        keys += [f"{k}_{m}" for m in MODALITIES for k in ("x", "columns")]
        data = read_npz(path, keys, what="fold inputs")
        try:
            inputs = cls(
                fold=int(data["fold"]),
                patient_id=data["patient_id"].astype(object),
                part=data["part"].astype(object),
                label=data["label"],
                time=data["time"],
                event=data["event"],
                present=data["present"],
                features={m: data[f"x_{m}"] for m in MODALITIES},
                columns={m: data[f"columns_{m}"].tolist() for m in MODALITIES},
            )
        except (KeyError, ValueError) as exc:
            raise HafInputError(path, f"cannot read fold inputs: {exc}") from exc
        return inputs.validate(source=path)
