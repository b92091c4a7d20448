"""TMA maps and pre-extracted tumour-centre core images.

* ``TMA_Maps/TMA_Map_block<k>.csv``: columns ``core`` (grid position ``row-col``) and ``Case ID``.
* ``TMA_TumorCenter_Cores/tma_tumorcenter_<M>/TumorCenter_<M>_block<B>_x<col>_y<row>_patient<NNN>.png``.

Every PNG in a configured marker's folder must parse (else an error naming the file), and its
patient must agree with the block's map at position ``y-x`` (else an error naming the file and the
map). Marker spellings ``MHC1``/``MHC-1`` and ``PDL1``/``PD-L1`` are the same marker.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from haf.errors import HafInputError
from haf.io.records import PATIENT_ID_RE, csv_line, read_csv_flexible

log = logging.getLogger(__name__)

MAP_FILE_RE = re.compile(r"^TMA_Map_block(\d+)\.csv$", re.IGNORECASE)
CORE_FOLDER_RE = re.compile(r"^tma_tumorcenter_(.+)$", re.IGNORECASE)
CORE_NAME_RE = re.compile(
    r"^TumorCenter_([A-Za-z0-9-]+)_block(\d+)_x(\d+)_y(\d+)_patient(\d+)\.png$", re.IGNORECASE
)
POSITION_RE = re.compile(r"^\s*(\d{1,2})\s*-\s*(\d{1,2})\s*$")


def canonical_marker(name: str) -> str:
    """``'MHC-1'`` -> ``'MHC1'``, ``'pd-l1'`` -> ``'PDL1'``: one spelling per stain."""
    return name.strip().upper().replace("-", "").replace("_", "")


@dataclass(frozen=True)
class CoreName:
    """The fields of a core image name."""

    marker: str
    block: int
    x: int
    y: int
    patient_id: str

    @property
    def position(self) -> str:
        """The TMA map key: ``row-col`` = ``y-x``."""
        return f"{self.y}-{self.x}"


def parse_core_name(path: str | Path) -> CoreName:
    """Parse ``TumorCenter_<M>_block<B>_x<c>_y<r>_patient<NNN>.png``; an error names the file."""
    name = Path(path).name
    match = CORE_NAME_RE.match(name)
    if not match:
        raise HafInputError(
            path,
            "core image name does not parse; expected TumorCenter_<MARKER>_block<B>_x<col>_y<row>_patient<NNN>.png",
            field="file name",
        )
    marker, block, x, y, patient = match.groups()
    if not PATIENT_ID_RE.match(patient):
        raise HafInputError(
            path, f"patient id in the file name must have 3 digits, got {patient!r}", field="file name"
        )
    return CoreName(canonical_marker(marker), int(block), int(x), int(y), patient)


def read_tma_map(path: str | Path) -> dict[str, str | None]:
    """One block's map: position ``row-col`` -> patient id (None for an empty position)."""
    path = Path(path)
    frame = read_csv_flexible(path, ["core", "Case ID"])
    mapping: dict[str, str | None] = {}
    for pos in range(len(frame)):
        raw_core = str(frame["core"].iloc[pos])
        match = POSITION_RE.match(raw_core)
        if not match:
            raise HafInputError(
                path,
                f"expected a grid position 'row-col', got {raw_core!r}",
                where=csv_line(pos),
                field="core",
            )
        key = f"{int(match.group(1))}-{int(match.group(2))}"
        if key in mapping:
            raise HafInputError(path, f"grid position {key} appears twice", where=csv_line(pos), field="core")
        case = str(frame["Case ID"].iloc[pos]).strip()
        if case.lower() in {"", "nan", "none", "null"}:
            mapping[key] = None
            continue
        if not PATIENT_ID_RE.match(case):
            raise HafInputError(
                path,
                f"patient id must be a 3-digit string such as '001', got {case!r}",
                where=csv_line(pos),
                field="Case ID",
            )
        mapping[key] = case
    return mapping


def read_tma_maps(directory: str | Path) -> dict[int, tuple[Path, dict[str, str | None]]]:
    """Every ``TMA_Map_block<k>.csv`` of a folder: block -> (file, map). An absent folder gives {}."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    maps: dict[int, tuple[Path, dict[str, str | None]]] = {}
    for path in map_files(directory):
        block = int(MAP_FILE_RE.match(path.name).group(1))
        if block in maps:
            raise HafInputError(path, f"a second map for block {block} (the first is {maps[block][0]})")
        maps[block] = (path, read_tma_map(path))
    return maps


def map_files(directory: str | Path) -> list[Path]:
    """The ``TMA_Map_block<k>.csv`` files of a folder (sorted; none if it is absent)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return [p for p in sorted(directory.iterdir()) if MAP_FILE_RE.match(p.name)]


def core_folders(cores_dir: str | Path) -> list[tuple[str, Path]]:
    """(marker in canonical spelling, folder) of every ``tma_tumorcenter_<M>`` folder at any depth below
    ``cores_dir``, sorted by path. Walks folders only (the images are not stat-ed), following links."""
    found: list[tuple[str, Path]] = []
    for top, dirs, _files in os.walk(cores_dir, followlinks=True):
        for name in dirs:
            match = CORE_FOLDER_RE.match(name)
            if match:
                found.append((canonical_marker(match.group(1)), Path(top) / name))
    return sorted(found, key=lambda item: str(item[1]))


def marker_core_files(cores_dir: str | Path, markers: list[str] | tuple[str, ...]) -> list[Path]:
    """Every file in the folders of the configured markers (what :func:`list_tma_cores` reads), sorted."""
    wanted = {canonical_marker(m) for m in markers}
    files: list[Path] = []
    for marker, folder in core_folders(cores_dir):
        if marker in wanted:
            files += sorted(p for p in folder.iterdir() if p.is_file())
    return files


def list_tma_cores(
    cores_dir: str | Path,
    markers: list[str] | tuple[str, ...],
    maps: dict[int, tuple[Path, dict[str, str | None]]] | None = None,
) -> tuple[dict[str, list[Path]], dict[str, int]]:
    """Core images of the configured markers, per patient (marker order, then block, row, column).

    Checks every name, the marker of the name against its folder, and the patient against the
    block's map (when the map exists; cores of blocks without a map are counted as unchecked).
    """
    cores_dir = Path(cores_dir)
    wanted = [canonical_marker(m) for m in markers]
    counts = {"tma_cores": 0, "tma_cores_unchecked_no_map": 0, "tma_files_not_png": 0}
    found: dict[str, list[tuple[tuple[int, int, int, int], Path]]] = {}
    if not cores_dir.is_dir():
        return {}, counts
    present = core_folders(cores_dir)
    folders = [folder for _, folder in present]
    missing = [m for m, w in zip(markers, wanted, strict=True) if w not in {pm for pm, _ in present}]
    counts["tma_markers_without_folder"] = len(missing)
    for marker in missing:
        log.warning(
            "extract.markers includes %s but %s has no tma_tumorcenter_%s folder: no patient has %s cores",
            marker,
            cores_dir,
            marker,
            marker,
        )
    unused = sorted(f.name for m, f in present if m not in wanted)
    if unused:
        log.info("core folders present but not used (not in extract.markers): %s", ", ".join(unused))
    for folder in folders:
        folder_marker = canonical_marker(CORE_FOLDER_RE.match(folder.name).group(1))
        if folder_marker not in wanted:
            continue
        for path in sorted(folder.iterdir()):
            if not path.is_file():
                continue
            if path.suffix.lower() != ".png":
                counts["tma_files_not_png"] += 1
                continue
            core = parse_core_name(path)
            if core.marker != folder_marker:
                raise HafInputError(
                    path,
                    f"marker {core.marker} in the file name but the folder {folder.name} holds {folder_marker}",
                    field="file name",
                )
            if maps is not None and core.block in maps:
                map_path, mapping = maps[core.block]
                expected = mapping.get(core.position)
                if expected != core.patient_id:
                    where = "no entry" if core.position not in mapping else f"patient {expected!r}"
                    raise HafInputError(
                        path,
                        f"the file name says patient {core.patient_id} but the TMA map {map_path} has {where} "
                        f"at core {core.position} (row-col = y-x) of block {core.block}",
                        field="file name",
                    )
            else:
                counts["tma_cores_unchecked_no_map"] += 1
            counts["tma_cores"] += 1
            key = (wanted.index(folder_marker), core.block, core.y, core.x)
            found.setdefault(core.patient_id, []).append((key, path))
    if counts["tma_cores_unchecked_no_map"]:
        log.warning(
            "%d core images belong to blocks without a TMA map: their patient ids are unchecked",
            counts["tma_cores_unchecked_no_map"],
        )
    return {pid: [p for _, p in sorted(items)] for pid, items in sorted(found.items())}, counts
