"""Input inventories: the raw files each rule reads, as small TSV files Snakemake can watch.

Snakemake reruns a job when a declared input is newer than its outputs or the set of inputs changed.
The cohort and extraction rules read whole folders (tens of thousands of core PNGs, ~700 WSI h5, ~700
ICD files), which are not Snakemake inputs. Instead, each raw source gets an inventory,
``{results}/cohort/inputs/<source>.tsv``: its files relative to ``data_root`` with size and mtime
(nanoseconds), plus the resolved ``data_root`` and a line for an absent file or folder. The Snakefile
writes the inventories while it builds the DAG, **only when their text changed**, and declares them as
the rules' inputs. So:

* an edited, replaced, added or removed raw file (also one unzipped with an *older* mtime, which a
  plain mtime comparison misses) changes its inventory, which then is newer than the outputs: exactly
  the rules that declare that inventory rerun, and what depends on their outputs;
* nothing changed: the inventory is not rewritten and nothing reruns. Undoing an edit (same size and
  mtime again) rewrites the inventory with the text Snakemake recorded at the last run, whose checksum
  it compares, so nothing reruns either.

``names`` inventories (:data:`NAME_SOURCES`) list paths only: the manifest records which core images
and slides exist, not their pixels or features, so replacing a core PNG reruns the extraction but not
the manifest and the tabular rules. Each source lists exactly the files its reader reads (the readers'
own listing functions), nothing else in the folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from haf.cohort.folds import fold_scheme
from haf.io.icd import icd_files
from haf.io.tma import map_files, marker_core_files
from haf.io.wsi import wsi_h5_files

INVENTORY_DIR = "cohort/inputs"
SOURCES: tuple[str, ...] = (
    "clinical",
    "pathological",
    "blood",
    "icd",
    "cell_density",
    "tma_maps",
    "tma_cores",
    "wsi_h5",
    "splits",
)
"""Raw sources with an inventory (``splits`` only for the official cv schemes)."""
NAME_SOURCES: tuple[str, ...] = ("tma_cores", "wsi_h5")
"""Sources that also have a ``<source>.names.tsv`` inventory (paths only, no size or mtime)."""
HEADER = "path\tsize\tmtime_ns"


def source_files(
    data_root: str | Path,
    paths: dict[str, Any],
    source: str,
    markers: Sequence[str] = ("HE",),
    scheme: str = "kfold",
) -> tuple[list[Path], list[Path]]:
    """(files the source's reader reads, expected files or folders that are absent) under ``data_root``."""
    root = Path(data_root)

    def under(key: str) -> Path:
        return root / str(paths[key])

    def single(*keys: str) -> tuple[list[Path], list[Path]]:
        found = [under(k) for k in keys if under(k).is_file()]
        return found, [under(k) for k in keys if not under(k).is_file()]

    def folder(key: str, files: list[Path]) -> tuple[list[Path], list[Path]]:
        return files, ([] if under(key).is_dir() else [under(key)])

    if source in ("clinical", "pathological", "cell_density"):
        return single(source)
    if source == "blood":
        return single("blood", "blood_reference")
    if source == "icd":
        return folder("icd_dir", icd_files(under("icd_dir")))
    if source == "tma_maps":
        return folder("tma_maps", map_files(under("tma_maps")))
    if source == "tma_cores":
        return folder("tma_cores", marker_core_files(under("tma_cores"), list(markers)))
    if source == "wsi_h5":
        return folder("wsi_h5", wsi_h5_files(under("wsi_h5")))
    if source == "splits":
        split_file = fold_scheme(scheme).split_file
        if split_file is None:
            return [], []
        path = under("splits") / split_file
        return ([path], []) if path.is_file() else ([], [path])
    raise ValueError(f"unknown raw source {source!r} (known: {', '.join(SOURCES)})")


def inventory_text(
    data_root: str | Path, files: Sequence[Path], absent: Sequence[Path], names_only: bool = False
) -> str:
    """The inventory of ``files``: resolved data_root, absent paths, then one line per file."""
    root = Path(data_root)
    lines = [f"# data_root\t{root.resolve()}"]
    lines += [f"# absent\t{_relative(p, root)}" for p in absent]
    lines.append("path" if names_only else HEADER)
    for path in files:
        rel = _relative(path, root)
        if names_only:
            lines.append(rel)
            continue
        try:
            st = os.stat(path)
        except OSError:  # vanished between listing and stat: recorded, so it differs from any real file
            lines.append(f"{rel}\t-1\t-1")
            continue
        lines.append(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}")
    return "\n".join(lines) + "\n"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def write_if_changed(path: str | Path, text: str) -> bool:
    """Write ``text`` to ``path`` (atomically) unless it already holds exactly that; True if written.

    Concurrent Snakemake processes (cluster jobs parse the Snakefile too) may race here: both write the
    same text, and the rename is atomic, so readers never see a partial file.
    """
    path = Path(path)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True


def inventory_path(results: str | Path, source: str, names_only: bool = False) -> Path:
    """``{results}/cohort/inputs/<source>[.names].tsv``."""
    return Path(results) / INVENTORY_DIR / f"{source}{'.names' if names_only else ''}.tsv"


def update_inventory(
    results: str | Path,
    data_root: str | Path,
    paths: dict[str, Any],
    source: str,
    *,
    markers: Sequence[str] = ("HE",),
    scheme: str = "kfold",
    names_only: bool = False,
) -> Path:
    """List the source, rewrite its inventory if the listing changed, and return the inventory's path."""
    if names_only and source not in NAME_SOURCES:
        raise ValueError(f"no names inventory for {source!r} (only {', '.join(NAME_SOURCES)})")
    files, absent = source_files(data_root, paths, source, markers, scheme)
    target = inventory_path(results, source, names_only)
    write_if_changed(target, inventory_text(data_root, files, absent, names_only))
    return target
