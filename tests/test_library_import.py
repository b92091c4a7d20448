"""The library is importable by rule scripts without installing it and without PYTHONPATH.

Under `--sdm conda` Snakemake removes PYTHONPATH from every job; the script preamble then does
`sys.path.extend([... Snakemake's own sys.path ..., <the script's folder>])`. The project's answer is the
link `workflow/scripts/haf -> ../../src/haf`. These tests reproduce that situation in a clean interpreter:
`python -S` (no site: the editable install's .pth entry is not processed), PYTHONPATH removed, the
third-party site-packages appended (for numpy & co.), then `workflow/scripts` appended as the preamble
does. A negative control without `workflow/scripts` shows that nothing else makes `haf` importable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"
SITE_PACKAGES = sysconfig.get_paths()["purelib"]

PROBE = """
import sys
sys.path.extend({paths!r})
try:
    import haf
except ImportError as exc:
    print("IMPORT-FAILED", exc)
    raise SystemExit(3)
import haf.modalities, haf.errors, haf.artifacts.files
print("HAF-FILE", haf.__file__)
"""


def _probe(paths: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return subprocess.run(
        [sys.executable, "-S", "-c", PROBE.format(paths=paths)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd="/",  # not the repo root, so '' on sys.path finds nothing
    )


def test_scripts_folder_link_points_at_the_library():
    link = SCRIPTS / "haf"
    assert link.is_symlink(), "workflow/scripts/haf must be a link to src/haf"
    assert link.resolve() == (REPO / "src" / "haf").resolve()


def test_haf_imports_from_the_scripts_folder_without_install_or_pythonpath():
    proc = _probe([SITE_PACKAGES, str(SCRIPTS)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("HAF-FILE"))
    haf_file = Path(line.split(maxsplit=1)[1])
    # imported through the link, and the link resolves into src/haf
    assert haf_file.parent == SCRIPTS / "haf", haf_file
    assert haf_file.resolve() == (REPO / "src" / "haf" / "__init__.py").resolve()


def test_negative_control_without_the_scripts_folder_haf_is_not_importable():
    proc = _probe([SITE_PACKAGES])
    assert proc.returncode == 3 and "IMPORT-FAILED" in proc.stdout, (
        "haf was importable without workflow/scripts on sys.path, so the positive test proves nothing:\n"
        + proc.stdout
        + proc.stderr
    )
