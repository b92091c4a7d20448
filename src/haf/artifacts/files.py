"""Writing files between rules: atomic (no half-written output ever) and byte-stable (same inputs, same bytes)."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same folder so the final ``os.replace`` is atomic on POSIX.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix or ".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the output the permissions a plain open() would (umask)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_tsv(path: str | Path, frame, **kwargs: Any) -> None:
    """Write a DataFrame as TSV (gzip if the name ends in .gz), atomically and byte-stably.

    The gzip header carries neither a timestamp nor the (random) temporary file's name, so the same
    table gives the same bytes on every run.
    """
    if not str(path).endswith(".gz"):
        with atomic_path(path, ".tsv") as tmp:
            frame.to_csv(tmp, sep="\t", index=False, **kwargs)
        return
    text = frame.to_csv(sep="\t", index=False, **kwargs).encode()
    with atomic_path(path, ".gz") as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as handle:
            handle.write(text)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as a compressed npz, atomically (no pickles: strings must be fixed-width unicode)."""
    with atomic_path(path, ".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)


def read_npz(
    path: str | Path, required: Iterable[str] = (), *, what: str = "arrays"
) -> dict[str, np.ndarray]:
    """Read every array of an npz (no pickles); a missing file or a missing key names the file and key."""
    from haf.errors import HafInputError

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise HafInputError(path, f"cannot read {what}: {exc}") from exc
    for key in required:
        if key not in arrays:
            raise HafInputError(path, "array missing", field=key)
    return arrays
