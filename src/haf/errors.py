"""Errors that name the file, the record or line, and the field: what a user needs to fix the input."""

from __future__ import annotations

from pathlib import Path


class HafInputError(ValueError):
    """Bad input data. The message names the file, where in it (record/line/row), the field and the problem."""

    def __init__(
        self,
        path: str | Path | None,
        problem: str,
        *,
        where: str | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        self.where = where
        self.field = field
        parts = []
        if self.path is not None:
            parts.append(self.path)
        if where is not None:
            parts.append(where)
        if field is not None:
            parts.append(f"field {field!r}")
        prefix = ", ".join(parts)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)


class HafConfigError(ValueError):
    """A configuration value that cannot work; the message names the key and says what to do."""
