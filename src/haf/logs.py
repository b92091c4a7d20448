"""Per-rule logging: every rule script logs to its Snakemake ``log:`` file and to stderr."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(
    log_path: str | Path | None = None, name: str = "haf", level: int = logging.INFO
) -> logging.Logger:
    """Return the project logger writing to ``log_path`` (created) and stderr.

    Called once at the top of every rule script with ``snakemake.log[0]``; library modules use
    ``logging.getLogger(__name__)`` and inherit these handlers through the ``haf`` logger.
    """
    root = logging.getLogger("haf")
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(_FORMAT)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    root.addHandler(stream)
    if log_path is not None:
        path = Path(log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(path, mode="w", encoding="utf-8")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    root.propagate = False
    return logging.getLogger(name if name.startswith("haf") else f"haf.{name}")
