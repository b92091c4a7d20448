"""Benchmarks run from a checkout: import its library (``src/``) and the test fakes (``tests/fakes``).

``import _repo`` first in every benchmark (``python bench/x.py`` puts ``bench/`` on ``sys.path``), so
the checkout's code is measured even when another clone's ``haf`` is installed.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "tests", REPO / "src"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
