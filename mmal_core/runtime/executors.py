"""Executors: where the runs of a sweep execute.

An experiment is a list of independent runs, one per (dataset, seed, strategy). Every run
commits its rounds to the one SQLite database as they finish (``execute_run``), so runs can
execute anywhere that can open that file, in any order, and a run that is started again
resumes from its last committed round. Executors only decide *where* the runs execute:

With lockstep on (the default), the unit a worker executes is a group of runs that share
dataset, model and budget, trained together (:func:`mmal_core.loop.execute_group`); the
groups are cut into even pieces, a few per worker, so that the workers finish together
(:func:`mmal_core.loop.plan_groups`). A run's rounds are the same either way.

``LocalExecutor(workers=N)``
    One worker process per run, at most ``N`` at a time (``N = 1``: the runs execute
    one after the other in this process, as ``run_experiment`` always did).
``RayExecutor(address=...)``
    The runs as Ray tasks on an existing cluster, or on a local one started bound to
    127.0.0.1. Each (dataset, seed) is loaded once by the driver and shared through the
    object store instead of being rebuilt by every task.

A run whose worker dies (killed process, raised error) is started again up to ``retries``
times; the rounds it had committed are kept, so the new attempt continues where the dead one
stopped. A run that still fails is reported, the others go on.

Each worker opens its own connection to the database; WAL mode and the busy timeout set by
:class:`~mmal_core.store.Store` serialise the writers, the primary key (run_id, round)
makes a round impossible to record twice and ``Store.run`` (``BEGIN IMMEDIATE``) makes a run
row impossible to create twice. The parent follows progress by reading the database.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import MmalError
from ..loop import (Callbacks, NotRetried, RunOutcome, RunSpec, _DatasetCache, _DatasetsBySeed, describe_error, error_of,
                   execute_group, execute_run, failed_outcome, is_group, notify_failure, plan_groups)
from ..store import Store

#: How often (seconds) the parent looks at workers and at the database for progress.
POLL_SECONDS = 0.25

EXECUTOR_NAMES = ("local", "ray")


@dataclass(frozen=True)
class RunTask:
    """One attempt at one run, as shipped to a worker.

    db_path: the results database every worker writes to.
    attempt: 1 for the first try, 2 for the first retry, ...
    threads: torch intra-op threads the worker may use (None: leave torch's default).
    """

    spec: RunSpec
    db_path: str
    experiment_id: int
    attempt: int = 1
    threads: int | None = None
    #: A lockstep group (``spec`` is its first run): the worker returns one outcome per run.
    group: tuple[RunSpec, ...] = ()
    #: Retries of a group's run that raises, on its own, inside the worker.
    retries: int = 0


class _GivenDataset:
    """Stands in for the loop's dataset cache when the dataset arrives ready-made."""

    def __init__(self, dataset):
        self.dataset = dataset

    def get(self, spec, seed):
        return self.dataset


def execute_task(task: RunTask, dataset=None) -> RunOutcome | list[RunOutcome]:
    """Run (or resume) ``task.spec`` into ``task.db_path``; what every worker calls.

    dataset: the run's :class:`~mmal_core.data.MultimodalDataset` when the executor already
    holds it (Ray's object store); None to load it here. A group task loads its own
    datasets (a group spans seeds) and returns the list of its runs' outcomes.
    On an error the run is marked ``failed`` with the one-line reason, then the error is
    raised again so that the executor can decide to retry.
    """
    if task.threads:
        import torch

        torch.set_num_threads(task.threads)
    if task.group:
        # each run of the group that fails is marked failed (and retried) inside
        with Store(task.db_path) as store:
            return execute_group(list(task.group), store, task.experiment_id, None, _DatasetsBySeed(),
                                 retries=task.retries)
    with Store(task.db_path) as store:
        datasets = _GivenDataset(dataset) if dataset is not None else _DatasetCache()
        try:
            return execute_run(task.spec, store, task.experiment_id, None, datasets)
        except BaseException as err:
            found = store.find_run(task.experiment_id, task.spec.key)
            if found is not None:
                store.set_status(found[0], "failed", describe_error(err))
            raise


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker process killed by {name}"
    return f"worker process exited with status {exitcode} before reporting a result"


class _ProgressFollower:
    """Turns rows appearing in the database into ``round_finished`` callbacks."""

    def __init__(self, store: Store, experiment_id: int, callbacks: Callbacks):
        self.store = store
        self.experiment_id = experiment_id
        self.callbacks = callbacks
        self.watched: dict[str, tuple[RunSpec, int]] = {}  # run key -> (spec, rounds reported)

    def rounds_done(self, spec: RunSpec) -> int:
        return self.store.count_rounds(self.experiment_id, spec.key)

    def watch(self, spec: RunSpec) -> None:
        if spec.key in self.watched:
            return
        done = self.rounds_done(spec)
        self.watched[spec.key] = (spec, done)
        self.callbacks.run_started(spec, len(spec.budget.schedule) + 1, done)

    def unwatch(self, spec: RunSpec) -> None:
        if spec.key in self.watched:
            self.poll([spec.key])
        self.watched.pop(spec.key, None)

    def poll(self, keys: list[str] | None = None) -> None:
        """Report the new rounds of the watched runs (of ``keys`` only, when given): one
        query counts them all, and only the runs that moved have their rounds read."""
        keys = list(self.watched) if keys is None else keys
        counts = self.store.round_counts(self.experiment_id, keys) if keys else {}
        for key in keys:
            spec, reported = self.watched[key]
            if counts.get(key, 0) <= reported:
                continue
            records = self.store.rounds_of(self.experiment_id, key, reported)  # rounds are numbered 0, 1, ...
            for record in records:
                self.callbacks.round_finished(spec, record)
            self.watched[key] = (spec, reported + len(records))


def _outcome_of_unit_run(store: Store, experiment_id: int, spec: RunSpec, error: str) -> RunOutcome:
    """What a run of a lockstep group whose worker died comes to: finished if it had finished
    before, else failed with ``error`` (its committed rounds kept)."""
    found = store.find_run(experiment_id, spec.key)
    if found is None or found[1] != "finished":
        return failed_outcome(store, experiment_id, spec, error)
    rounds = store.rounds(found[0])
    return RunOutcome(spec, found[0], "finished", [r.n_labeled for r in rounds],
                      [r.metrics.get("accuracy", float("nan")) for r in rounds], resumed_rounds=len(rounds))


class Executor:
    """Runs a list of runs; subclasses say where.

    retries: how many times a run whose worker died or raised is started again (an
    :class:`MmalError` is not: it would fail the same way again, see :class:`NotRetried`).
    lockstep: runs that share dataset, model and budget train together (one worker attempt
    per group; a run of the group that raises is retried on its own inside it).
    worker: the function a worker calls with a :class:`RunTask` (and the dataset, when
    the executor ships it); tests pass a wrapper that injects failures.
    """

    #: The runs use this machine's devices (a GPU asked for must be seen here).
    runs_here = True
    name = "executor"

    def __init__(self, retries: int = 1, worker: Callable[..., RunOutcome] = execute_task, lockstep: bool = True):
        if retries < 0:
            raise MmalError(f"--retries {retries}: expected 0 or more")
        self.retries = retries
        self.worker = worker
        self.lockstep = lockstep

    def _units(self, specs: list[RunSpec], parts: int) -> list[list[int]]:
        """What one worker attempt executes: lockstep groups (see ``plan_groups``) or single runs."""
        return plan_groups(specs, parts) if self.lockstep else [[i] for i in range(len(specs))]

    def run(self, specs: list[RunSpec], store: Store, experiment_id: int,
            callbacks: Callbacks | None = None) -> list[RunOutcome]:
        """Execute every run of ``specs`` into ``store``; outcomes in the order of ``specs``."""
        raise NotImplementedError

    def start_early(self, n_runs: int) -> None:
        """Begin what the workers of a sweep of ``n_runs`` need before they can start (while
        the caller validates the config and opens the store); nothing by default."""

    def describe(self, n_runs: int | None = None) -> str:
        """A few words for the CLI (``local, 2 worker processes``) about a sweep of ``n_runs``."""
        return self.name


class _SlotScheduler(Executor):
    """Keeps up to ``slots`` attempts running, retries failures, reports progress.

    Subclasses implement ``_start(task) -> handle`` and ``_wait(handles, timeout)`` which
    returns ``[(handle, outcome_or_None, error_or_None)]`` for attempts that ended.
    """

    slots = 1

    def run(self, specs, store, experiment_id, callbacks=None):
        callbacks = callbacks or Callbacks()
        follower = _ProgressFollower(store, experiment_id, callbacks)
        units = self._units(specs, self.slots)
        pending = deque((u, 1) for u in range(len(units)))
        running: dict[Any, tuple[int, int]] = {}
        outcomes: dict[int, RunOutcome] = {}
        try:
            while pending or running:
                while pending and len(running) < self.slots:
                    u, attempt = pending.popleft()
                    unit = units[u]
                    for i in unit:
                        follower.watch(specs[i])
                    group = tuple(specs[i] for i in unit) if is_group(unit) else ()
                    task = RunTask(specs[unit[0]], str(store.path), experiment_id, attempt, self._threads(),
                                   group=group, retries=self.retries)
                    running[self._start(task)] = (u, attempt)
                for handle, outcome, error in self._wait(list(running), POLL_SECONDS):
                    u, attempt = running.pop(handle)
                    unit = units[u]
                    for i in unit:
                        follower.unwatch(specs[i])
                    if error is None:
                        for i, one in zip(unit, outcome if is_group(unit) else [outcome]):
                            outcomes[i] = one
                            callbacks.run_finished(one)
                        continue
                    will_retry = attempt <= self.retries and not isinstance(error, NotRetried)
                    for i in unit:
                        notify_failure(callbacks, specs[i], attempt, error, will_retry)
                    if will_retry:
                        pending.appendleft((u, attempt + 1))
                        continue
                    tries = f"{attempt} attempts" if attempt > 1 else "1 attempt"
                    for i in unit:
                        failed = _outcome_of_unit_run(store, experiment_id, specs[i], f"failed after {tries}: {error}")
                        outcomes[i] = failed
                        callbacks.run_finished(failed)
                follower.poll()
        finally:
            if running:
                self._cancel(list(running))
        return [outcomes[i] for i in range(len(specs))]

    def _threads(self) -> int | None:
        return None

    def _start(self, task: RunTask):  # pragma: no cover - abstract
        raise NotImplementedError

    def _wait(self, handles: list, timeout: float) -> list[tuple[Any, RunOutcome | None, str | None]]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _cancel(self, handles: list) -> None:
        """Stop attempts still running (the parent is being interrupted)."""


# -- local processes -----------------------------------------------------------------------

def _exit_with_parent(lifeline) -> None:
    """Exit this worker as soon as the ``mmal run`` that started it is gone.

    ``lifeline`` is the reading end of a pipe whose only writing end the parent holds and
    never writes to: it reads end-of-file exactly when the parent has exited, however it was
    killed. A killed ``mmal run`` must not leave workers behind that keep writing rounds
    while the command, started again, resumes the same runs. (Linux's parent-death signal
    does not do this: fork-server workers are children of the fork server, which outlives
    the command as long as any worker holds its pipe.)
    """

    def watch():
        try:
            lifeline.poll(None)
        except (EOFError, OSError):
            pass
        os._exit(1)

    threading.Thread(target=watch, name="mmal-lifeline", daemon=True).start()


def _process_main(worker: Callable[..., RunOutcome], task: RunTask, conn, lifeline) -> None:
    """Entry point of a spawned worker process: run the task, send back the outcome or error."""
    _exit_with_parent(lifeline)
    try:
        outcome = worker(task)
    except BaseException as err:  # everything goes back to the parent as one line
        conn.send(("final" if isinstance(err, MmalError) else "error", describe_error(err)))
    else:
        conn.send(("ok", outcome))
    finally:
        conn.close()


def _worker_context():
    """Where worker processes come from.

    A fork server that has imported torch and mmal once (and started no thread) forks each
    worker in milliseconds; spawning a fresh interpreter per run would pay the imports every
    time. Platforms without fork servers spawn.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # torch._dynamo is imported lazily by the first optimizer a run builds: seconds per worker
    context.set_forkserver_preload(["torch", "torch._dynamo", "mmal_core.runtime.executors"])
    return context


class _Attempt:
    def __init__(self, process, conn):
        self.process, self.conn = process, conn
        self.message = None


class LocalExecutor(_SlotScheduler):
    """Runs on this machine: one worker process per run, ``workers`` at a time.

    workers: parallel processes (default: the number of CPU cores); with 1 the runs
    execute in this process one after the other, without starting any process.
    Each process gets ``cores // workers`` torch threads so that the workers together do
    not oversubscribe the CPU.
    """

    name = "local"

    def __init__(self, workers: int | None = None, retries: int = 1, worker=execute_task, lockstep: bool = True):
        super().__init__(retries, worker, lockstep)
        cores = os.cpu_count() or 1
        workers = cores if workers is None else workers
        if workers < 1:
            raise MmalError(f"--workers {workers}: expected at least 1")
        self.workers = self.slots = workers
        self.threads = max(1, cores // workers)
        self._context = _worker_context()
        self._lifeline = None  # (read, write) ends, made when the first worker starts

    def describe(self, n_runs: int | None = None) -> str:
        if min(self.workers, n_runs if n_runs is not None else self.workers) <= 1:  # as run() decides
            return "local, 1 worker (this process)"
        return f"local, {self.workers} worker processes"

    def start_early(self, n_runs: int) -> None:
        """Start the fork server now, so that it imports torch and mmal while this process
        validates the config and records the environment (about 2 s of imports each, side
        by side instead of one after the other). It stops with this process."""
        if min(self.workers, n_runs) > 1 and self._context.get_start_method() == "forkserver":
            from multiprocessing import forkserver

            forkserver.ensure_running()

    def run(self, specs, store, experiment_id, callbacks=None):
        if min(self.workers, len(specs)) <= 1:  # nothing to parallelise: no process to start
            return self._run_here(specs, store, experiment_id, callbacks or Callbacks())
        return super().run(specs, store, experiment_id, callbacks)

    def _run_here(self, specs, store, experiment_id, callbacks):
        """One worker: runs (and lockstep groups) execute in this process, sharing datasets."""
        outcomes: dict[int, RunOutcome] = {}
        datasets = _DatasetCache()
        for unit in self._units(specs, 1):
            if is_group(unit):
                datasets = _DatasetsBySeed()  # what this group needs, all seeds at once
                group = [specs[i] for i in unit]
                if self.worker is execute_task:
                    done = execute_group(group, store, experiment_id, callbacks, datasets, retries=self.retries)
                else:
                    done = self.worker(RunTask(group[0], str(store.path), experiment_id, group=tuple(group),
                                               retries=self.retries))
                    for outcome in done:
                        callbacks.run_finished(outcome)
                outcomes.update(zip(unit, done))
            else:
                outcomes.update(zip(unit, self._run_alone([specs[i] for i in unit], store, experiment_id,
                                                          callbacks, datasets)))
        return [outcomes[i] for i in range(len(specs))]

    def _run_alone(self, specs, store, experiment_id, callbacks, datasets):
        outcomes = []
        for spec in specs:
            attempt = 1
            while True:
                try:
                    if self.worker is execute_task:
                        outcome = execute_run(spec, store, experiment_id, callbacks, datasets)
                    else:
                        outcome = self.worker(RunTask(spec, str(store.path), experiment_id, attempt))
                        callbacks.run_finished(outcome)
                    break
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as err:
                    error = error_of(err)
                    will_retry = attempt <= self.retries and not isinstance(error, NotRetried)
                    notify_failure(callbacks, spec, attempt, error, will_retry)
                    if not will_retry:
                        tries = f"{attempt} attempts" if attempt > 1 else "1 attempt"
                        outcome = failed_outcome(store, experiment_id, spec, f"failed after {tries}: {error}")
                        callbacks.run_finished(outcome)
                        break
                    attempt += 1
            outcomes.append(outcome)
        return outcomes

    def _threads(self) -> int | None:
        return self.threads

    def _start(self, task: RunTask):
        if self._lifeline is None:
            self._lifeline = self._context.Pipe(duplex=False)
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(target=_process_main, args=(self.worker, task, send, self._lifeline[0]),
                                        daemon=True,
                                        name=f"mmal-run-{task.spec.key}")
        process.start()
        send.close()  # the child holds the only sending end: EOF once it exits
        return _Attempt(process, receive)

    def _wait(self, handles, timeout):
        waitables = {}
        for attempt in handles:
            waitables[attempt.process.sentinel] = attempt
            if attempt.message is None:
                waitables[attempt.conn] = attempt
        ready = multiprocessing.connection.wait(list(waitables), timeout)
        ended = []
        for obj in ready:
            attempt = waitables[obj]
            if obj is attempt.conn and attempt.message is None:
                try:
                    attempt.message = attempt.conn.recv()
                except (EOFError, OSError):
                    attempt.message = ("lost", None)
        for attempt in {id(a): a for a in (waitables[o] for o in ready)}.values():
            if attempt.process.is_alive():
                continue
            attempt.process.join()
            if attempt.message is None and attempt.conn.poll():
                try:
                    attempt.message = attempt.conn.recv()
                except (EOFError, OSError):
                    pass
            attempt.conn.close()
            kind, payload = attempt.message or ("lost", None)
            if kind == "ok":
                ended.append((attempt, payload, None))
            elif kind == "error":
                ended.append((attempt, None, payload))
            elif kind == "final":
                ended.append((attempt, None, NotRetried(payload)))
            else:
                ended.append((attempt, None, _exit_reason(attempt.process.exitcode)))
        return ended

    def _cancel(self, handles):
        for attempt in handles:
            if attempt.process.is_alive():
                attempt.process.terminate()
        for attempt in handles:
            attempt.process.join(5)
            if attempt.process.is_alive():
                attempt.process.kill()
                attempt.process.join()


# -- Ray ------------------------------------------------------------------------------------

def _ray_task(worker, task: RunTask, dataset):
    """Body of the Ray task: ``dataset`` arrives from the object store (no copy per task)."""
    return worker(task, dataset)


def import_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    from ..extras import require_extra

    require_extra("ray", what="--executor ray")
    import ray

    return ray


def start_local_ray(num_cpus: int | None = None):
    """Start a one-machine Ray instance whose servers listen on 127.0.0.1 only.

    Ray normally advertises (and binds its servers to) the machine's reachable address; with
    cluster mode off it resolves the node address to the loopback one, so nothing listens
    beyond this machine. Takes a few seconds.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when ray is imported ...
    ray = import_ray()
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # ... and looked up here when ray was imported earlier
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="WARNING", log_to_driver=True)
    return ray


class RayExecutor(_SlotScheduler):
    """Runs the runs as Ray tasks.

    address: an existing cluster (``ray://host:10001`` or ``host:6379``; ``auto`` for the one
    this machine belongs to); None starts a local instance bound to 127.0.0.1 (and stops it
    at the end). A Ray session already initialised in this process is used as it is.
    workers: tasks in flight at a time (default: the cluster's CPU count).
    gpu_fraction: GPUs reserved per task (0.25: four runs share a GPU); default 0 on a
    cluster without GPUs, else 0.25.
    The database path must be reachable by every node (one machine, or a shared file system).
    """

    runs_here = False  # the tasks run on the cluster's machines

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, retries: int = 1,
                 gpu_fraction: float | None = None, worker=execute_task, lockstep: bool = True):
        super().__init__(retries, worker, lockstep)
        if workers is not None and workers < 1:
            raise MmalError(f"--workers {workers}: expected at least 1")
        if gpu_fraction is not None and not 0 <= gpu_fraction <= 1:
            raise MmalError(f"--gpu-fraction {gpu_fraction}: expected a number between 0 and 1")
        self.address = address
        self.workers = workers
        self.gpu_fraction = gpu_fraction
        self._remote = None
        self._datasets: dict[tuple[str, int], Any] = {}

    def describe(self, n_runs: int | None = None) -> str:
        where = self.address or "a local Ray instance on 127.0.0.1"
        return f"ray, {where}"

    def run(self, specs, store, experiment_id, callbacks=None):
        ray = import_ray()
        started_here = False
        if not ray.is_initialized():
            if self.address:
                try:
                    ray.init(address=self.address, logging_level="WARNING")
                except (ConnectionError, RuntimeError, ValueError) as err:
                    raise MmalError(f"--address {self.address}: cannot join the Ray cluster ({' '.join(str(err).split())[:200]})") from None
            else:
                start_local_ray(self.workers)
            started_here = True
        try:
            resources = ray.cluster_resources()
            self.slots = self.workers or max(1, int(resources.get("CPU", 1)))
            gpus = float(resources.get("GPU", 0))
            fraction = self.gpu_fraction if self.gpu_fraction is not None else (0.25 if gpus else 0.0)
            if fraction > 0 and not gpus:
                raise MmalError(f"--gpu-fraction {fraction}: the Ray cluster has no GPU")
            self._remote = ray.remote(_ray_task).options(num_cpus=1, num_gpus=fraction, max_retries=0)
            self._datasets = {}
            return super().run(specs, store, experiment_id, callbacks)
        finally:
            self._datasets = {}
            if started_here:
                ray.shutdown()

    def _dataset_ref(self, spec: RunSpec):
        """The (dataset, seed) pool in the object store, put there once for all its runs."""
        from ..plugins import load_dataset
        from ..config import content_hash

        key = (content_hash(spec.dataset.canonical()), spec.seed)
        if key not in self._datasets:
            import ray

            self._datasets[key] = ray.put(load_dataset(spec.dataset.name, seed=spec.seed, **spec.dataset.params))
        return self._datasets[key]

    def _threads(self) -> int | None:
        return 1

    def _start(self, task: RunTask):
        # a lockstep group spans seeds: its task loads its own datasets
        return self._remote.remote(self.worker, task, None if task.group else self._dataset_ref(task.spec))

    def _wait(self, handles, timeout):
        import ray

        ready, _ = ray.wait(handles, num_returns=len(handles), timeout=timeout)
        ended = []
        for ref in ready:
            try:
                ended.append((ref, ray.get(ref), None))
            except ray.exceptions.RayTaskError as err:
                cause = err.cause if getattr(err, "cause", None) is not None else err
                ended.append((ref, None, describe_error(cause) if cause is not err else _ray_reason(err)))
            except ray.exceptions.RayError as err:
                ended.append((ref, None, _ray_reason(err)))
        return ended

    def _cancel(self, handles):
        import ray

        for ref in handles:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or the cluster is gone: nothing to stop
                pass


def _ray_reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    first = text.split(". ")[0][:200]
    return f"{type(err).__name__}: {first}"


def make_executor(name: str, workers: int | None = None, address: str | None = None, retries: int = 1,
                  gpu_fraction: float | None = None, lockstep: bool = True) -> Executor:
    """The executor the CLI options describe (``--executor local|ray``, ``--no-lockstep``, ...)."""
    if name == "local":
        if address:
            raise MmalError("--address: only used with --executor ray")
        if gpu_fraction is not None:
            raise MmalError("--gpu-fraction: only used with --executor ray")
        return LocalExecutor(workers, retries, lockstep=lockstep)
    if name == "ray":
        return RayExecutor(address, workers, retries, gpu_fraction, lockstep=lockstep)
    from ..errors import did_you_mean

    raise MmalError(f"--executor {name}: unknown executor{did_you_mean(name, EXECUTOR_NAMES)}; expected one of "
                    f"{', '.join(EXECUTOR_NAMES)}")
