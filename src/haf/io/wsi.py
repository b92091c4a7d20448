"""Released WSI UNI patch embeddings (``WSI_UNI_encodings/WSI_PrimaryTumor/<site>/h5_files/*.h5``).

One h5 per slide, ``PrimaryTumor_HE_<NNN>.h5``; a second slide of the same patient is
``PrimaryTumor_HE_<NNN>_a.h5``. A patient's slides are pooled into one bag, main slide first.
:func:`check_bag_header` validates an h5 from its metadata only (no feature data read), so the
manifest can check all ~700 slides cheaply; :func:`haf.artifacts.bags.read_bag` reads the contents.
"""

from __future__ import annotations

import re
from pathlib import Path

from haf.artifacts.bags import probe_bag
from haf.errors import HafInputError

WSI_NAME_RE = re.compile(r"^PrimaryTumor_HE_([0-9]+)(?:_([a-z]))?\.h5$", re.IGNORECASE)


def parse_wsi_name(path: str | Path) -> tuple[str, str]:
    """``PrimaryTumor_HE_036_a.h5`` -> ``('036', 'a')`` (``''`` for the main slide); error names the file."""
    match = WSI_NAME_RE.match(Path(path).name)
    if not match or len(match.group(1)) != 3:
        raise HafInputError(
            path,
            "WSI h5 name does not parse; expected PrimaryTumor_HE_<NNN>.h5 or PrimaryTumor_HE_<NNN>_a.h5",
            field="file name",
        )
    return match.group(1), (match.group(2) or "").lower()


def wsi_h5_files(root: str | Path) -> list[Path]:
    """Every ``PrimaryTumor_HE_*.h5`` below ``root`` (any depth), sorted: what :func:`list_wsi_h5` reads."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [p for p in sorted(root.rglob("*.h5")) if p.name.lower().startswith("primarytumor_he_")]


def list_wsi_h5(root: str | Path) -> dict[str, list[Path]]:
    """Slides per patient under ``root`` (any depth, normally ``<site>/h5_files/``), main slide first.

    Every ``PrimaryTumor_HE_*.h5`` must parse; the same slide name twice (in two site folders) is an
    error naming both files.
    """
    slides: dict[str, dict[str, Path]] = {}
    for path in wsi_h5_files(root):
        pid, suffix = parse_wsi_name(path)
        per_patient = slides.setdefault(pid, {})
        if suffix in per_patient:
            raise HafInputError(
                path, f"slide {path.name} also found at {per_patient[suffix]}", field="file name"
            )
        per_patient[suffix] = path
    return {pid: [per[s] for s in sorted(per)] for pid, per in sorted(slides.items())}


def check_bag_header(path: str | Path, expected_dim: int | None) -> int:
    """Number of instances of an h5 bag, checked from metadata: ``features`` exists, is 2-d and has the
    width of config ``stage1.wsi_dim``. An empty ``features`` (HANCOTHON's missing slide) gives 0.
    """
    return probe_bag(path, expected_dim)[0]
