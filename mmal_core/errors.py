"""Errors meant for people.

Every problem a user can cause (a bad config key, an unknown plugin name, a budget larger
than the pool, a corrupt file) is raised as :class:`MmalError` with a one-line message that
names the file, key or argument and what was expected. The CLI prints that line and exits
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MmalError(Exception):
    """A user-facing error: ``str(err)`` is one line that says what to fix."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep it to one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))


class PluginError(MmalError):
    """A plugin failed on its own (an exception inside its code, not a bad parameter).

    Still one line and no traceback for the person at the command line, who cannot fix it,
    but a distinct exit status (3) so that scripts tell it from bad input; the plugin's
    exception stays chained as ``__cause__`` for its author.
    """

    exit_code = 3


class ConfigError(MmalError):
    """A configuration file or value is invalid."""


class UnknownNameError(MmalError):
    """A dataset, strategy, model or other plugin name is not registered."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
