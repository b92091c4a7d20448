"""Lint and format checks, the same commands a developer runs:

    snakemake --lint                       (must report nothing)
    snakefmt --check Snakefile workflow/rules tests/workflows
    ruff check src tests workflow bench
    ruff format --check src tests workflow bench

`snakemake --lint=json` is not used: Snakemake 9.27's CLI ignores the format argument and prints text, so
the text report is parsed (`Lints for snakefile ...` / `Lints for rule ...` headers, `* <lint>:` items).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PY_PATHS = [p for p in ("src", "tests", "workflow", "bench") if (REPO / p).exists()]
SMK_PATHS = ["Snakefile", "workflow/rules", "tests/workflows"]


def _tool(name: str) -> list[str]:
    """The tool from the running environment (the venv's bin), not whatever is first on PATH."""
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (it is in pyproject.toml's test extra)")
    return [found]


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAKEMAKE_PROFILE")}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def parse_lints(text: str) -> list[str]:
    """'<where>: <lint title>' for each lint in `snakemake --lint` text output."""
    lints, where = [], None
    for line in text.splitlines():
        header = re.match(r"^Lints for (snakefile .+|rule .+):$", line)
        if header:
            where = header.group(1)
            continue
        item = re.match(r"^\s+\* (.+?):?$", line)
        if item and where:
            lints.append(f"{where}: {item.group(1).rstrip(':')}")
    return lints


def test_parse_lints_reads_snakemakes_report():
    text = (
        "Lints for snakefile /x/common.smk:\n    * Mixed rules and functions in same snakefile.:\n"
        "      Small one-liner functions ...\n\n"
        "Lints for rule foo (line 3, /x/a.smk):\n    * No log directive defined:\n      Without a log...\n"
    )
    assert parse_lints(text) == [
        "snakefile /x/common.smk: Mixed rules and functions in same snakefile.",
        "rule foo (line 3, /x/a.smk): No log directive defined",
    ]


def test_snakemake_lint_reports_nothing():
    proc = _run([sys.executable, "-m", "snakemake", "--lint"])
    output = proc.stdout + proc.stderr
    lints = parse_lints(output)
    assert not lints, "snakemake --lint:\n" + "\n".join(lints)
    assert proc.returncode == 0, f"snakemake --lint failed:\n{output[-3000:]}"
    assert "Congratulations" in output, output[-3000:]


def test_snakefmt_check():
    proc = _run([*_tool("snakefmt"), "--check", "--verbose", *SMK_PATHS])
    output = proc.stdout + proc.stderr
    files = sorted(set(re.findall(r'In file "([^"]+)":\s+Formatted content is different', output)))
    assert proc.returncode == 0, "snakefmt would reformat (run `snakefmt <file>`):\n" + "\n".join(
        files or [output[-4000:]]
    )


def test_ruff_check():
    proc = _run([*_tool("ruff"), "check", *PY_PATHS])
    assert proc.returncode == 0, "ruff check:\n" + (proc.stdout + proc.stderr)[-6000:]


def test_ruff_format_check():
    proc = _run([*_tool("ruff"), "format", "--check", *PY_PATHS])
    output = proc.stdout + proc.stderr
    files = sorted(set(re.findall(r"(?:-->|Would reformat:)\s+([^\s:]+\.py)", output)))
    assert proc.returncode == 0, "ruff format would reformat (run `ruff format <file>`):\n" + "\n".join(
        files or [output[-6000:]]
    )
