"""Per-fold tabular preprocessing, fitted on the fold's training part only.

Two protocols (config ``tabular.preprocessing``):

* ``paper`` (HAF's stated protocol, default): most-frequent imputation everywhere, one-hot encoding of
  nominal columns, min-max scaling of numeric and count columns.
* ``hancock`` (HANCOCK's official code): numeric columns mean imputation + standard scaling; nominal
  columns most-frequent + one-hot; binary and ICD count columns most-frequent imputation only.

The ICD vocabulary (CountVectorizer with ``min_df``) is fitted on the training part too. A modality a
patient lacks stays absent (``present = False``, a zero row); only values missing *inside* a present
modality are imputed. Nothing is fitted on validation or test rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from haf.cohort.features import ICD_COLUMN, SPECS, ColumnSpec
from haf.errors import HafConfigError, HafInputError
from haf.modalities import TABULAR

log = logging.getLogger(__name__)

PREPROCESSING: tuple[str, ...] = ("paper", "hancock")
EMPTY_NOMINAL = "missing"
"""Fill value of a nominal column that has no value at all in the training part."""


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


class MostFrequentImputer:
    """Per column, the most frequent non-missing training value (ties: the smallest; deterministic).

    A column with no training value is filled with ``0.0`` (numeric) or ``'missing'`` (nominal), and
    listed in ``empty_columns_``.
    """

    def __init__(self, nominal: bool = False) -> None:
        self.nominal = nominal

    def fit(self, x: np.ndarray) -> MostFrequentImputer:
        x = _as_2d(x, self.nominal)
        self.statistics_ = np.empty(x.shape[1], dtype=object if self.nominal else float)
        self.empty_columns_ = []
        for j in range(x.shape[1]):
            values = [v for v in x[:, j] if not _is_missing(v)]
            if not values:
                self.statistics_[j] = EMPTY_NOMINAL if self.nominal else 0.0
                self.empty_columns_.append(j)
                continue
            tally = Counter(values)
            top = max(tally.values())
            self.statistics_[j] = min(v for v, c in tally.items() if c == top)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = _as_2d(x, self.nominal).copy()
        for j in range(x.shape[1]):
            mask = np.array([_is_missing(v) for v in x[:, j]], dtype=bool)
            x[mask, j] = self.statistics_[j]
        return x


class MeanImputer:
    """Per column, the training mean (a column with no training value is filled with 0.0)."""

    def fit(self, x: np.ndarray) -> MeanImputer:
        x = _as_2d(x, False)
        with np.errstate(all="ignore"):
            counts = np.sum(~np.isnan(x), axis=0)
            sums = np.nansum(x, axis=0)
        self.statistics_ = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        self.empty_columns_ = np.flatnonzero(counts == 0).tolist()
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = _as_2d(x, False).copy()
        rows, cols = np.nonzero(np.isnan(x))
        x[rows, cols] = self.statistics_[cols]
        return x


def _as_2d(x: np.ndarray, nominal: bool) -> np.ndarray:
    x = np.asarray(x, dtype=object if nominal else float)
    return x.reshape(len(x), -1) if x.ndim != 2 else x


class ModalityPreprocessor:
    """Fit/transform of one modality's raw table (see :class:`haf.cohort.features.ColumnSpec`).

    Output columns: numeric, binary, one-hot (``column=value``), counts; float32.
    """

    def __init__(self, spec: ColumnSpec, scheme: str = "paper", name: str = "tabular") -> None:
        if scheme not in PREPROCESSING:
            raise ValueError(f"tabular.preprocessing must be one of {PREPROCESSING}, got {scheme!r}")
        self.spec = spec
        self.scheme = scheme
        self.name = name

    def _check(self, frame: pd.DataFrame) -> None:
        missing = [c for c in self.spec.columns if c not in frame.columns]
        if missing:
            raise HafInputError(None, f"{self.name}: column missing from the raw table", field=missing[0])
        for column in self.spec.numeric + self.spec.binary + self.spec.counts:
            values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
            nonnum = np.isnan(values) & ~frame[column].isna().to_numpy()
            bad = np.isinf(values) | nonnum
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise HafInputError(
                    None,
                    f"{self.name}: value {frame[column].iloc[row]!r} is not a finite number",
                    where=f"patient {frame.index[row]}",
                    field=column,
                )

    def fit(self, frame: pd.DataFrame) -> ModalityPreprocessor:
        """Fit on the training rows of present patients only."""
        self._check(frame)
        spec = self.spec
        self.n_fit_ = len(frame)
        num = frame[list(spec.numeric)].to_numpy(dtype=float)
        self.num_imputer_ = (MostFrequentImputer() if self.scheme == "paper" else MeanImputer()).fit(num)
        self.num_scaler_ = None
        if spec.numeric:
            scaler = MinMaxScaler() if self.scheme == "paper" else StandardScaler()
            self.num_scaler_ = scaler.fit(self.num_imputer_.transform(num)) if len(frame) else None
        self.bin_imputer_ = MostFrequentImputer().fit(frame[list(spec.binary)].to_numpy(dtype=float))
        nominal = frame[list(spec.nominal)].to_numpy(dtype=object)
        self.nom_imputer_ = MostFrequentImputer(nominal=True).fit(nominal)
        self.onehot_ = None
        if spec.nominal and len(frame):
            filled = self.nom_imputer_.transform(nominal).astype(str)
            self.onehot_ = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64).fit(
                filled
            )
        counts = frame[list(spec.counts)].to_numpy(dtype=float)
        self.cnt_imputer_ = MostFrequentImputer().fit(counts)
        self.cnt_scaler_ = None
        if spec.counts and self.scheme == "paper" and len(frame):
            self.cnt_scaler_ = MinMaxScaler().fit(self.cnt_imputer_.transform(counts))
        empty = [spec.numeric[j] for j in self.num_imputer_.empty_columns_]
        empty += [spec.binary[j] for j in self.bin_imputer_.empty_columns_]
        empty += [spec.nominal[j] for j in self.nom_imputer_.empty_columns_]
        self.empty_columns_ = empty
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Impute, encode and scale with the fitted state; unseen categories give all-zero one-hots."""
        self._check(frame)
        spec = self.spec
        blocks = []
        num = self.num_imputer_.transform(frame[list(spec.numeric)].to_numpy(dtype=float))
        if self.num_scaler_ is not None:
            num = self.num_scaler_.transform(num)
        blocks.append(num)
        blocks.append(self.bin_imputer_.transform(frame[list(spec.binary)].to_numpy(dtype=float)))
        if self.onehot_ is not None:
            nominal = self.nom_imputer_.transform(frame[list(spec.nominal)].to_numpy(dtype=object)).astype(
                str
            )
            blocks.append(self.onehot_.transform(nominal) if len(frame) else np.zeros((0, self._n_onehot())))
        counts = self.cnt_imputer_.transform(frame[list(spec.counts)].to_numpy(dtype=float))
        if self.cnt_scaler_ is not None:
            counts = self.cnt_scaler_.transform(counts)
        blocks.append(counts)
        out = np.concatenate([b.reshape(len(frame), -1).astype(np.float64) for b in blocks], axis=1)
        return out.astype(np.float32)

    def _n_onehot(self) -> int:
        return sum(len(c) for c in self.onehot_.categories_) if self.onehot_ is not None else 0

    def feature_names(self) -> list[str]:
        names = list(self.spec.numeric) + list(self.spec.binary)
        if self.onehot_ is not None:
            for column, cats in zip(self.spec.nominal, self.onehot_.categories_, strict=True):
                names += [f"{column}={c}" for c in cats]
        return names + list(self.spec.counts)

    def state(self) -> dict[str, np.ndarray]:
        """Every fitted number (for the leakage test and debugging)."""
        out: dict[str, np.ndarray] = {
            "num_impute": np.asarray(self.num_imputer_.statistics_),
            "bin_impute": np.asarray(self.bin_imputer_.statistics_),
            "nom_impute": np.asarray(self.nom_imputer_.statistics_, dtype=object),
            "cnt_impute": np.asarray(self.cnt_imputer_.statistics_),
        }
        for key, scaler in (("num", self.num_scaler_), ("cnt", self.cnt_scaler_)):
            if isinstance(scaler, MinMaxScaler):
                out[f"{key}_min"], out[f"{key}_max"] = scaler.data_min_, scaler.data_max_
            elif isinstance(scaler, StandardScaler):
                out[f"{key}_mean"], out[f"{key}_scale"] = scaler.mean_, scaler.scale_
        if self.onehot_ is not None:
            for column, cats in zip(self.spec.nominal, self.onehot_.categories_, strict=True):
                out[f"categories_{column}"] = np.asarray(cats, dtype=object)
        return out


class IcdVectorizer:
    """ICD code counts with a vocabulary fitted on training documents (``min_df`` patients at least)."""

    def __init__(self, min_df: int = 3) -> None:
        self.min_df = int(min_df)

    def fit(self, documents: pd.Series) -> IcdVectorizer:
        self.vectorizer_ = CountVectorizer(min_df=self.min_df, lowercase=True, token_pattern=r"(?u)\b\w+\b")
        try:
            self.vectorizer_.fit(documents.tolist())
        except ValueError as exc:
            raise HafConfigError(
                f"tabular.icd_min_df = {self.min_df}: no ICD code occurs in {self.min_df} or more training "
                f"patients ({len(documents)} with codes); lower tabular.icd_min_df ({exc})"
            ) from exc
        self.vocabulary_ = list(self.vectorizer_.get_feature_names_out())
        return self

    def transform(self, documents: pd.Series) -> pd.DataFrame:
        counts = self.vectorizer_.transform(documents.tolist()).toarray().astype(float)
        return pd.DataFrame(counts, index=documents.index, columns=[f"icd_{v}" for v in self.vocabulary_])


def preprocess_fold(
    tables: dict[str, pd.DataFrame],
    assignment: pd.DataFrame,
    scheme: str = "paper",
    icd_min_df: int = 3,
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """Matrices of one fold for every tabular modality, fitted on the fold's ``train`` part only.

    ``tables``: modality -> raw table (rows = patients having it, see :mod:`haf.cohort.features`).
    ``assignment``: ``patient_id, part`` of this fold (every patient of the fold, any order).
    Returns the npz arrays (``patient_id``, ``part``, ``x_m``, ``present_m``, ``columns_m``), the
    fitted objects per modality, and counts.
    """
    frame = assignment.sort_values("patient_id", kind="stable").reset_index(drop=True)
    ids = frame["patient_id"].to_numpy().astype(str)
    part = frame["part"].to_numpy().astype(str)
    train_ids = set(ids[part == "train"])
    arrays: dict[str, np.ndarray] = {"patient_id": ids.astype("U"), "part": part.astype("U")}
    fitted: dict[str, Any] = {}
    counts: dict[str, Any] = {}
    for m in TABULAR:
        table = tables[m]
        present = np.array([pid in table.index for pid in ids], dtype=bool)
        rows = table.reindex(ids[present])
        train_rows = rows[[pid in train_ids for pid in rows.index]]
        if m == "icd" and len(train_rows):
            vectorizer = IcdVectorizer(icd_min_df).fit(train_rows[ICD_COLUMN])
            rows = vectorizer.transform(rows[ICD_COLUMN])
            train_rows = rows.loc[train_rows.index]
            spec = ColumnSpec(counts=tuple(rows.columns))
            fitted["icd_vocabulary"] = vectorizer
        elif m == "icd":
            spec = ColumnSpec()
        else:
            spec = SPECS[m]
        if len(train_rows) == 0:
            log.warning(
                "fold has no training patient with modality %s: it is marked absent for all %d patients "
                "(nothing can be fitted on it)",
                m,
                int(present.sum()),
            )
            present[:] = False
            # keep a non-zero width so that every consumer can build its per-modality layers
            names = list(spec.numeric) + list(spec.binary) + list(spec.counts) or [f"{m}_none"]
            x = np.zeros((len(ids), len(names)), dtype=np.float32)
        else:
            pre = ModalityPreprocessor(spec, scheme, name=m).fit(train_rows)
            fitted[m] = pre
            names = pre.feature_names()
            x = np.zeros((len(ids), len(names)), dtype=np.float32)
            x[present] = pre.transform(rows)
            if pre.empty_columns_:
                log.warning(
                    "%s: columns without any training value (filled with a constant): %s",
                    m,
                    ", ".join(pre.empty_columns_),
                )
        arrays[f"x_{m}"] = x
        arrays[f"present_{m}"] = present
        arrays[f"columns_{m}"] = np.asarray(names, dtype="U")
        n_missing_values = int(rows.isna().to_numpy().sum()) if m != "icd" and present.any() else 0
        counts[m] = {
            "present": int(present.sum()),
            "absent": int((~present).sum()),
            "train_present": len(train_rows),
            "width": len(names),
            "missing_values_imputed": n_missing_values,
        }
        log.info(
            "%-5s present %d / %d (train %d); %d columns; %d missing values inside present rows imputed",
            m,
            counts[m]["present"],
            len(ids),
            len(train_rows),
            len(names),
            n_missing_values,
        )
    return arrays, fitted, counts
