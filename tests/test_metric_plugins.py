"""Metrics as a plugin kind: registration, the loop recording them, ranking by any of them."""

from __future__ import annotations

import numpy as np
import pytest

from _support import cli_in_process, one_line_error, tiny_config
from mmal_core import Metric, MmalError, hookimpl
from mmal_core.config import MetricsSpec
from mmal_core.loop import round_metrics
from mmal_core.metrics import log_likelihood
from mmal_core.plugins import higher_is_better
from mmal_core.plugins import PluginManager, benchmark_availability, reset_plugin_manager
from mmal_core.report.synthetic import add_run
from mmal_core.store import Store
from mmal_core.testing import fitted_tiny_model


class ProbMass(Metric):
    name = "prob_mass"
    summary = "mean probability of the true label"

    def compute(self, ctx):
        return float(np.mean(ctx.probs[np.arange(len(ctx.labels)), ctx.labels]))


class Exploding(Metric):
    name = "exploding"

    def compute(self, ctx):
        raise ZeroDivisionError("boom\nsecond line")


class Wordy(Metric):
    name = "wordy"

    def compute(self, ctx):
        return "high"


class Sneaky(Metric):
    name = "sneaky"
    needs = frozenset({"probs"})

    def compute(self, ctx):
        return float(len(ctx.labeled))


class NeedsMc(Metric):
    name = "needs_unprovided"
    needs = frozenset({"labeled_embeddings"})  # no model provides it

    def compute(self, ctx):
        return 0.0


def _plugin(*classes):
    class Plugin:
        @hookimpl
        def mmal_register_metrics(self):
            return list(classes)

    return Plugin()


@pytest.fixture
def with_metrics():
    """Install in-process plugins registering the given metric classes (plus every entry point)."""
    previous = []

    def install(*classes, name="third-party"):
        pm = PluginManager()
        pm.load()
        pm.register(_plugin(*classes), name=name, dist="dist-metrics")
        previous.append(reset_plugin_manager(pm))
        return pm

    yield install
    if previous:
        reset_plugin_manager(previous[0])


def test_builtins_are_registered_with_direction_and_needs():
    entries = PluginManager().entries("metric")
    assert list(entries)[:4] == ["accuracy", "macro_f1", "log_likelihood", "modality_accuracy"]
    assert {"shapley_accuracy", "shapley_log_likelihood", "contribution", "imbalance", "drop_accuracy",
            "head_accuracy", "probe_accuracy"} <= set(entries)
    assert entries["imbalance"].obj.higher_is_better is False and entries["accuracy"].obj.higher_is_better
    assert entries["probe_accuracy"].obj.needs == {"modality_embeddings", "labeled"}
    assert higher_is_better("modality_accuracy.m0") and not higher_is_better("imbalance")
    assert not higher_is_better("timings.train")


def test_round_metrics_record_a_plugin_metric_and_skip_unmet_needs(with_metrics):
    with_metrics(ProbMass, NeedsMc)
    model, data, labeled = fitted_tiny_model()
    metrics = round_metrics(model, data, labeled)
    probs = model.predict(data.test, want={"probs"})["probs"]
    assert metrics["prob_mass"] == pytest.approx(float(np.mean(probs[np.arange(len(probs)), data.test.labels])))
    assert metrics["log_likelihood"] == log_likelihood(data.test.labels, probs)
    assert "needs_unprovided" not in metrics
    assert {"shapley_accuracy", "imbalance", "probe_accuracy"} <= set(metrics)
    off = round_metrics(model, data, labeled, MetricsSpec(utilization=False))
    assert "shapley_accuracy" not in off and "probe_accuracy" not in off and "prob_mass" in off
    assert {k: off[k] for k in ("accuracy", "macro_f1", "log_likelihood")} == {
        k: metrics[k] for k in ("accuracy", "macro_f1", "log_likelihood")}


def test_context_computes_each_prediction_once():
    model, data, labeled = fitted_tiny_model()
    calls = []

    class Counting:
        def provided(self):
            return model.provided()

        def predict(self, split, index=None, want=frozenset({"probs"}), params=None, keep=None):
            calls.append((tuple(sorted(want)), None if keep is None else tuple(keep)))
            return model.predict(split, index, want=want, params=params, keep=keep)

    round_metrics(Counting(), data, labeled)
    assert len(calls) == len(set(calls))  # nothing predicted twice


@pytest.mark.parametrize("cls, needle", [
    (Exploding, "ZeroDivisionError: boom"),
    (Wordy, "returned str 'high'"),
    (Sneaky, "reads 'labeled' but does not list it in needs"),
])
def test_a_bad_plugin_metric_is_one_line_naming_plugin_and_metric(with_metrics, cls, needle):
    with_metrics(cls)
    model, data, labeled = fitted_tiny_model()
    with pytest.raises(MmalError) as err:
        round_metrics(model, data, labeled)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert f"metric '{cls.name}' of plugin 'third-party' (dist-metrics)" in message and needle in message


def test_a_bad_plugin_metric_stops_the_run_with_one_line(with_metrics, write_config, tmp_path, capsys):
    with_metrics(Exploding)
    cfg = write_config(tiny_config(budget={"initial": 10, "per_round": 10, "rounds": 1}, strategies=["random"]))
    code, out, err = cli_in_process(capsys, "run", str(cfg), "--db", str(tmp_path / "r.db"), raw=True)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    failed = [line for line in out.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "metric 'exploding' of plugin 'third-party' (dist-metrics) failed" in failed[0], out
    assert "ZeroDivisionError: boom second line" in failed[0]


def test_metric_names_and_needs_are_validated_at_registration(with_metrics):
    class Reserved(Metric):
        name = "query"

    class Unknown(Metric):
        name = "unknown_need"
        needs = frozenset({"gradients"})

    for cls, needle in ((Reserved, "reserved"), (Unknown, "unknown ['gradients']")):
        pm = with_metrics(cls, name=f"p-{cls.name}")
        with pytest.raises(MmalError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            pm.entries("metric")


def _store_two_strategies(path, extra_for):
    """Two strategies: 'good' (higher accuracy, lower imbalance) and 'bad'; rounds hold only
    accuracy and ``extra_for(label, round)``, like a database from before log_likelihood."""
    with Store(path) as store:
        eid = store.experiment("old", "h", {}, {})
        for label, accs in (("bad", [0.4, 0.5, 0.6]), ("good", [0.5, 0.7, 0.8])):
            for seed in (0, 1):
                add_run(store, eid, dataset="d", params={}, strategy=label, label=label, seed=seed,
                        n_labeled=[10, 20, 30], accuracy=[a + 0.01 * seed for a in accs],
                        extra=[extra_for(label, r) for r in range(3)])
    return path


def _rows(out: str, names=("good", "bad")) -> list[str]:
    return [n for line in out.splitlines() for n in names if f" {n} " in line]


def test_show_sorts_strategies_by_aubc_in_the_metrics_direction(tmp_path, capsys):
    db = _store_two_strategies(tmp_path / "old.db", lambda label, r: {"imbalance": 0.1 if label == "good" else 0.9})
    code, out, err = cli_in_process(capsys, "show", "--db", str(db), "--metric", "accuracy")
    assert code == 0, err
    assert _rows(out) == ["good", "bad"] and "higher is better" in out
    code, out, err = cli_in_process(capsys, "show", "--db", str(db), "--metric", "imbalance")
    assert code == 0, err
    assert _rows(out) == ["good", "bad"] and "lower is better" in out  # 0.1 < 0.9: good first
    # An old database has no log_likelihood: a clear one-line error, not a crash.
    one_line_error(cli_in_process(capsys, "show", "--db", str(db), "--metric", "log_likelihood", raw=True),
                   "--metric log_likelihood", "no such metric")


def _aubc_column(out: str, names: tuple[str, ...]) -> list[tuple[str, float]]:
    """(strategy, AUBC) of each table row, in printed order (AUBC is the last cell)."""
    rows = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) > 2 and cells[1] in names:
            rows.append((cells[1], float(cells[-1])))
    return rows


@pytest.fixture(scope="module")
def brier_run(example_metric_path, tmp_path_factory):
    """A tiny experiment run with the example metric plugin installed."""
    import yaml

    from _support import run_cli

    tmp = tmp_path_factory.mktemp("brier")
    env = {"PYTHONPATH": str(example_metric_path)}
    cfg = tmp / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(strategies=["random", "margin", "entropy"])))
    run = run_cli("run", str(cfg), "--db", str(tmp / "r.db"), env_extra=env)
    assert run.returncode == 0, run.stderr
    return {"env": env, "db": tmp / "r.db"}


def test_example_metric_is_listed_recorded_every_round_and_ranks_ascending(brier_run, cli):
    import json

    env, db = brier_run["env"], str(brier_run["db"])
    listed = cli("list", "metrics", env_extra=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "example_brier" in line)
    assert "lower is better" in row and "mmal-example-metric" in row and "log_likelihood" in listed.stdout
    doc = json.loads(cli("export", "--db", db, env_extra=env).stdout)
    rounds = [r for run in doc["runs"] for r in run["rounds"]]
    assert len(rounds) == 12 and all(0.0 <= r["metrics"]["example_brier"] <= 2.0 for r in rounds)
    shown = cli("show", "--db", db, "--metric", "example_brier", env_extra=env)
    assert shown.returncode == 0, shown.stderr
    ranked = _aubc_column(shown.stdout, ("random", "margin", "entropy"))
    assert len(ranked) == 3 and [a for _, a in ranked] == sorted(a for _, a in ranked)
    assert "lower is better" in shown.stdout
    rep = cli("report", "--db", db, "--metric", "example_brier", "--format", "json", env_extra=env)
    assert rep.returncode == 0, rep.stderr
    report = json.loads(rep.stdout)
    assert report["metric"] == "example_brier" and report["higher_is_better"] is False
    by_rank = sorted(report["cells"][0]["rows"], key=lambda r: r["mean_rank"])
    assert [r["strategy"] for r in by_rank] == [s for s, _ in ranked]
    # Without the plugin the values are still in the database: shown, higher-is-better by default.
    plain = cli("show", "--db", db, "--metric", "example_brier")
    assert plain.returncode == 0, plain.stderr
    assert [a for _, a in _aubc_column(plain.stdout, ("random", "margin", "entropy"))] == sorted(
        (a for _, a in ranked), reverse=True)


@pytest.fixture(scope="module")
def brier_bench(example_metric_path, tmp_path_factory):
    """The tiny test benchmark run for three strategies with the example metric installed."""
    import os

    from _support import run_cli
    from serverkit import write_benchmark_plugin

    tmp = tmp_path_factory.mktemp("brier-bench")
    site = write_benchmark_plugin(tmp / "site")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(example_metric_path)])}
    for strategy in ("random", "margin", "entropy"):
        res = run_cli("bench", "run", "tiny-missing", "--strategy", strategy, "--db", str(tmp / "b.db"), env_extra=env)
        assert res.returncode == 0, res.stderr
    return {"env": env, "db": str(tmp / "b.db"), "site": str(site)}


def test_leaderboard_ranks_by_a_plugin_metric_in_its_direction(brier_bench, cli):
    import json

    env, db = brier_bench["env"], brier_bench["db"]
    res = cli("leaderboard", "--db", db, "--metric", "example_brier", "--format", "json", env_extra=env)
    assert res.returncode == 0, res.stderr
    lb = json.loads(res.stdout)
    assert lb["metric"] == "example_brier" and lb["higher_is_better"] is False
    rows = lb["benchmarks"][0]["rows"]
    assert len(rows) == 3 and [r["aubc"] for r in rows] == sorted(r["aubc"] for r in rows)  # lowest first
    assert rows[0]["rank"] == 1.0 and all(0.0 <= r["aubc"] <= 2.0 for r in rows)
    by_acc = json.loads(cli("leaderboard", "--db", db, "--format", "json", env_extra=env).stdout)
    accs = [r["aubc"] for r in by_acc["benchmarks"][0]["rows"]]
    assert accs == sorted(accs, reverse=True) and by_acc["metric"] == "accuracy"
    table = cli("leaderboard", "--db", db, "--metric", "example_brier", env_extra=env)
    assert table.returncode == 0 and "lower is better" in table.stdout
    one = cli("leaderboard", "--db", db, "--metric", "example_brierr", env_extra=env)
    assert one.returncode == 2 and len(one.stderr.strip().splitlines()) == 1
    assert "did you mean 'example_brier'" in one.stderr


def test_leaderboard_leaves_out_runs_that_do_not_record_the_metric():
    from mmal_core.leaderboard.ranking import Curve, build_leaderboard

    old = [Curve("b", s, seed, [10, 20], [{"accuracy": a}, {"accuracy": a + 0.1}])
           for s, a in (("x", 0.5), ("y", 0.6)) for seed in (0, 1)]
    new = [Curve("b", "z", seed, [10, 20], [{"accuracy": 0.4, "log_likelihood": -1.0 - seed},
                                             {"accuracy": 0.5, "log_likelihood": -0.5}]) for seed in (0, 1)]
    by_acc = build_leaderboard(old + new)
    assert [r["strategy"] for r in by_acc["benchmarks"][0]["rows"]] == ["y", "x", "z"]
    by_ll = build_leaderboard(old + new, metric="log_likelihood")
    assert [r["strategy"] for r in by_ll["benchmarks"][0]["rows"]] == ["z"]
    lower = build_leaderboard(old, metric="accuracy", higher_is_better=False)
    assert [r["strategy"] for r in lower["benchmarks"][0]["rows"]] == ["x", "y"]


def test_benchmark_naming_an_unregistered_metric_is_unavailable():
    from mmal_core.benchmark import Benchmark
    from mmal_core.builtin.benchmarks import canonical_suite

    bench = canonical_suite()[0]
    odd = Benchmark(name="odd", dataset=bench.dataset, model=bench.model, seeds=(0,), budget=bench.budget,
                    metrics=("accuracy", "log_likelihood", "brierr"))
    ok, why = benchmark_availability(odd)
    assert not ok and "metric 'brierr' is not a registered metric" in why
    fine = Benchmark(name="fine", dataset=bench.dataset, model=bench.model, seeds=(0,), budget=bench.budget,
                     metrics=("accuracy", "log_likelihood", "modality_accuracy.m0"))
    assert benchmark_availability(fine) == (True, "")


def test_report_compares_by_a_metric_in_its_direction(tmp_path, capsys):
    import json

    # 'good' has the lower imbalance; 'bad' the higher accuracy. By imbalance (lower is better)
    # good must rank first and be 'better' than the baseline 'bad'.
    def extra(label, r):
        return {"imbalance": (0.1 if label == "good" else 0.8) + 0.01 * r}

    with Store(tmp_path / "r.db") as store:
        eid = store.experiment("exp", "h", {"seeds": [0, 1, 2]}, {})
        for label, accs in (("bad", [0.6, 0.7, 0.8]), ("good", [0.5, 0.55, 0.6])):
            for seed in (0, 1, 2):
                add_run(store, eid, dataset="d", params={}, strategy=label, label=label, seed=seed,
                        n_labeled=[10, 20, 30], accuracy=[a + 0.01 * seed for a in accs],
                        extra=[{**extra(label, r), "imbalance": extra(label, r)["imbalance"] + 0.003 * seed}
                               for r in range(3)])
    db = str(tmp_path / "r.db")
    code, out, err = cli_in_process(capsys, "report", "--db", db, "--baseline", "bad", "--format", "json",
                                    "--metric", "imbalance")
    assert code == 0, err
    report = json.loads(out)
    assert report["metric"] == "imbalance" and report["higher_is_better"] is False
    rows = {r["strategy"]: r for r in report["cells"][0]["rows"]}
    assert rows["good"]["mean_rank"] == 1.0 and rows["good"]["difference"]["verdict"] == "better"
    assert rows["good"]["aubc"]["mean"] < rows["bad"]["aubc"]["mean"]
    code, out, err = cli_in_process(capsys, "report", "--db", db, "--baseline", "bad", "--format", "json")
    by_acc = {r["strategy"]: r for r in json.loads(out)["cells"][0]["rows"]}
    assert by_acc["bad"]["mean_rank"] == 1.0 and by_acc["good"]["difference"]["verdict"] == "worse"
    code, out, err = cli_in_process(capsys, "report", "--db", db, "--format", "md", "--baseline", "bad",
                                    "--metric", "imbalance")
    assert code == 0 and "AUBC of imbalance, lower is better" in out
    one_line_error(cli_in_process(capsys, "report", "--db", db, "--metric", "imbalanse", raw=True),
                   "--metric", "did you mean 'imbalance'")


def test_server_leaderboard_ranks_by_a_metric_the_server_replayed(tiny, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import copy

    from serverkit import api_client

    def replayed(doc, imbalance):
        return [{"seed": run["seed"], "n_labeled": [r["n_labeled"] for r in run["rounds"]],
                 "metrics": [{"accuracy": r["metrics"]["accuracy"], "imbalance": imbalance} for r in run["rounds"]]}
                for run in doc["runs"]]

    with api_client(f"sqlite:///{tmp_path / 'server.db'}", ("alice",), rate_limit=0) as client:
        token = {t["name"]: t for t in client.store.list_tokens()}["alice"]
        for label, imbalance in (("low", 0.1), ("high", 0.7)):
            doc = copy.deepcopy(tiny["docs"]["margin"])
            doc["strategy"]["label"] = label
            doc["strategy"]["params"] = {"variant": label}
            sid, _ = client.store.add_submission(token, doc, 1)
            client.store.finish(sid, "verified", "", replayed(doc, imbalance), "reproduced: (not replayed in this test)")
        board = client.get("/api/leaderboards/tiny-missing", params={"metric": "imbalance"}).json()
        assert board["metric"] == "imbalance" and board["higher_is_better"] is False
        assert [r["strategy"] for r in board["rows"]] == ["low", "high"]
        bad = client.get("/api/leaderboards/tiny-missing", params={"metric": "imbalanse"})
        assert bad.status_code == 400 and "did you mean 'imbalance'" in bad.json()["error"]
