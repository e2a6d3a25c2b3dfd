"""Shared bits of the CLI: consoles and the default database path."""

from __future__ import annotations

import os

from ..console import console, err_console  # noqa: F401 (the CLI's consoles)

#: Default results database, relative to the working directory (override with --db or MMAL_DB).
DEFAULT_DB = "mmal-results.db"


def default_db(db: str | None = None) -> str:
    """The results database: ``--db`` when given, else ``$MMAL_DB``, else ./mmal-results.db.

    An empty ``--db ""`` (an unset shell variable, typically) is an error, not the default.
    """
    if db is not None:
        if not db.strip():
            from ..errors import MmalError

            raise MmalError("--db: expected a database file path, got an empty string")
        return db
    return os.environ.get("MMAL_DB") or DEFAULT_DB


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.{digits}f}"
    return str(value)
