"""The plugin contract: entry points, registries, clashes, broken plugins, did-you-mean."""

import numpy as np
import pytest

from mmal_core import MmalError, Strategy, hookimpl
from mmal_core.plugins import PluginManager


class _One(Strategy):
    """test strategy"""

    name = "one"

    def select(self, view, budget, rng):
        return np.arange(budget)


class _PluginA:
    @hookimpl
    def mmal_register_strategies(self):
        return [_One]


class _PluginB:
    @hookimpl
    def mmal_register_strategies(self):
        return [_One]


def test_installed_builtins_are_registered():
    pm = PluginManager()
    assert {"random", "least_confidence", "margin", "entropy"} <= set(pm.entries("strategy"))
    assert {"synthetic-missing", "synthetic-difficulty", "synthetic-interaction"} <= set(pm.entries("dataset"))
    assert "fusion-mlp" in pm.entries("model")
    entry = pm.entry("strategy", "margin")
    assert entry.dist == "mmal-strategies"


def test_duplicate_names_name_both_distributions():
    pm = PluginManager(load_entry_points=False)
    pm.register(_PluginA(), name="a", dist="dist-alpha")
    pm.register(_PluginB(), name="b", dist="dist-beta")
    with pytest.raises(MmalError) as err:
        pm.entries("strategy")
    assert "dist-alpha" in str(err.value) and "dist-beta" in str(err.value) and "'one'" in str(err.value)


def test_unknown_name_suggests_closest():
    pm = PluginManager()
    with pytest.raises(MmalError, match=r"unknown strategy 'margn' \(did you mean 'margin'\?\)"):
        pm.get("strategy", "margn")


def test_registered_object_without_name_is_reported():
    class NoName:
        pass

    class Plugin:
        @hookimpl
        def mmal_register_strategies(self):
            return [NoName]

    pm = PluginManager(load_entry_points=False)
    pm.register(Plugin(), name="p", dist="dist-x")
    with pytest.raises(MmalError, match="without a 'name' attribute"):
        pm.entries("strategy")


def test_third_party_plugin_is_listed_and_runs(cli, example_plugin_path, write_config, tmp_path):
    env = {"PYTHONPATH": str(example_plugin_path)}
    listed = cli("list", "strategies", env_extra=env)
    assert listed.returncode == 0, listed.stderr
    assert "example_modality_gap" in listed.stdout and "mmal-example-strategy" in listed.stdout
    from _support import tiny_config

    cfg = write_config(tiny_config(strategies=["example_modality_gap"], budget={"initial": 10, "per_round": 10, "rounds": 1}))
    db = tmp_path / "r.db"
    run = cli("run", str(cfg), "--db", str(db), env_extra=env)
    assert run.returncode == 0, run.stderr
    shown = cli("show", "--db", str(db), env_extra=env)
    assert "example_modality_gap" in shown.stdout


def test_broken_plugin_is_reported_and_does_not_break_commands(cli, fixture_plugins_path):
    env = {"PYTHONPATH": str(fixture_plugins_path), "MMAL_DISABLE_PLUGINS": "fixture-clash"}
    plugins = cli("list", "plugins", env_extra=env)
    assert plugins.returncode == 0, plugins.stderr
    assert "fixture-broken" in plugins.stdout and "broken on purpose" in plugins.stdout
    datasets = cli("list", "datasets", env_extra=env)
    assert datasets.returncode == 0 and "fixture-defective" in datasets.stdout


def test_clash_between_installed_distributions_is_one_line_error(cli, fixture_plugins_path, write_config, tmp_path):
    env = {"PYTHONPATH": str(fixture_plugins_path)}
    from _support import tiny_config

    res = cli("run", str(write_config(tiny_config())), "--db", str(tmp_path / "x.db"), env_extra=env)
    assert res.returncode == 2
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "mmal-strategies" in line and "mmal-test-fixtures" in line and "'margin'" in line
    assert not (tmp_path / "x.db").exists()


def test_entry_point_name_taken_by_two_distributions_only_skips_the_second(cli, tmp_path, monkeypatch):
    # A second distribution declaring the entry point 'mmal-strategies' (already taken by
    # the shipped plugin, which sorts first): it is listed with its error, never imported,
    # and every command still works.
    info = tmp_path / "mmal_clashing_dist-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmal-clashing-dist\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mmal]\nmmal-strategies = mmal_strategies.zz_never_imported\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = PluginManager()
    pm.load()
    clash = pm.plugins["mmal-strategies (mmal-clashing-dist)"]
    assert clash.error == "entry point 'mmal-strategies' is already taken by distribution mmal-strategies; not loaded"
    assert pm.plugins["mmal-strategies"].ok and "margin" in pm.entries("strategy")
    env = {"PYTHONPATH": str(tmp_path)}
    for args in (("list", "plugins"), ("list", "strategies")):
        res = cli(*args, env_extra=env)
        assert res.returncode == 0, res.stderr
    assert "mmal-clashing-dist" in cli("list", "plugins", env_extra={**env, "COLUMNS": "300"}).stdout
