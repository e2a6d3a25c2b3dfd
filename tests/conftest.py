"""Shared fixtures: temporary configs, CLI runs in a subprocess, plugins installed aside."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from _support import ROOT, run_cli

torch.set_num_threads(1)


@pytest.fixture
def write_config(tmp_path):
    def _write(cfg: dict | str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
        return path

    return _write


@pytest.fixture
def cli():
    return run_cli


def _pip_target(src: Path, target: Path) -> Path:
    # Built from a copy: an in-place build leaves NAME.egg-info in the source folder, and that
    # folder is on pytest's pythonpath, so its entry points (a metric plugin!) would load in
    # every in-process run of the session while subprocesses do not see them.
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / src.name
        shutil.copytree(src, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
             str(copy)],
            check=True, capture_output=True,
        )
    return target


@pytest.fixture(scope="session")
def example_plugin_path(tmp_path_factory) -> Path:
    """The example third-party plugin installed into its own folder (put it on PYTHONPATH)."""
    return _pip_target(ROOT / "examples" / "mmal-example-strategy", tmp_path_factory.mktemp("example-plugin"))


@pytest.fixture(scope="session")
def example_metric_path(tmp_path_factory) -> Path:
    """The example metric plugin installed into its own folder (put it on PYTHONPATH)."""
    return _pip_target(ROOT / "examples" / "mmal-example-metric", tmp_path_factory.mktemp("example-metric"))


@pytest.fixture(scope="session")
def fixture_plugins_path(tmp_path_factory) -> Path:
    """Broken, clashing and defective-dataset plugins installed into their own folder."""
    return _pip_target(ROOT / "tests" / "fixtures" / "mmal-test-fixtures", tmp_path_factory.mktemp("fixture-plugins"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny leaderboard benchmark run for margin and random (built once per session,
    cached on disk), its plugin registered in this process for the module's tests."""
    from mmal_core.plugins import PluginManager, reset_plugin_manager
    from serverkit import tiny_results

    results = tiny_results(tmp_path_factory.getbasetemp() / "mmal-tiny-results")
    sys.path.insert(0, str(results["site"]))
    previous = reset_plugin_manager(PluginManager())
    yield results
    reset_plugin_manager(previous)
    sys.path.remove(str(results["site"]))
    sys.modules.pop("mmal_test_benchmarks", None)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster for the session (Unix socket only; skipped, saying why,
    where PostgreSQL or its driver is not installed)."""
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed (pip install -e '.[test]')")
    from serverkit import PostgresCluster, postgres_bindir

    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (Debian package 'postgresql'; .ci/system-deps.sh installs it)")
    cluster = PostgresCluster(bindir).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def server_db(request, tmp_path) -> str:
    """The URL of an empty leaderboard server database, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'server.db'}"
    return request.getfixturevalue("postgres").create_database()
