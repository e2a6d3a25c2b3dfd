"""What a new user meets first: piped output, typos of commands, plugin bugs, file modes.

Issue 12's defects 4, 6, 7 and 8: output that is not a terminal is complete; an unknown
command suggests once; a plugin's own bug in ``__init__`` is reported as a plugin error, not
as a bad parameter; files written for people honour the umask.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _support import ROOT, cli_in_process, one_line_error, tiny_config

LONG_DIST = "mmal-strategies-from-a-distribution-with-a-rather-long-name"
LONG_STRATEGY = "least_confidence_under_a_rather_long_strategy_name"

_PLUGIN = '''
from mmal_core import ScoreStrategy, hookimpl


class LongName(ScoreStrategy):
    name = "{long}"
    summary = "least confidence, under a name longer than a terminal's share of a table"
    requires = frozenset({{"probs"}})

    def score(self, view):
        return 1.0 - view.probs.max(axis=1)


class BrokenInit(ScoreStrategy):
    name = "broken_init"
    summary = "a plugin whose __init__ has a bug"
    requires = frozenset({{"probs"}})

    def __init__(self, depth: int = 2):
        self.depth = depth
        len(depth)  # the plugin's own TypeError

    def score(self, view):
        return view.probs[:, 0]


class NeedsDepth(BrokenInit):
    name = "needs_depth"

    def __init__(self, depth: int):
        self.depth = depth


@hookimpl
def mmal_register_strategies():
    return [LongName, BrokenInit, NeedsDepth]
'''


@pytest.fixture(scope="module")
def long_named_plugin(tmp_path_factory) -> Path:
    """A folder for PYTHONPATH holding an installed-looking plugin distribution with a long name."""
    site = tmp_path_factory.mktemp("long-plugin")
    module = "mmal_long_named_plugin"
    (site / f"{module}.py").write_text(_PLUGIN.format(long=LONG_STRATEGY))
    info = site / f"{LONG_DIST.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {LONG_DIST}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[mmal]\n{LONG_DIST} = {module}\n")
    (info / "top_level.txt").write_text(module + "\n")
    return site


def _piped(*args: str, plugin: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``mmal ARGS`` with stdout and stderr pipes and no COLUMNS: as in `mmal ... | cat` or a log."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = os.pathsep.join([str(plugin), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "mmal_core", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=300)


def test_piped_output_keeps_long_names_and_every_column(long_named_plugin, tmp_path):
    listed = _piped("list", "plugins", plugin=long_named_plugin, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if f"│ {LONG_DIST} " in line)
    assert "mmal_long_named_plugin" in row and "mmal_register_strategies" in row and "ok" in row
    assert "…" not in listed.stdout

    strategies = _piped("list", "strategies", plugin=long_named_plugin, cwd=tmp_path)
    assert f"{LONG_STRATEGY} " in strategies.stdout and "…" not in strategies.stdout

    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(tiny_config(strategies=[LONG_STRATEGY])))
    run = _piped("run", str(config), "--db", str(tmp_path / "r.db"), "--workers", "1", plugin=long_named_plugin, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    header = next(line for line in run.stdout.splitlines() if "dataset" in line and "strategy" in line)
    assert [cell.strip() for cell in header.strip("┃ ").split("┃")] == ["dataset", "strategy", "seeds", "final acc", "AUBC", "s"]
    row = next(line for line in run.stdout.splitlines() if LONG_STRATEGY in line)
    assert len(row.split("│")) == 8 and row.count("±") == 2  # all six cells, one line
    assert "…" not in run.stdout


def test_a_terminal_width_given_in_columns_still_applies(long_named_plugin, tmp_path):
    env_columns = {"COLUMNS": "60"}
    res = subprocess.run([sys.executable, "-m", "mmal_core", "list", "plugins"], capture_output=True, text=True,
                         env={**os.environ, **env_columns, "PYTHONPATH": str(long_named_plugin)}, cwd=tmp_path)
    assert res.returncode == 0 and max(len(line) for line in res.stdout.splitlines()) <= 60


def test_an_unknown_command_suggests_the_close_one_once(capsys):
    line = one_line_error(cli_in_process(capsys, "exprot", raw=True), "No such command 'exprot'")
    assert line.count("Did you mean") == 1 and "'export'" in line


def test_a_bug_inside_a_plugins_init_is_a_plugin_error_naming_the_plugin(long_named_plugin, tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump(tiny_config(strategies=["broken_init"])))
    res = _piped("run", str(config), "--db", str(tmp_path / "r.db"), plugin=long_named_plugin, cwd=tmp_path)
    assert res.returncode == 3, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("error: ") and lines[0].endswith(" object of type 'int' has no len()")
    assert f"strategies[0]: plugin error in strategy 'broken_init' (package {LONG_DIST}): TypeError: " in lines[0]

    # parameters that do not fit the signature are still the user's: exit 2, no "plugin error"
    config.write_text(yaml.safe_dump(tiny_config(strategies=["needs_depth"])))
    res = _piped("run", str(config), "--db", str(tmp_path / "r.db"), plugin=long_named_plugin, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().endswith("strategies[0]: strategy 'needs_depth': missing a required argument: 'depth'")


def test_construct_keeps_the_plugins_exception_as_the_cause():
    from mmal_core.errors import PluginError
    from mmal_core.params import construct

    class Faulty:
        def __init__(self, size: int = 1):
            self.size = size
            raise ValueError("size table not loaded")

    with pytest.raises(PluginError, match=r"^plugin error in model 'faulty' \(module [\w.]+\): ValueError: size table") as info:
        construct(Faulty, {"size": 3}, "model 'faulty'")
    assert isinstance(info.value.__cause__, ValueError) and info.value.exit_code == 3


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda value: os.umask(value)
    os.umask(saved)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_written_for_people_honour_the_umask(umask, tmp_path, mask, mode):
    from mmal_core.cli.results import write_atomically

    umask(mask)
    write_atomically(tmp_path / "out.csv", "a,b\n")
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == mode
    write_atomically(tmp_path / "out.csv", "a,b\n1,2\n")  # replacing a file: the same
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == mode


def test_export_and_the_html_leaderboard_are_readable_by_others(umask, tiny, tmp_path, capsys):
    umask(0o022)
    export = tmp_path / "e.csv"
    code, _, err = cli_in_process(capsys, "export", "--db", str(tiny["db"]), "--format", "csv", "-o", str(export))
    assert code == 0, err
    page = tmp_path / "lb.html"
    code, _, err = cli_in_process(capsys, "leaderboard", "--db", str(tiny["db"]), "--format", "html", "-o", str(page))
    assert code == 0, err
    assert stat.S_IMODE(export.stat().st_mode) == stat.S_IMODE(page.stat().st_mode) == 0o644
    assert not ROOT.joinpath("e.csv").exists()
