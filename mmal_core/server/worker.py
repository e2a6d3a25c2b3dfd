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
        failures = 0
        while not self._stop.is_set():
            try:
                job = self.store.claim_next()
            except Exception as err:  # e.g. the database locked by another process: wait, try again
                failures += 1
                log.warning("cannot read the submission queue (%s: %s); retrying", type(err).__name__, err)
                self._stop.wait(min(self.poll_seconds * 2 ** min(failures, 6), 30.0))
                continue
            failures = 0
            if job is None:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                continue
            self.verify(job)

    def verify(self, job: dict) -> None:
        """Replay one claimed submission and record the verdict."""
        try:
            verdict = verify_submission(parse_submission(job["document"]), self.cache)
            outcome = (verdict.status, verdict.reason, verdict.replayed if verdict.status == "verified" else None,
                       verdict.selection)
        except MmalError as err:
            outcome = ("rejected", str(err), None, None)
        except Exception as err:  # a bug must not stop the worker; the submission says what happened
            log.error("replay of submission %s failed:\n%s", job["id"], traceback.format_exc())
            outcome = ("rejected", f"internal error during replay: {type(err).__name__}: {err}", None, None)
        self._record(job["id"], *outcome)

    def _record(self, submission_id: int, status: str, reason: str, replayed, selection) -> None:
        """Store a verdict, retrying while the database is locked; a verdict that could not be
        stored before :meth:`stop` leaves the submission ``verifying``, and the next start puts
        it back in the queue (it is replayed again, never lost)."""
        delay = self.poll_seconds
        while True:
            try:
                self.store.finish(submission_id, status, reason, replayed, selection)
                return
            except Exception as err:
                log.warning("cannot store the verdict of submission %s (%s: %s); retrying",
                            submission_id, type(err).__name__, err)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, 30.0)
