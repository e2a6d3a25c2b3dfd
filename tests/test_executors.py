"""The local executor: runs in parallel processes, into one database, surviving dead workers."""

from __future__ import annotations

import importlib
import json
import re
import sqlite3
import sys

import pytest
import torch
from _support import cli_in_process, run_cli, tiny_config

from mmal_core import MmalError
from mmal_core.config import parse_config
from mmal_core.runtime.executors import LocalExecutor, RayExecutor, make_executor
from mmal_core.loop import run_experiment, run_specs

torch.set_num_threads(1)

# Worker functions that fail on purpose, one run per task (so the executors using them run
# without lockstep; tests/test_lockstep_loop.py kills lockstep groups). They live in a module of their own (written to a
# temporary folder put on sys.path) because spawned worker processes import them by name.
FAULTY_WORKERS = '''
import os, signal, time
from pathlib import Path

from mmal_core.runtime.executors import execute_task
from mmal_core.loop import _DatasetCache, execute_run
from mmal_core.store import Store

MARKS = Path(__file__).with_name("marks")


def _one_round_then(task, dataset, action):
    with Store(task.db_path) as store:
        execute_run(task.spec, store, task.experiment_id, None, _DatasetCache(), stop_after=1)
    MARKS.mkdir(exist_ok=True)
    (MARKS / f"{task.spec.key}-{task.attempt}").write_text(repr(time.time()))
    action()


def killed_on_first_attempt(task, dataset=None):
    """Attempt 1 commits one round, then its process is killed; later attempts run normally."""
    if task.attempt == 1:
        _one_round_then(task, dataset, lambda: os.kill(os.getpid(), signal.SIGKILL))
    return execute_task(task, dataset)


def contract_error(task, dataset=None):
    """The margin run commits one round, then fails as a plugin breaking the contract does."""
    if task.spec.strategy.name == "margin":
        def fail():
            from mmal_core import MmalError
            raise MmalError("strategy 'margin': select() returned duplicate positions")
        _one_round_then(task, dataset, fail)
    return execute_task(task, dataset)


def always_raises(task, dataset=None):
    """Every attempt commits one more round of the margin run, then raises."""
    if task.spec.strategy.name == "margin":
        def fail():
            raise RuntimeError("injected failure")
        _one_round_then(task, dataset, fail)
    return execute_task(task, dataset)
'''


@pytest.fixture
def faulty(tmp_path, monkeypatch):
    folder = tmp_path / "faulty"
    folder.mkdir()
    (folder / "mmal_faulty_workers.py").write_text(FAULTY_WORKERS)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("mmal_faulty_workers", None)
    return importlib.import_module("mmal_faulty_workers")


def rounds_of(db) -> dict[tuple[str, int], tuple]:
    """(run key, round) -> (n_labeled, accuracy, queried ids), failing on duplicates."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT r.run_key, o.round, o.n_labeled, o.metrics, o.queried_ids FROM rounds o JOIN runs r ON r.id=o.run_id"
        ).fetchall()
        n_runs = conn.execute("SELECT COUNT(*), COUNT(DISTINCT run_key) FROM runs").fetchone()
    assert n_runs[0] == n_runs[1], "a run row was created twice"
    out = {}
    for key, rnd, n, metrics, queried in rows:
        assert (key, rnd) not in out
        out[(key, rnd)] = (n, json.loads(metrics)["accuracy"], json.loads(queried))
    return out


def created_at(db, run_key: str, rnd: int) -> float:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT o.created_at FROM rounds o JOIN runs r ON r.id=o.run_id WHERE r.run_key=? AND o.round=?", (run_key, rnd)
        ).fetchone()[0]


class Recorder:
    def __init__(self):
        self.started, self.rounds, self.failures, self.finished = [], [], [], []

    def run_started(self, spec, total_rounds, done_rounds):
        self.started.append((spec.key, total_rounds, done_rounds))

    def round_finished(self, spec, record):
        self.rounds.append((spec.key, record.round))

    def run_failed(self, spec, attempt, reason, will_retry):
        self.failures.append((spec.strategy.name, attempt, reason, will_retry))

    def run_finished(self, outcome):
        self.finished.append((outcome.spec.key, outcome.status))


def small_config(**overrides) -> dict:
    """Two runs (random and margin, one seed) of three rounds each, about a second per run."""
    settings = {"model": {"params": {"epochs": 4, "hidden": 8}}, "budget": {"initial": 10, "per_round": 10, "rounds": 2}}
    return tiny_config(**{**settings, **overrides})


def serial_reference(tmp_path_factory):
    """The small experiment run one run after the other in this process, once per session."""
    cfg = parse_config(small_config())
    folder = tmp_path_factory.getbasetemp() / "executors-reference"
    done = folder / "done"
    if not done.exists():  # the Ray tests reuse the database this module made
        folder.mkdir(exist_ok=True)
        run_experiment(cfg, str(folder / "serial.db"))
        done.touch()
    return cfg, rounds_of(folder / "serial.db")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return serial_reference(tmp_path_factory)


def test_two_worker_processes_give_the_serial_result_once(tmp_path, reference):
    cfg, expected = reference
    db = tmp_path / "parallel.db"
    recorder = Recorder()
    outcomes = run_experiment(cfg, str(db), recorder, executor=LocalExecutor(workers=2))
    assert [o.status for o in outcomes] == ["finished", "finished"]
    assert [o.spec.strategy.name for o in outcomes] == ["random", "margin"]
    assert rounds_of(db) == expected
    # progress reached the parent: every round of both runs, each once
    assert sorted(recorder.rounds) == sorted(expected)
    assert recorder.failures == []
    # run ids follow the config's order, not the order in which workers reached the runs
    with sqlite3.connect(db) as conn:
        keys = [k for (k,) in conn.execute("SELECT run_key FROM runs ORDER BY id")]
        finished_at = conn.execute("SELECT id, finished_at FROM runs ORDER BY id").fetchall()
    assert keys == [spec.key for spec in run_specs(cfg)]
    # running the finished experiment again resumes: nothing new is computed, nothing rewritten
    again = run_experiment(cfg, str(db), Recorder(), executor=LocalExecutor(workers=2))
    assert [o.resumed_rounds for o in again] == [3, 3]
    assert rounds_of(db) == expected
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id, finished_at FROM runs ORDER BY id").fetchall() == finished_at


def test_a_killed_worker_is_retried_and_its_rounds_are_kept(tmp_path, reference, faulty):
    cfg, expected = reference
    db = tmp_path / "killed.db"
    recorder = Recorder()
    executor = LocalExecutor(workers=2, retries=1, worker=faulty.killed_on_first_attempt, lockstep=False)
    outcomes = run_experiment(cfg, str(db), recorder, executor=executor)
    assert [o.status for o in outcomes] == ["finished", "finished"]
    assert rounds_of(db) == expected
    assert sorted((f[0], f[1], f[3]) for f in recorder.failures) == [("margin", 1, True), ("random", 1, True)]
    assert all("killed by SIGKILL" in f[2] for f in recorder.failures)
    for outcome in outcomes:
        # round 0 was committed by the killed attempt and not computed again by the retry
        killed_at = float((faulty.MARKS / f"{outcome.spec.key}-1").read_text())
        assert created_at(db, outcome.spec.key, 0) < killed_at < created_at(db, outcome.spec.key, 1)
        assert outcome.resumed_rounds == 1


def test_a_run_that_keeps_failing_is_reported_and_the_others_finish(tmp_path, reference, faulty):
    cfg, expected = reference
    db = tmp_path / "failing.db"
    recorder = Recorder()
    executor = LocalExecutor(workers=2, retries=1, worker=faulty.always_raises, lockstep=False)
    outcomes = run_experiment(cfg, str(db), recorder, executor=executor)
    by_strategy = {o.spec.strategy.name: o for o in outcomes}
    assert by_strategy["random"].status == "finished"
    failed = by_strategy["margin"]
    assert failed.status == "failed"
    assert failed.error.startswith("failed after 2 attempts: RuntimeError: injected failure")
    assert failed.resumed_rounds == 2  # one round kept from each attempt
    assert [(f[0], f[1], f[3]) for f in recorder.failures] == [("margin", 1, True), ("margin", 2, False)]
    got = rounds_of(db)
    assert {k: v for k, v in got.items() if k[0] == failed.spec.key} == {
        k: v for k, v in expected.items() if k[0] == failed.spec.key and k[1] < 2
    }
    with sqlite3.connect(db) as conn:
        status, error = conn.execute("SELECT status, error FROM runs WHERE run_key=?", (failed.spec.key,)).fetchone()
    assert status == "failed" and "injected failure" in error
    # a plain re-run resumes the failed run from its two kept rounds and completes it
    again = run_experiment(cfg, str(db), Recorder(), executor=LocalExecutor(workers=2))
    assert [o.status for o in again] == ["finished", "finished"]
    assert rounds_of(db) == expected


def test_one_worker_runs_here_and_retries_raised_errors(tmp_path, reference, faulty):
    cfg, expected = reference
    recorder = Recorder()
    outcomes = run_experiment(cfg, str(tmp_path / "one.db"), recorder,
                              executor=LocalExecutor(workers=1, retries=0, worker=faulty.always_raises, lockstep=False))
    assert [o.status for o in outcomes] == ["finished", "failed"]
    assert re.fullmatch(r"failed after 1 attempt: RuntimeError: injected failure \(at mmal_faulty_workers\.py:\d+\)",
                        outcomes[1].error)
    assert recorder.failures[0][:2] == ("margin", 1) and recorder.failures[0][3] is False


@pytest.mark.parametrize("workers", [1, 2])
def test_an_mmal_error_is_not_retried(tmp_path, reference, faulty, workers):
    # it would only fail the same way again: one attempt, however many retries are allowed
    cfg, _ = reference
    recorder = Recorder()
    outcomes = run_experiment(cfg, str(tmp_path / "final.db"), recorder,
                              executor=LocalExecutor(workers=workers, retries=3, worker=faulty.contract_error, lockstep=False))
    assert [o.status for o in outcomes] == ["finished", "failed"]
    assert outcomes[1].error == "failed after 1 attempt: strategy 'margin': select() returned duplicate positions"
    assert [(f[0], f[1], f[3]) for f in recorder.failures] == [("margin", 1, False)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (dict(name="threads"), "--executor threads: unknown executor"),
        (dict(name="local", workers=0), "--workers 0: expected at least 1"),
        (dict(name="local", retries=-1), "--retries -1: expected 0 or more"),
        (dict(name="local", address="127.0.0.1:6379"), "--address: only used with --executor ray"),
        (dict(name="ray", gpu_fraction=1.5), "--gpu-fraction 1.5: expected a number between 0 and 1"),
    ],
)
def test_bad_executor_options_are_one_line_errors(args, message):
    name = args.pop("name")
    with pytest.raises(MmalError, match=message.replace(".", r"\.")):
        make_executor(name, **args)


def test_make_executor_builds_what_the_options_say():
    local = make_executor("local", workers=3, retries=2)
    assert isinstance(local, LocalExecutor) and (local.workers, local.retries) == (3, 2)
    ray = make_executor("ray", address="127.0.0.1:6379", workers=2, gpu_fraction=0.5)
    assert isinstance(ray, RayExecutor) and (ray.address, ray.workers, ray.gpu_fraction) == ("127.0.0.1:6379", 2, 0.5)
    # the header says what run() will do: one run never starts worker processes
    assert local.describe(5) == "local, 3 worker processes"
    assert local.describe(1) == "local, 1 worker (this process)"


def test_cli_runs_with_two_workers(tmp_path, write_config):
    path = write_config(small_config(budget={"initial": 10, "per_round": 10, "rounds": 1}))
    db = tmp_path / "cli.db"
    res = run_cli("run", str(path), "--db", str(db), "--workers", "2", "--retries", "0")
    assert res.returncode == 0, res.stderr
    assert "local, 2 worker processes" in res.stdout
    assert len(rounds_of(db)) == 4


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--executor", "rey"], "error: --executor rey: unknown executor (did you mean 'ray'?); expected one of local, ray"),
        (["--workers", "0"], "error: --workers 0: expected at least 1"),
        (["--gpu-fraction", "0.5"], "error: --gpu-fraction: only used with --executor ray"),
    ],
)
def test_cli_rejects_bad_executor_options_before_writing(tmp_path, write_config, capsys, option, message):
    from mmal_core.cli import main

    path = write_config(small_config())
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(path), "--db", str(tmp_path / "never.db"), *option])
    assert exit_info.value.code == 2
    assert " ".join(capsys.readouterr().err.split()) == message
    assert not (tmp_path / "never.db").exists()


def test_cli_summary_reports_retried_and_failed_runs(tmp_path, write_config, capsys, monkeypatch, faulty):
    import mmal_core.runtime.executors as executors
    from mmal_core.cli import main

    monkeypatch.setattr(executors, "make_executor",
                        lambda *args, **kw: LocalExecutor(workers=2, retries=1, worker=faulty.always_raises, lockstep=False))
    path = write_config(small_config())
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(path), "--db", str(tmp_path / "cli-fail.db")])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    out = " ".join(captured.out.split())
    assert "margin / seed 0: attempt 1 failed (RuntimeError: injected failure" in out and "retrying" in out
    assert "1 failed attempt(s) were retried; every finished round was kept" in out
    assert "failed after 2 attempts: RuntimeError: injected failure" in out and "(2 round(s) kept)" in out
    assert captured.err.strip().splitlines() == ["error: 1 run(s) did not finish; run the same command again to resume"]


def test_ctrl_c_says_the_finished_rounds_are_saved(tmp_path, write_config, capsys, monkeypatch):
    import mmal_core.loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mmal_core.loop, "run_experiment", interrupted)
    code, _, err = cli_in_process(capsys, "run", str(write_config(small_config())), "--db", str(tmp_path / "c.db"))
    assert code == 130
    assert err == "interrupted: finished rounds are saved; run the same command again to resume"
