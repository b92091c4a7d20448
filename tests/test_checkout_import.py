"""Rule scripts run the library of the checkout they belong to, whatever ``haf`` is installed.

A second clone is made from this one's files; a different ``haf`` package (standing for the first
clone's editable install) is put on PYTHONPATH, which comes before the folder Snakemake appends for a
script job.  A real rule of the second clone must run its own library; a plain import in the same
environment gets the shadowing package (the negative control), and a script that finds ``haf``
already imported from elsewhere stops with both paths named.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _second_clone(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        src = REPO / rel
        if rel.startswith(".venv") or not (src.exists() or src.is_symlink()):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)
    return dest


def _shadow(root: Path) -> Path:
    """A package named haf that must never run inside the second clone's jobs."""
    pkg = root / "haf"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('SHADOW haf from the other clone was imported')\n")
    return root


@pytest.fixture(scope="module")
def clones(tmp_path_factory):
    base = tmp_path_factory.mktemp("clones")
    return _second_clone(base / "clone_b"), _shadow(base / "shadow")


def _env(shadow: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(shadow)}


def test_a_rule_of_the_second_clone_runs_its_own_library(clones, tmp_path):
    clone, shadow = clones
    work = tmp_path / "work"
    work.mkdir()
    override = work / "override.yaml"
    override.write_text(
        f"data_root: {work / 'data'}\nresults: {work / 'results'}\nlogs: {work / 'logs'}\n"
        "demo: {n_patients: 20, core_px: 64, wsi_bag_size: [2, 4]}\n"
    )
    cmd = [sys.executable, "-m", "snakemake", str(work / "data" / "demo_cohort.json"), "-s",
           str(clone / "Snakefile"), "--directory", str(work), "--cores", "1",
           "--configfile", str(clone / "config" / "config.yaml"), str(override)]  # fmt: skip
    # the Snakefile process itself must not see the shadow either (common.smk puts src/ first)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env(shadow), cwd=work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "SHADOW" not in proc.stderr
    assert (work / "data" / "demo_cohort.json").is_file()


def test_negative_control_a_plain_import_gets_the_shadow(clones):
    _, shadow = clones
    proc = subprocess.run(
        [sys.executable, "-c", "import haf"], capture_output=True, text=True, timeout=60, env=_env(shadow)
    )
    assert proc.returncode != 0 and "SHADOW haf" in proc.stderr


def test_haf_already_imported_from_elsewhere_is_an_error_naming_both(clones, tmp_path):
    clone, _ = clones
    other = tmp_path / "other"
    (other / "haf").mkdir(parents=True)
    (other / "haf" / "__init__.py").write_text("__version__ = 'other'\n")
    probe = (
        f"import sys; sys.path.insert(0, {str(other)!r}); import haf; "
        f"sys.path.append({str(clone / 'workflow' / 'scripts')!r}); import _haf_rule"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode != 0
    assert str((other / "haf").resolve()) in proc.stderr
    assert str((clone / "src" / "haf").resolve()) in proc.stderr
