"""Lockstep execution: a run's stored rounds do not depend on the group it trains in."""

import json
import sqlite3

import pytest
import torch

from _support import tiny_config
from mmal_core import hookimpl, load_dataset, utilization
from mmal_core.config import parse_config
from mmal_core.runtime.executors import LocalExecutor
from mmal_core.loop import execute_group, plan_groups, run_experiment, run_specs
from mmal_core.builtin.fusion import FusionMLP
from mmal_core.plugins import get_plugin_manager, reset_plugin_manager
from mmal_core.store import Store

torch.set_num_threads(1)


def _config(**overrides):
    cfg = tiny_config(
        dataset={"name": "synthetic-missing", "params": {"n_train": 240, "n_test": 90, "dim": 6}},
        model={"name": "fusion-mlp", "params": {"epochs": 2, "hidden": 8, "min_steps": 6, "modality_dropout": 0.2}},
        budget={"initial": 10, "per_round": 8, "rounds": 2},
        strategies=["random", "margin", {"name": "bald", "params": {"mc_samples": 4}}, "coreset",
                    "modality_disagreement", "badge", "entropy"],
        seeds=[0, 1],
    )
    cfg.update(overrides)
    return parse_config(cfg)


def rounds(db) -> dict:
    """Every stored round (but timings), by run key and round number."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT r.run_key, o.round, o.n_labeled, o.metrics, o.queried_ids, r.status FROM rounds o"
            " JOIN runs r ON r.id = o.run_id"
        ).fetchall()
    return {(key, rnd): (n, json.loads(m), json.loads(q), status) for key, rnd, n, m, q, status in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The study one run at a time (the path without lockstep)."""
    db = tmp_path_factory.mktemp("ref") / "alone.db"
    outcomes = run_experiment(_config(), str(db), lockstep=False)
    assert all(o.status == "finished" for o in outcomes) and len(outcomes) == 14
    return rounds(db)


def test_lockstep_study_stores_the_same_rounds(tmp_path, reference):
    db = tmp_path / "lockstep.db"
    assert plan_groups(run_specs(_config())) == [list(range(14))]
    run_experiment(_config(), str(db))
    assert rounds(db) == reference


@pytest.mark.parametrize("order", [[13, 2, 7, 0, 5, 11, 9], [4], [1, 3, 5, 7, 9, 11, 13, 0, 2, 4, 6, 8, 10, 12]])
def test_any_group_size_and_order_gives_the_same_rounds(tmp_path, reference, order):
    cfg = _config()
    specs = run_specs(cfg)
    db = tmp_path / "groups.db"
    with Store(db) as store:
        eid = store.experiment(cfg.name, cfg.hash(), cfg.canonical(), {})
        outcomes = execute_group([specs[i] for i in order], store, eid)
    assert [o.spec for o in outcomes] == [specs[i] for i in order]
    got = rounds(db)
    assert got and all(got[k] == reference[k] for k in got)


def test_group_evaluates_and_builds_views_in_batched_passes(tmp_path, reference, monkeypatch):
    """Test metrics, utilization (coalitions, kept modalities, probes) and every strategy's
    PoolView fields come from the batched passes: no per-run predict, same stored rounds."""
    calls, batched = [], []
    predict, predict_many = FusionMLP.predict, FusionMLP.predict_many.__func__

    def one(self, *args, **kwargs):
        calls.append(kwargs.get("want"))
        return predict(self, *args, **kwargs)

    def many(cls, models, requests):
        batched.append(len(requests))
        return predict_many(cls, models, requests)

    probes = []
    fit_linear_probes = utilization.fit_linear_probes

    def fit_probes(problems, *args, **kwargs):
        probes.append(len(problems))
        return fit_linear_probes(problems, *args, **kwargs)

    monkeypatch.setattr(FusionMLP, "predict", one)
    monkeypatch.setattr(FusionMLP, "predict_many", classmethod(many))
    monkeypatch.setattr(utilization, "fit_linear_probes", fit_probes)
    db = tmp_path / "batched.db"
    run_experiment(_config(), str(db))
    assert calls == [] and len(batched) == 2 * 3  # the test split and the pool, each round
    # the linear probes of every run and modality at once, each round; in round 0 the 7
    # strategies of a seed share one model (same initial set and model seed), so 2 models
    assert probes == [2 * 2, 14 * 2, 14 * 2]
    metrics = next(iter(reference.values()))[1]
    assert {"shapley_accuracy", "modality_accuracy", "probe_accuracy", "head_accuracy"} <= set(metrics)
    assert rounds(db) == reference


def test_twin_runs_train_and_predict_once_with_the_same_rounds(tmp_path, reference, monkeypatch):
    """Round 0 of every strategy of one seed trains the same network (the initial set and the
    model's seed come from the seed alone): a group trains it once per seed and asks it
    once per rows, and every run stores what it stores alone."""
    sizes, requests = [], []
    fit_many, predict_many = FusionMLP.fit_many.__func__, FusionMLP.predict_many.__func__

    def spy_fit(cls, models, jobs):
        sizes.append(len(models))
        return fit_many(cls, models, jobs)

    def spy_predict(cls, models, asked):
        requests.append(len(asked))
        return predict_many(cls, models, asked)

    monkeypatch.setattr(FusionMLP, "fit_many", classmethod(spy_fit))
    monkeypatch.setattr(FusionMLP, "predict_many", classmethod(spy_predict))
    db = tmp_path / "twins.db"
    run_experiment(_config(), str(db))
    assert sizes == [2, 14, 14]  # 2 seeds x 7 strategies: 2 networks in round 0
    # round 0, per seed: 3 calls on the test split (all, each modality kept alone); on the pool
    # one on the labeled rows and one on the unlabeled rows per set of view parameters (bald's
    # mc_samples, the others' none), whatever fields the 7 strategies ask
    assert requests[:2] == [2 * 3, 2 * 3]
    assert rounds(db) == reference


def test_a_tight_memory_budget_splits_the_rounds_into_batches_with_the_same_rounds(tmp_path, reference, monkeypatch):
    cfg = _config()
    specs = run_specs(cfg)
    dataset = load_dataset("synthetic-missing", seed=0, n_train=240, n_test=90, dim=6)
    each = FusionMLP(**cfg.model.params).lockstep_bytes(dataset, 10)
    assert each > 0
    sizes = []
    fit_many = FusionMLP.fit_many.__func__

    def spy(cls, models, jobs):
        sizes.append(len(models))
        return fit_many(cls, models, jobs)

    monkeypatch.setattr(FusionMLP, "fit_many", classmethod(spy))
    db = tmp_path / "tight.db"
    with Store(db) as store:
        eid = store.experiment(cfg.name, cfg.hash(), cfg.canonical(), {})
        outcomes = execute_group(specs, store, eid, max_bytes=4 * each)
    assert all(o.status == "finished" for o in outcomes)
    # round 0: the 7 strategies of a seed are twins (one model for each of the 2 seeds); then
    # 14 runs a round, at most 4 a batch (fewer as the labeled sets grow)
    assert sizes[0] == 2 and sum(sizes) == 2 + 14 + 14 and max(sizes) <= 4 and len(sizes) >= 1 + 2 * 4
    assert rounds(db) == reference


def test_workers_two_split_groups_over_processes(tmp_path, reference):
    db = tmp_path / "workers.db"
    executor = LocalExecutor(workers=2)
    assert len(executor._units(run_specs(_config()), 2)) == 2
    outcomes = run_experiment(_config(), str(db), executor=executor)
    assert all(o.status == "finished" for o in outcomes)
    assert rounds(db) == reference


def test_interrupted_group_resumes_to_the_uninterrupted_result(tmp_path, reference):
    cfg = _config()
    specs = run_specs(cfg)
    db = tmp_path / "resume.db"
    with Store(db) as store:
        eid = store.experiment(cfg.name, cfg.hash(), cfg.canonical(), {})
        execute_group(specs[:5], store, eid, stop_after=1)  # runs killed after one round ...
        execute_group(specs[3:9], store, eid, stop_after=2)  # ... and groups resumed at mixed rounds
    run_experiment(cfg, str(db))
    assert rounds(db) == reference


class Plain(FusionMLP):
    """A model plugin without a batched path."""

    name = "plain-mlp"
    lockstep = False


class Broken(FusionMLP):
    """A model plugin whose batched path raises: the runs fall back to one fit each."""

    name = "broken-lockstep"

    @classmethod
    def fit_many(cls, models, jobs):
        raise ValueError("shapes do not match")


class ShortFit(FusionMLP):
    """A batched fit that hands back one model too few."""

    name = "short-fit"

    @classmethod
    def fit_many(cls, models, jobs):
        super().fit_many(models, jobs)
        return models[:-1]


class ShortAnswers(FusionMLP):
    """A batched predict that leaves out the last request's answer."""

    name = "short-answers"

    @classmethod
    def predict_many(cls, models, requests):
        return super().predict_many(models, requests)[:-1]


class WrongShapes(FusionMLP):
    """A batched predict whose fused probabilities lose a row."""

    name = "wrong-shapes"

    @classmethod
    def predict_many(cls, models, requests):
        answers = super().predict_many(models, requests)
        for answer in answers:
            if "probs" in answer:
                answer["probs"] = answer["probs"][1:]
        return answers


class RaisingPredict(FusionMLP):
    name = "raising-predict"

    @classmethod
    def predict_many(cls, models, requests):
        raise IndexError("stack too small")


@pytest.fixture
def models():
    class Plugin:
        @hookimpl
        def mmal_register_models(self):
            return [Plain, Broken, ShortFit, ShortAnswers, WrongShapes, RaisingPredict]

    previous = reset_plugin_manager(None)
    pm = get_plugin_manager()
    pm.load()
    pm.register(Plugin(), name="test-models", dist="mmal-test-models")
    yield
    reset_plugin_manager(previous)


@pytest.mark.parametrize("name", ["plain-mlp", "broken-lockstep", "short-fit"])
def test_model_without_a_working_batched_path_still_runs(tmp_path, reference, models, name, caplog):
    cfg = _config(model={"name": name, "params": {"epochs": 2, "hidden": 8, "min_steps": 6, "modality_dropout": 0.2}})
    db = tmp_path / "plain.db"
    outcomes = run_experiment(cfg, str(db))
    assert all(o.status == "finished" for o in outcomes)
    if name == "broken-lockstep":
        assert ("model 'broken-lockstep' of plugin 'test-models' (mmal-test-models): fit_many failed "
                "(ValueError: shapes do not match); training these 14 runs one at a time") in caplog.text
    if name == "short-fit":
        assert ("model 'short-fit' of plugin 'test-models' (mmal-test-models): fit_many returned 13 models "
                "for 14 runs; training these 14 runs one at a time") in caplog.text
    # the same networks as fusion-mlp's: only the model's name (and so the run keys) differ
    assert sorted(map(json.dumps, rounds(db).values())) == sorted(map(json.dumps, reference.values()))


@pytest.mark.parametrize("name, problem", [
    ("short-answers", "returned 5 answers for 6 requests"),  # round 0: 2 models (twins), 3 calls each
    ("wrong-shapes", "answer 0: 'probs' has shape (89, 4) for 90 rows"),
    ("raising-predict", "raised IndexError: stack too small"),
])
def test_batched_predict_with_wrong_answers_falls_back_to_one_run_at_a_time(tmp_path, reference, models, name,
                                                                           problem, caplog):
    cfg = _config(model={"name": name, "params": {"epochs": 2, "hidden": 8, "min_steps": 6, "modality_dropout": 0.2}})
    db = tmp_path / "bad.db"
    outcomes = run_experiment(cfg, str(db))
    assert all(o.status == "finished" for o in outcomes)
    lines = [r.getMessage() for r in caplog.records if "predict_many" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]  # once per group, one line
    assert lines[0] == (f"model '{name}' of plugin 'test-models' (mmal-test-models): predict_many {problem}; "
                        "these 14 runs predict one at a time")
    assert sorted(map(json.dumps, rounds(db).values())) == sorted(map(json.dumps, reference.values()))


def test_a_failing_strategy_fails_its_run_alone(tmp_path, monkeypatch):
    from mmal_core import loop

    cfg = _config(strategies=["random", "margin"], seeds=[0])
    real = loop.select_round

    def select(strategy, name, *args, **kwargs):
        if name == "margin":
            raise RuntimeError("injected failure")
        return real(strategy, name, *args, **kwargs)

    monkeypatch.setattr(loop, "select_round", select)
    outcomes = run_experiment(cfg, str(tmp_path / "fail.db"))
    assert [o.status for o in outcomes] == ["finished", "failed"]
    assert "injected failure" in outcomes[1].error


KILLED_GROUP = '''
import os, signal
from mmal_core.runtime.executors import execute_task
from mmal_core.loop import execute_group
from mmal_core.store import Store


def killed_mid_group(task, dataset=None):
    """Attempt 1 of a group commits one round of each run, then its process is SIGKILLed."""
    if task.attempt == 1 and task.group:
        with Store(task.db_path) as store:
            execute_group(list(task.group), store, task.experiment_id, stop_after=1)
        os.kill(os.getpid(), signal.SIGKILL)
    return execute_task(task, dataset)
'''


@pytest.mark.slow
def test_group_worker_killed_is_retried_to_the_same_rounds(tmp_path, monkeypatch, reference):
    import importlib
    import sys

    folder = tmp_path / "killer"
    folder.mkdir()
    (folder / "mmal_killed_group.py").write_text(KILLED_GROUP)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("mmal_killed_group", None)
    worker = importlib.import_module("mmal_killed_group").killed_mid_group
    db = tmp_path / "killed.db"
    outcomes = run_experiment(_config(), str(db), executor=LocalExecutor(workers=2, retries=1, worker=worker))
    assert all(o.status == "finished" for o in outcomes)
    assert rounds(db) == reference


@pytest.mark.slow
def test_cli_no_lockstep_gives_the_rounds_of_the_default(tmp_path, cli, write_config):
    cfg = write_config(tiny_config(model={"name": "fusion-mlp", "params": {"epochs": 2, "hidden": 8, "min_steps": 4}},
                                   budget={"initial": 6, "per_round": 4, "rounds": 1}, seeds=[0, 1]))
    dbs = []
    for flags in ([], ["--no-lockstep"], ["--no-lockstep", "--workers", "2"]):
        dbs.append(tmp_path / f"cli{len(dbs)}.db")
        res = cli("run", str(cfg), "--db", str(dbs[-1]), "--workers", "1", *flags)
        assert res.returncode == 0, res.stderr
    assert rounds(dbs[0]) == rounds(dbs[1]) == rounds(dbs[2])


def test_groups_share_dataset_model_and_budget_and_split_over_workers():
    cfg = _config(dataset=[{"name": "synthetic-missing", "params": {"n_train": 240, "n_test": 90, "dim": 6}},
                           {"name": "synthetic-missing", "params": {"n_train": 200, "n_test": 90, "dim": 6}}],
                  strategies=["random", "margin", "entropy"], seeds=[0, 1])
    specs = run_specs(cfg)
    groups = plan_groups(specs)
    assert sorted(map(sorted, groups)) == [list(range(6)), list(range(6, 12))]
    for group in groups:
        assert len({(specs[i].dataset.params["n_train"]) for i in group}) == 1
    split = plan_groups(specs, parts=4)
    assert len(split) == 4 and sorted(i for g in split for i in g) == list(range(12))
    assert all(len(g) <= 3 for g in plan_groups(specs, max_runs=3))
    assert LocalExecutor(workers=2, lockstep=False)._units(specs, 2) == [[i] for i in range(12)]


def test_groups_are_cut_evenly_so_that_workers_finish_together():
    from mmal_core import loop

    # three settings of 80 runs on 2 workers: 3 groups would leave one worker alone with the
    # last; equal pieces give each worker the same share
    cfg = _config(dataset=[{"name": "synthetic-missing", "params": {"n_train": n, "n_test": 90, "dim": 6}}
                           for n in (200, 220, 240)],
                  strategies=["random", "margin", "entropy", "least_confidence"], seeds=list(range(20)))
    specs = run_specs(cfg)
    assert [len(g) for g in plan_groups(specs)] == [80, 80, 80]
    two = plan_groups(specs, parts=2)
    assert [len(g) for g in two] == [40] * 6
    assert sorted(i for g in two for i in g) == list(range(240))
    for group in two:  # a piece never mixes settings and keeps the runs' order
        assert len({specs[i].dataset.params["n_train"] for i in group}) == 1 and group == sorted(group)
    # fewer pieces per worker rather than pieces below MIN_SPLIT, but always one per worker
    assert [len(g) for g in plan_groups(specs[:80], parts=2)] == [20] * 4
    assert [len(g) for g in plan_groups(specs[:80], parts=8)] == [10] * 8
    assert [len(g) for g in plan_groups(specs[:12], parts=8)] == [2] * 6
    # uneven settings: largest pieces first
    assert [len(g) for g in plan_groups(specs[:80] + specs[80:90], parts=2)] == [20, 20, 20, 20, 10]
    assert loop.MIN_SPLIT == 16
