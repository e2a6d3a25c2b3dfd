"""The active-learning loop: rounds, budgets, determinism, resume (also after SIGKILL)."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from mmal_core.cli.results import export_document
from mmal_core.config import parse_config
from mmal_core.loop import initial_set, run_experiment, run_specs, execute_run, environment
from mmal_core.store import Store

from _support import tiny_config


def _export(db):
    with Store(db, readonly=True) as store:
        return export_document(store, store.resolve_experiment(None))


def test_rounds_follow_the_budget_schedule(tmp_path):
    cfg = parse_config(tiny_config(budget={"initial": 10, "sizes": [5, 15]}))
    outcomes = run_experiment(cfg, str(tmp_path / "r.db"))
    assert [o.status for o in outcomes] == ["finished", "finished"]
    doc = _export(tmp_path / "r.db")
    for run in doc["runs"]:
        rounds = run["rounds"]
        assert [r["n_labeled"] for r in rounds] == [10, 15, 30]
        assert [len(r["queried_ids"]) for r in rounds] == [5, 15, 0]
        seen = list(run["initial_ids"]) + [i for r in rounds for i in r["queried_ids"]]
        assert len(seen) == len(set(seen)) == 30  # nothing labeled twice
        assert all(0 <= i < 300 for i in seen)  # pool ids only, never test ids
        metrics = rounds[-1]["metrics"]
        assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1
        assert set(metrics["modality_accuracy"]) == {"m0", "m1"}
    # same seed -> same initial set and first model for both strategies
    a, b = doc["runs"]
    assert a["initial_ids"] == b["initial_ids"]
    def model_metrics(r):  # what the round's model scores, not what the strategy then queried
        return {k: v for k, v in r["metrics"].items() if k != "query"}

    assert model_metrics(a["rounds"][0]) == model_metrics(b["rounds"][0])


def test_same_config_twice_gives_identical_exports(tmp_path):
    cfg = parse_config(tiny_config())
    run_experiment(cfg, str(tmp_path / "a.db"))
    run_experiment(cfg, str(tmp_path / "b.db"))
    assert json.dumps(_export(tmp_path / "a.db"), sort_keys=True) == json.dumps(_export(tmp_path / "b.db"), sort_keys=True)


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = parse_config(tiny_config())
    run_experiment(cfg, str(tmp_path / "full.db"))
    part = tmp_path / "part.db"
    with Store(part) as store:
        eid = store.experiment(cfg.name, cfg.hash(), cfg.canonical(), environment())
        outcome = execute_run(run_specs(cfg)[0], store, eid, stop_after=2)
        assert outcome.status == "interrupted"
        assert len(store.rounds(outcome.run_id)) == 2
    outcomes = run_experiment(cfg, str(part))
    assert outcomes[0].resumed_rounds == 2 and outcomes[1].resumed_rounds == 0
    assert _export(part)["runs"] == _export(tmp_path / "full.db")["runs"]
    # running a finished experiment again does no new work
    again = run_experiment(cfg, str(part))
    assert all(o.resumed_rounds == 4 for o in again)


def test_warm_start_resumes_identically(tmp_path):
    cfg = parse_config(tiny_config(model={"params": {"epochs": 5, "hidden": 16}, "warm_start": True}, strategies=["entropy"]))
    run_experiment(cfg, str(tmp_path / "full.db"))
    part = tmp_path / "part.db"
    with Store(part) as store:
        eid = store.experiment(cfg.name, cfg.hash(), cfg.canonical(), environment())
        execute_run(run_specs(cfg)[0], store, eid, stop_after=2)
    run_experiment(cfg, str(part))
    assert _export(part)["runs"] == _export(tmp_path / "full.db")["runs"]


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_loses_at_most_the_round_in_progress(tmp_path, write_config, workers):
    cfg = tiny_config(
        dataset={"name": "synthetic-difficulty", "params": {"n_train": 400, "n_test": 150, "dim": 8}},
        model={"params": {"epochs": 60, "hidden": 32}},
        budget={"initial": 10, "per_round": 10, "rounds": 6},
        strategies=["entropy", "margin"],
    )
    path = write_config(cfg)
    db = tmp_path / "killed.db"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "mmal_core", "run", str(path), "--db", str(db), "--workers", str(workers)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    def stored_rounds() -> int:
        try:
            with sqlite3.connect(db, timeout=1) as conn:
                return conn.execute("SELECT COUNT(*) FROM rounds").fetchone()[0]
        except sqlite3.Error:
            return 0

    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if db.exists() and stored_rounds() >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    kept = stored_rounds()
    assert 2 <= kept < 14
    # nothing outlives the command: no worker goes on writing rounds (and clashes with the resume)
    time.sleep(3.0)
    assert stored_rounds() == kept
    res = subprocess.run(command, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    full = tmp_path / "full.db"
    run_experiment(parse_config(cfg, str(path)), str(full))
    assert _export(db)["runs"] == _export(full)["runs"]


def test_stratified_initial_set_balances_classes():
    labels = np.repeat(np.arange(4), [100, 50, 30, 5])
    picked = initial_set(labels, 20, True, np.random.default_rng(0))
    counts = np.bincount(labels[picked], minlength=4)
    assert counts.sum() == 20 and len(set(picked)) == 20
    assert counts[3] == 5 and counts.min() == 5 and counts.max() <= 5 + 1 + 5  # tiny class taken whole, rest spread
    assert np.array_equal(picked, initial_set(labels, 20, True, np.random.default_rng(0)))
    plain = initial_set(labels, 20, False, np.random.default_rng(0))
    assert len(set(plain)) == 20


def test_round_counts_answer_for_many_runs_in_one_query_per_500(tmp_path):
    from mmal_core.store import RoundRecord, Store

    with Store(str(tmp_path / "counts.db")) as store:
        exp = store.experiment("e", "h" * 16, {}, {})
        fields = {"dataset": "d", "dataset_params": {}, "strategy": "s", "strategy_params": {}, "strategy_label": "s",
                  "model": {}, "budget": {}}
        store.reserve_runs(exp, [(f"run{i}", dict(fields, seed=i)) for i in range(3)])
        for i, n in ((0, 2), (2, 1)):
            run_id = store.find_run(exp, f"run{i}")[0]
            for r in range(n):
                store.add_round(run_id, RoundRecord(r, 10, {"accuracy": 0.5}, [], {}))
        keys = ["run0", "run1", "run2"] + [f"missing{i}" for i in range(1200)]
        assert store.round_counts(exp, keys) == {"run0": 2, "run2": 1}
        assert store.round_counts(exp, ["run2"]) == {"run2": 1}
        assert store.round_counts(exp, []) == {}
