"""Shared bits of the CLI: consoles and the default database path."""

from __future__ import annotations

import os

from rich.console import Console, ConsoleDimensions

#: Width of output that is not a terminal (a pipe, a log file): wide enough for whole rows.
UNBOUNDED_WIDTH = 10_000


class _Console(Console):
    """A rich console that draws piped or redirected output at its natural width.

    Rich draws 80 columns when it is not writing to a terminal (or the width of the terminal
    the command was started from), which cuts table cells (``mmal-bar-b…``) and drops the last
    columns of wide tables in logs. Tables do not expand, so a large width keeps every row
    whole; ``COLUMNS`` still sets the width when it is given.
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal and not os.environ.get("COLUMNS"):
            return ConsoleDimensions(UNBOUNDED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


console = _Console()
err_console = _Console(stderr=True)

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
