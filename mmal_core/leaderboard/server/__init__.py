"""The leaderboard server (``mmal serve``): a FastAPI app that accepts submissions, verifies
them by replay in a background worker and serves ranked leaderboards as JSON and HTML.

* :mod:`.storage`: SQLAlchemy tables (tokens stored hashed, submissions), SQLite in WAL mode
  by default or any database URL SQLAlchemy supports.
* :mod:`.worker`: the verification worker (replays with :func:`mmal_core.submission.verify_submission`).
* :mod:`.app`: the HTTP API and pages (:func:`create_app`).
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
