"""Verification workers: claim jobs from the server database and replay each one in a child
process under a wall-time and a memory limit.

A :class:`VerificationWorker` is a thread (inside ``mmal serve``, or in ``mmal serve worker``
on any machine that reaches the database). It claims a job (:meth:`ServerStore.claim_next`,
exactly one worker per job), renews the claim's lease while the replay runs and records the
verdict. The replay itself runs in a child process (:func:`_replayer`) that keeps its replay
cache between jobs; the child's address space is limited with ``RLIMIT_AS`` and it is killed
when a job runs past its time limit. A strategy that hangs, crashes or eats memory therefore
costs one time limit at most: the job is rejected with the reason and the next child takes
the next job. A worker that dies itself (SIGKILL, power loss) stops renewing its lease;
another worker takes the job over, and a job that has killed its worker twice is rejected.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass

from .storage import DEFAULT_LEASE, ServerStore

log = logging.getLogger("mmal.server")

#: Seconds a replay child may take to start (import torch and the plugins).
_START_TIMEOUT = 300.0


@dataclass(frozen=True)
class JobLimits:
    """Limits of one verification job."""

    #: Wall-clock seconds of one replay.
    time_limit: float = 600.0
    #: Address space of the replay process in MiB (0: no limit).
    memory_mb: int = 4096
    #: Seconds a claim lasts without renewal (a worker renews it every third of that).
    lease: float = DEFAULT_LEASE


def _replayer(conn, memory_mb: int) -> None:
    """Child process: replay the documents received on ``conn`` one by one, answer verdicts."""
    _die_with_parent()
    if memory_mb > 0:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:  # torch missing: verify_submission reports it per submission
        pass
    from ...errors import MmalError
    from ..submission import ReplayCache, parse_submission, verify_submission

    cache = ReplayCache()
    conn.send(("ready",))
    while True:
        try:
            document = conn.recv()
        except EOFError:
            return
        try:
            verdict = verify_submission(parse_submission(document), cache)
            answer = (verdict.status, verdict.reason,
                      verdict.replayed if verdict.status == "verified" else None, verdict.selection)
        except MemoryError:
            answer = ("rejected", f"the replay ran out of memory (limit {memory_mb} MiB)", None, None)
            conn.send(("verdict", answer))
            return  # a fresh child for the next job
        except MmalError as err:
            answer = ("rejected", str(err), None, None)
        except Exception as err:  # a bug or a broken strategy: the submission says what happened
            log.error("replay failed:\n%s", traceback.format_exc())
            answer = ("rejected", f"internal error during replay: {type(err).__name__}: {err}", None, None)
        conn.send(("verdict", answer))


def _die_with_parent() -> None:
    """Have Linux kill this process when its parent dies (a SIGKILLed worker must not leave a
    hanging replay behind); elsewhere a no-op."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Replayer:
    """A replay child process, started on first use and replaced after it was killed."""

    def __init__(self, limits: JobLimits):
        self.limits = limits
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # no inherited threads, locks or CUDA state
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_replayer, args=(child, self.limits.memory_mb), name="mmal-replay", daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(_START_TIMEOUT) or parent.recv() != ("ready",):
            self.kill()
            raise RuntimeError("the replay process did not start")

    def ensure_started(self) -> None:
        """Start the child unless it runs (before claiming a job: a claim must not wait for
        torch to import, or its lease could run out)."""
        if self._proc is None or not self._proc.is_alive():
            self.kill()
            self._start()

    def kill(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(10)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def run(self, document: dict, heartbeat=None, stop: threading.Event | None = None) -> tuple:
        """Replay ``document``: (status, reason, replayed, selection). ``heartbeat()`` is called
        about once a second while waiting and returning False abandons the job (None back)."""
        self.ensure_started()
        self._conn.send(document)
        deadline = time.monotonic() + self.limits.time_limit
        while True:
            try:
                ready = self._conn.poll(min(1.0, max(deadline - time.monotonic(), 0.0)))
                if ready:
                    kind, answer = self._conn.recv()
                    return answer
            except (EOFError, OSError):
                ready = True
            if ready or not self._proc.is_alive():  # it died without a verdict
                self._proc.join(5)
                code = self._proc.exitcode
                self.kill()
                why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                return ("rejected", f"the replay process died ({why}; memory limit {self.limits.memory_mb} MiB)",
                        None, None)
            if time.monotonic() >= deadline:
                self.kill()
                return ("rejected", f"the replay exceeded the time limit of {self.limits.time_limit:g} s and was "
                                    "stopped", None, None)
            if (stop is not None and stop.is_set()) or (heartbeat is not None and not heartbeat()):
                self.kill()
                return None


class VerificationWorker:
    """Claims and verifies submissions from ``store`` until :meth:`stop` is called."""

    def __init__(self, store: ServerStore, poll_seconds: float = 0.5, limits: JobLimits | None = None,
                 name: str | None = None):
        self.store = store
        self.poll_seconds = poll_seconds
        self.limits = limits or JobLimits()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.replayer = Replayer(self.limits)
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
        self.replayer.kill()

    def run_forever(self) -> None:
        """Run in the calling thread (``mmal serve worker``) until :meth:`stop`."""
        self.store.requeue_interrupted()
        self._loop()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.replayer.ensure_started()
            except Exception as err:
                log.error("cannot start a replay process: %s", err)
                self._stop.wait(self.poll_seconds * 10)
                continue
            try:
                job = self.store.claim_next(self.name, self.limits.lease)
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
        self.replayer.kill()

    def _heartbeat(self, job_id: int):
        every = self.limits.lease / 3
        last = [time.monotonic()]

        def beat() -> bool:
            if time.monotonic() - last[0] < every:
                return True
            last[0] = time.monotonic()
            try:
                return self.store.renew(job_id, self.name, self.limits.lease)
            except Exception as err:  # a busy database: keep going, the lease has slack
                log.warning("cannot renew the claim on submission %s (%s)", job_id, err)
                return True
        return beat

    def verify(self, job: dict) -> None:
        """Replay one claimed submission in the child process and record the verdict."""
        started = time.monotonic()
        try:
            outcome = self.replayer.run(job["document"], self._heartbeat(job["id"]), self._stop)
        except Exception as err:  # the child could not even start: the job stays claimed, the lease runs out
            log.error("cannot replay submission %s: %s", job["id"], err)
            self._stop.wait(self.poll_seconds)
            return
        if outcome is None:  # stopped, or the claim was lost: another worker finishes it
            return
        self._record(job["id"], *outcome, replay_seconds=time.monotonic() - started)

    def _record(self, submission_id: int, status: str, reason: str, replayed, selection,
                replay_seconds: float | None = None) -> None:
        """Store a verdict, retrying while the database is locked; a verdict that could not be
        stored before :meth:`stop` leaves the submission ``verifying`` until its lease runs
        out, and another worker replays it again (never lost)."""
        delay = self.poll_seconds
        while True:
            try:
                self.store.finish(submission_id, status, reason, replayed, selection, worker=self.name,
                                  replay_seconds=replay_seconds)
                return
            except Exception as err:
                log.warning("cannot store the verdict of submission %s (%s: %s); retrying",
                            submission_id, type(err).__name__, err)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, 30.0)
