"""The verification worker: a background thread that replays pending submissions one by one.

On start it re-queues submissions a killed process left half-verified, so every accepted
submission is eventually verified or rejected. Replays run on CPU with one torch thread
(deterministic, and the HTTP side keeps a core).
"""

from __future__ import annotations

import logging
import threading
import traceback

from ..errors import MmalError
from ..submission import ReplayCache, parse_submission, verify_submission
from .storage import ServerStore

log = logging.getLogger("mmal.server")


class VerificationWorker:
    """Replays submissions from ``store`` until :meth:`stop` is called."""

    def __init__(self, store: ServerStore, poll_seconds: float = 0.5, cache: ReplayCache | None = None):
        self.store = store
        self.poll_seconds = poll_seconds
        self.cache = cache or ReplayCache()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.store.requeue_interrupted()
        self._thread = threading.Thread(target=self._loop, name="mmal-verifier", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Tell the worker a new submission is waiting."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        try:
            import torch

            torch.set_num_threads(1)
        except Exception:  # torch missing: verify_submission reports it per submission
            pass
        while not self._stop.is_set():
            job = self.store.claim_next()
            if job is None:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                continue
            self.verify(job)

    def verify(self, job: dict) -> None:
        """Replay one claimed submission and record the verdict."""
        try:
            verdict = verify_submission(parse_submission(job["document"]), self.cache)
            self.store.finish(job["id"], verdict.status, verdict.reason,
                              verdict.replayed if verdict.status == "verified" else None, verdict.selection)
        except MmalError as err:
            self.store.finish(job["id"], "rejected", str(err), None)
        except Exception as err:  # a bug must not stop the worker; the submission says what happened
            log.error("replay of submission %s failed:\n%s", job["id"], traceback.format_exc())
            self.store.finish(job["id"], "rejected", f"internal error during replay: {type(err).__name__}: {err}", None)
