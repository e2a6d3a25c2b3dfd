"""Files mmal writes for people: created through a temporary file, then given ordinary modes."""

from __future__ import annotations

import os
from pathlib import Path


def honour_umask(path: str | Path) -> None:
    """Give ``path`` the mode a plain ``open(path, "w")`` would have (0666 less the umask).

    ``tempfile.mkstemp`` makes its file private (0600) and a rename keeps that mode, so a file
    written through a temporary one would be unreadable by the people it is meant for.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
