"""``tabular/fold_{k}.npz`` (rule ``tabular``): one fold's preprocessed tabular matrices.

Arrays: ``fold``, ``patient_id`` (n,), ``part`` (n,), and per tabular modality m in ``cell, clin, path,
blood, icd``: ``x_{m}`` float32 (n, d_m), ``present_{m}`` bool (n,), ``columns_{m}`` (d_m,) names.  Rows
of absent modalities are zeros.  Every fitted transform is fitted on the fold's ``train`` part only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from haf.artifacts.files import read_npz, write_npz
from haf.errors import HafInputError
from haf.modalities import TABULAR


def write_tabular_npz(path: str | Path, arrays: dict[str, np.ndarray], fold: int) -> None:
    """The contract's ``tabular/fold_{k}.npz`` (no pickles), atomically."""
    write_npz(path, {"fold": np.asarray(fold), **arrays})


def read_tabular_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read and check a ``tabular/fold_{k}.npz``: every modality's arrays, matching row counts."""
    arrays = read_npz(path, ("patient_id",), what="tabular matrices")
    n = len(arrays["patient_id"])
    for m in TABULAR:
        for key in (f"x_{m}", f"present_{m}", f"columns_{m}"):
            if key not in arrays:
                raise HafInputError(path, "array missing", field=key)
        x = arrays[f"x_{m}"]
        if x.ndim != 2 or x.shape[0] != n or len(arrays[f"present_{m}"]) != n:
            raise HafInputError(path, f"shape {x.shape} does not match {n} patients", field=f"x_{m}")
        if x.shape[1] != len(arrays[f"columns_{m}"]):
            raise HafInputError(path, "column names do not match the matrix width", field=f"columns_{m}")
        if not np.isfinite(x).all():
            raise HafInputError(path, "NaN or inf", field=f"x_{m}")
    return arrays
