"""ICD code text files (``TextData/icd_codes/<prefix><NNN>.txt``).

One file per patient; the id is the 3 digits right before ``.txt`` (official regex ``([0-9]{3}).txt``;
the real file-name prefix is NOT FOUND, so any prefix is accepted). Codes are the bracketed tokens
of the free text (official regex ``\\[([A-Z0-9\\.\\s]+)\\]``); each is normalised like the official
code: first 5 characters, dot removed, lowercased, so ``[C32.0 R]`` becomes ``c320``. We strip the
bracket content before cutting (``[ C32.0]`` still gives ``c320``) and keep the first blank-separated
token (``[C32 R]`` gives ``c32``, where CountVectorizer would also drop the 1-letter ``r``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from haf.errors import HafInputError

log = logging.getLogger(__name__)

ICD_FILE_RE = re.compile(r"(?<![0-9])([0-9]{3})\.txt$")
ICD_CODE_RE = re.compile(r"\[([A-Z0-9.\s]+)\]")  # the official pattern: upper case only


def normalise_icd(code: str) -> str:
    """``'C32.0 R'`` -> ``'c320'``: first 5 characters, no dot, lowercase, laterality dropped."""
    cut = code.strip()[:5].strip().replace(".", "")
    return cut.split()[0].lower() if cut.split() else ""


def parse_icd_text(text: str) -> list[str]:
    """All normalised codes of one file, in order (repeats kept: the official features are counts)."""
    codes = [normalise_icd(raw) for raw in ICD_CODE_RE.findall(text)]
    return [c for c in codes if c]


def icd_patient_id(path: str | Path) -> str | None:
    """The 3-digit id at the end of an ICD file name, or None if the name has none."""
    match = ICD_FILE_RE.search(Path(path).name)
    return match.group(1) if match else None


def icd_files(directory: str | Path) -> list[Path]:
    """Every ``*.txt`` below ``directory`` (any depth), sorted: what :func:`read_icd_dir` reads."""
    directory = Path(directory)
    return sorted(directory.rglob("*.txt")) if directory.is_dir() else []


def read_icd_dir(directory: str | Path) -> tuple[dict[str, list[str]], dict[str, Path], dict[str, int]]:
    """Codes per patient from every ``*.txt`` in ``directory`` (recursively).

    Returns (codes per patient, file per patient, counts). Files whose name has no 3-digit id are
    skipped and counted (the real naming is not documented); two files for one patient are an error
    naming both. Patients whose file holds no bracketed code are returned with an empty list.
    """
    directory = Path(directory)
    codes: dict[str, list[str]] = {}
    files: dict[str, Path] = {}
    skipped: list[str] = []
    for path in icd_files(directory):
        pid = icd_patient_id(path)
        if pid is None:
            skipped.append(path.name)
            continue
        if pid in files:
            raise HafInputError(
                path, f"a second ICD file for patient {pid} (the first is {files[pid]})", field="file name"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            text = path.read_text(encoding="latin-1")
        files[pid] = path
        codes[pid] = parse_icd_text(text)
    if skipped:
        log.warning(
            "%s: %d .txt files without a 3-digit patient id before '.txt' skipped (e.g. %s)",
            directory,
            len(skipped),
            ", ".join(skipped[:5]),
        )
    counts = {
        "icd_files": len(files),
        "icd_files_skipped_no_id": len(skipped),
        "icd_files_without_codes": sum(1 for c in codes.values() if not c),
        "icd_codes": sum(len(c) for c in codes.values()),
    }
    return codes, files, counts
