"""The first import of every rule script: this checkout's library, the rule's log, fatal errors in it.

``from _haf_rule import start`` then ``log = start(snakemake, "haf.<rule>")``.

* Library: Snakemake appends the scripts' folder to ``sys.path`` *after* site-packages, so a ``haf``
  installed from another clone (``pip install -e .`` there) would silently win.  This module puts the
  scripts' folder first (``workflow/scripts/haf`` links to ``src/haf``) before anything imports
  ``haf``, and stops with both paths named if the ``haf`` it gets is not this checkout's.
* Log: every ``haf`` logger writes to the rule's ``log:`` file and to stderr.
* Fatal errors: an exception that ends the script is written to the rule's log (type, message and,
  for :class:`haf.errors.HafInputError`, the file, the place and the field) before Python prints it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
CHECKOUT_LIBRARY = (SCRIPTS.parents[1] / "src" / "haf").resolve()


def _import_checkout_library():
    if str(SCRIPTS) in sys.path:
        sys.path.remove(str(SCRIPTS))
    sys.path.insert(0, str(SCRIPTS))
    import haf

    imported = Path(haf.__file__).resolve().parent
    if imported != CHECKOUT_LIBRARY:
        raise ImportError(
            f"this workflow's rule scripts ({SCRIPTS}) must run the library of their own checkout, "
            f"{CHECKOUT_LIBRARY}, but 'haf' was imported from {imported} (another clone's installed "
            "copy?). Run from one clone only, or reinstall with `pip install -e .` in this checkout."
        )
    return haf


haf = _import_checkout_library()


def _log_fatal(log: logging.Logger):
    previous = sys.excepthook

    def hook(kind, error, tb):
        from haf.errors import HafInputError

        if isinstance(error, HafInputError):
            log.error(
                "fatal %s: %s (file: %s; where: %s; field: %s)",
                kind.__name__,
                error,
                error.path,
                error.where,
                error.field,
            )
        else:
            log.error("fatal %s: %s", kind.__name__, error, exc_info=(kind, error, tb))
        for handler in logging.getLogger("haf").handlers:
            handler.flush()
        previous(kind, error, tb)

    sys.excepthook = hook


def start(snakemake, name: str) -> logging.Logger:
    """Log to the rule's log file (and stderr), record fatal errors there; return the rule's logger."""
    from haf.logs import setup_logging

    log = setup_logging(snakemake.log[0] if snakemake.log else None, name)
    _log_fatal(log)
    log.debug("library %s (haf %s)", CHECKOUT_LIBRARY, haf.__version__)
    return log
