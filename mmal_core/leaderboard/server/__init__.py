"""The leaderboard server (``mmal serve``): a FastAPI app that accepts submissions, verifies
them by replay in a background worker and serves ranked leaderboards as JSON and HTML.

* :mod:`.storage`: SQLAlchemy tables (tokens stored hashed, submissions), SQLite in WAL mode
  by default or any database URL SQLAlchemy supports.
* :mod:`.worker`: the verification worker (replays with :func:`mmal_core.leaderboard.submission.verify_submission`).
* :mod:`.app`: the HTTP API and pages (:func:`create_app`).
"""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):
    # The app needs FastAPI; the storage and the worker do not, so importing them (token
    # commands, `mmal serve worker`) must not import it.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
