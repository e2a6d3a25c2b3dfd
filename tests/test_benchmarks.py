"""Frozen benchmark specs: the canonical suite, hashes, plugin registration, `mmal bench`."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from _support import cli_in_process, run_cli
from mmal_core import MmalError
from mmal_core.benchmark import Benchmark
from mmal_core.leaderboard.benchmarks import all_benchmarks, benchmark_by_hash, get_benchmark
from mmal_core.builtin.benchmarks import canonical_suite
from mmal_core.config import BudgetSpec, PluginSpec
from mmal_core.plugins import PluginManager, benchmark_availability, reset_plugin_manager
from serverkit import TINY_BENCHMARK, write_benchmark_plugin

SYNTHETIC = {"synthetic-missing", "synthetic-difficulty", "synthetic-redundant", "synthetic-unique",
             "synthetic-synergy", "synthetic-mixture"}


def test_canonical_suite_has_one_benchmark_per_pitfall_setting():
    suite = {b.name: b for b in canonical_suite()}
    assert SYNTHETIC <= set(suite)
    for interaction in ("redundant", "unique", "synergy", "mixture"):
        bench = suite[f"synthetic-{interaction}"]
        assert bench.dataset.name == "synthetic-interaction"
        assert bench.dataset.params["interaction"] == interaction
    assert suite["synthetic-missing"].dataset.name == "synthetic-missing"
    assert {"av-digits", "clipart"} <= set(suite)
    # registered through the hook, like any plugin's benchmarks
    assert SYNTHETIC <= set(all_benchmarks())


def test_hash_is_stable_and_changes_with_any_part_of_the_spec():
    bench = get_benchmark("synthetic-redundant")
    assert len(bench.hash) == 16 and int(bench.hash, 16) >= 0
    again = Benchmark(**{f.name: getattr(bench, f.name) for f in dataclasses.fields(bench)})
    assert again.hash == bench.hash
    assert benchmark_by_hash(bench.hash) is bench
    changed = [
        dataclasses.replace(bench, seeds=(0, 1)),
        dataclasses.replace(bench, budget=BudgetSpec(initial=20, per_round=10, rounds=4)),
        dataclasses.replace(bench, dataset=PluginSpec(name="synthetic-interaction",
                                                      params={**bench.dataset.params, "n_train": 999})),
        dataclasses.replace(bench, version="2"),
    ]
    hashes = {b.hash for b in changed} | {bench.hash}
    assert len(hashes) == len(changed) + 1
    assert len({b.hash for b in canonical_suite()}) == len(canonical_suite())


def test_a_run_belongs_to_a_benchmark_only_with_the_same_setting_and_a_listed_seed():
    bench = get_benchmark("synthetic-missing")
    run = {"dataset": "synthetic-missing", "dataset_params": dict(bench.dataset.params),
           "model": bench.model.canonical(), "budget": bench.budget.model_dump(), "seed": 1}
    assert bench.matches_run(run)
    assert not bench.matches_run({**run, "seed": 7})
    assert not bench.matches_run({**run, "dataset_params": {**run["dataset_params"], "n_test": 10}})
    assert not bench.matches_run({**run, "budget": {**run["budget"], "rounds": 3}})
    assert not get_benchmark("synthetic-difficulty").matches_run(run)


def test_bad_specs_are_refused_with_the_benchmark_name():
    with pytest.raises(MmalError, match="benchmark 'b': seeds"):
        Benchmark(name="b", dataset={"name": "synthetic-missing"}, budget={"initial": 2, "per_round": 2, "rounds": 1},
                  seeds=())
    with pytest.raises(MmalError, match="benchmark 'b': budget"):
        Benchmark(name="b", dataset={"name": "synthetic-missing"}, budget={"initial": 2}, seeds=(0,))
    with pytest.raises(MmalError, match="unknown benchmark 'synthetic-redundnat'.*did you mean 'synthetic-redundant'"):
        get_benchmark("synthetic-redundnat")


def test_a_plugin_registers_more_benchmarks(tmp_path, monkeypatch):
    site = write_benchmark_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    previous = reset_plugin_manager(PluginManager())
    try:
        benches = all_benchmarks()
        assert "tiny-missing" in benches and SYNTHETIC <= set(benches)
        from mmal_core.plugins import get_plugin_manager

        assert get_plugin_manager().entry("benchmark", "tiny-missing").dist == "mmal-test-benchmarks"
        assert benches["tiny-missing"].seeds == tuple(TINY_BENCHMARK["seeds"])
    finally:
        reset_plugin_manager(previous)
        sys.modules.pop("mmal_test_benchmarks", None)


def test_bench_list_marks_benchmarks_whose_dataset_is_missing():
    result = run_cli("bench", "list")
    assert result.returncode == 0, result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert SYNTHETIC <= set(lines)
    for name in SYNTHETIC:
        assert "yes" in lines[name]
    available = {n for n, b in all_benchmarks().items() if benchmark_availability(b)[0]}
    for name in ("av-digits", "clipart"):
        assert ("yes" in lines[name]) == (name in available)
        if name not in available:
            assert "no: dataset" in lines[name]


def test_bench_run_refuses_bad_input_without_writing(tmp_path, capsys):
    db = tmp_path / "r.db"
    code, _, err = cli_in_process(capsys, "bench", "run", "synthetic-mising", "--strategy", "margin", "--db", str(db))
    assert code == 2 and "did you mean 'synthetic-missing'" in err
    code, _, err = cli_in_process(capsys, "bench", "run", "synthetic-missing", "--strategy", "margin",
                                  "--strategy-plugin-version", "99.0", "--db", str(db))
    assert code == 2
    assert "--strategy-plugin-version 99.0" in err and "mmal-strategies" in err
    code, _, err = cli_in_process(capsys, "bench", "run", "synthetic-missing", "--strategy", "nosuch", "--db", str(db))
    assert code == 2 and "unknown strategy 'nosuch'" in err
    code, _, err = cli_in_process(capsys, "bench", "run", "synthetic-missing", "--strategy", "margin",
                                  "--strategy-params", "[1]", "--db", str(db))
    assert code == 2 and "--strategy-params" in err
    assert not db.exists()
    if not benchmark_availability(get_benchmark("clipart"))[0]:
        code, _, err = cli_in_process(capsys, "bench", "run", "clipart", "--strategy", "margin", "--db", str(db))
        assert code == 2 and "unavailable" in err
        assert not db.exists()


def test_the_model_version_is_part_of_every_hash_so_versions_never_mix(tmp_path, monkeypatch):
    """A model's ``version`` (of its numbers) goes into the model's canonical form: a new
    version gives new benchmark, config and run hashes, a database run of the old version
    is not resumed as the new one nor counted for the new benchmark."""
    from _support import tiny_config
    from mmal_core.builtin.benchmarks import canonical_suite
    from mmal_core.builtin.fusion import FusionMLP
    from mmal_core.config import ModelSpec, parse_config
    from mmal_core.loop import run_experiment, run_specs
    from mmal_core.store import Store

    assert ModelSpec().canonical()["version"] == FusionMLP.version == "2"
    assert "version" not in ModelSpec(name="no-such-model").canonical()
    bench = canonical_suite()[0]
    cfg = parse_config(tiny_config(strategies=["random"]))
    db = tmp_path / "old.db"
    run_experiment(cfg, str(db))
    with Store(db) as store:
        stored = store.runs()
    before = (bench.hash, cfg.hash(), [s.key for s in run_specs(cfg)], stored[0]["model"])
    assert before[3]["version"] == "2"
    monkeypatch.setattr(FusionMLP, "version", "3")
    after = (bench.hash, cfg.hash(), [s.key for s in run_specs(cfg)])
    assert all(a != b for a, b in zip(after, before[:3]))
    run = {**stored[0], "dataset": bench.dataset.name, "dataset_params": bench.dataset.params,
           "budget": bench.budget.model_dump(), "seed": bench.seeds[0]}
    assert not bench.matches_run(run)  # stored under version 2
    assert bench.matches_run({**run, "model": bench.model.canonical()})
    outcomes = run_experiment(cfg, str(db))  # a new experiment: nothing resumed from version 2
    assert outcomes[0].resumed_rounds == 0
    with Store(db) as store:
        assert len(store.experiments()) == 2
