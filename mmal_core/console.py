"""The consoles mmal draws on: stdout and stderr, whole rows when piped."""

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
