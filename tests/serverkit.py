"""Helpers for testing a leaderboard deployment (used by mmal's own tests).

* :func:`write_benchmark_plugin`: a benchmark plugin installed into a folder (put it on
  ``PYTHONPATH``), found through the ``mmal`` entry-point group like any third-party plugin.
* :class:`ServerProcess`: ``mmal serve`` in a subprocess on a free 127.0.0.1 port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mmal_core.leaderboard.submission import ReplayCache

#: One replay cache for every in-process test of a session (replays of the same rounds are
#: computed once).
SHARED_REPLAY_CACHE = ReplayCache()

#: A benchmark small enough for tests: 2 seeds x 3 rounds of a tiny model.
TINY_BENCHMARK = {
    "name": "tiny-missing",
    "dataset": {"name": "synthetic-missing", "params": {"n_train": 240, "n_test": 120, "dim": 8}},
    "model": {"name": "fusion-mlp", "params": {"epochs": 6, "hidden": 16, "min_steps": 10, "device": "cpu"}},
    "budget": {"initial": 8, "per_round": 8, "rounds": 2},
    "seeds": [0, 1],
    "summary": "a tiny benchmark for tests",
}

_PLUGIN_SOURCE = '''"""Benchmarks registered by a test plugin."""
import json
from mmal_core import hookimpl
from mmal_core.benchmark import Benchmark

SPECS = json.loads({specs!r})


@hookimpl
def mmal_register_benchmarks():
    return [Benchmark(**spec) for spec in SPECS]
'''


def write_plugin(folder: Path, source: str, dist: str, version: str = "0.1") -> Path:
    """Install a one-module plugin distribution ``dist`` with the code ``source`` into
    ``folder`` (an ``mmal`` entry point, as a third-party plugin has)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    module = dist.replace("-", "_")
    (folder / f"{module}.py").write_text(source)
    info = folder / f"{module}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[mmal]\n{dist} = {module}\n")
    return folder


def write_benchmark_plugin(folder: Path, specs: list[dict[str, Any]] | None = None,
                           dist: str = "mmal-test-benchmarks", version: str = "0.1") -> Path:
    """Install a plugin registering ``specs`` (Benchmark keyword arguments) into ``folder``."""
    return write_plugin(folder, _PLUGIN_SOURCE.format(specs=json.dumps(specs or [TINY_BENCHMARK])), dist, version)


#: Strategies that misbehave on a verification worker: ``hang`` never returns from select,
#: ``crash`` kills its own process.
BAD_STRATEGIES_SOURCE = '''"""Strategies that misbehave (a test plugin)."""
import os
import signal
import time

from mmal_core import Strategy, hookimpl


class Hang(Strategy):
    name = "hang"
    summary = "never returns from select"

    def select(self, view, budget, rng):
        while True:
            time.sleep(1)


class Crash(Strategy):
    name = "crash"
    summary = "kills its own process in select"

    def select(self, view, budget, rng):
        os.kill(os.getpid(), signal.SIGKILL)


@hookimpl
def mmal_register_strategies():
    return [Hang, Crash]
'''


@contextmanager
def api_client(db_path: Path | str, token_names: tuple[str, ...], *, rate_limit: int, max_body: int = 64 * 1024,
               raise_server_exceptions: bool = True, **app_options: Any) -> Iterator[Any]:
    """An in-process client of a fresh server (no verification worker unless ``verify=True``
    is among ``app_options``) on ``db_path`` (an SQLite file or a database URL).

    The client carries ``tokens`` (name -> token, one per name) and ``store`` (the app's
    ServerStore). Needs the test extra (fastapi, httpx).
    """
    from fastapi.testclient import TestClient

    from mmal_core.leaderboard.server.app import create_app
    from mmal_core.leaderboard.server.storage import ServerStore

    url = str(db_path) if "://" in str(db_path) else f"sqlite:///{db_path}"
    store = ServerStore(url)
    tokens = {name: store.create_token(name) for name in token_names}
    store.close()
    app = create_app(url, max_body=max_body, rate_limit=rate_limit, **{"verify": False, **app_options})
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        client.tokens = tokens
        client.store = app.state.store
        yield client


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``mmal serve`` on 127.0.0.1 in a subprocess; :meth:`kill` sends SIGKILL."""

    def __init__(self, db_url: str, env: dict[str, str] | None = None, port: int | None = None,
                 extra_args: list[str] | None = None, log_path: Path | None = None):
        self.db_url, self.port = db_url, port or free_port()
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.extra_args = extra_args or []
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        cmd = [sys.executable, "-m", "mmal_core", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--db", self.db_url, *self.extra_args]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mmal serve exited with status {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/benchmarks", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"mmal serve did not answer within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run (the fault tests rely on that)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_RUN_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from mmal_core.leaderboard.benchmarks import get_benchmark, run_benchmark
from mmal_core.config import PluginSpec
from mmal_core.store import Store
from mmal_core.leaderboard.submission import build_submission
db, out = sys.argv[1], sys.argv[2]
bench = get_benchmark(sys.argv[3])
for name in sys.argv[4:]:
    spec = PluginSpec(name=name)
    run_benchmark(bench, spec, db)
    with Store(db, readonly=True) as store:
        doc = build_submission(store, bench.experiment_name(spec))
    with open(f"{out}/doc-{name}.json", "w") as fh:
        json.dump(doc, fh)
"""


def plugin_env(site: Path) -> dict[str, str]:
    """Environment variables that put the plugin folder ``site`` on a subprocess's path."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(site) + (os.pathsep + path if path else ""), "OMP_NUM_THREADS": "1"}


def build_submission_docs(db: Path, out: Path, benchmark: str, strategies, env: dict[str, str] | None = None,
                          capture: bool = True) -> dict[str, Any]:
    """Run ``benchmark`` for each strategy into ``db`` (a fresh process, one thread) and write
    the submission document of each to ``out/doc-<strategy>.json``; returns them by strategy."""
    out = Path(out)
    subprocess.run([sys.executable, "-c", _RUN_SCRIPT, str(db), str(out), benchmark, *strategies],
                   env={**os.environ, **(env or {})}, check=True, capture_output=capture, timeout=600)
    return {name: json.loads((out / f"doc-{name}.json").read_text()) for name in strategies}


def tiny_results(folder: Path, strategies: tuple[str, ...] = ("margin", "random")) -> dict[str, Any]:
    """Run the tiny benchmark for ``strategies`` into ``folder`` (once; later calls reuse it).

    Returns ``{"site": plugin folder, "db": results database, "docs": {strategy: document}}``.
    """
    folder = Path(folder)
    site, db, done = folder / "site", folder / "results.db", folder / "done"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_benchmark_plugin(site)
        build_submission_docs(db, folder, TINY_BENCHMARK["name"], strategies, env=plugin_env(site))
        done.touch()
    docs = {name: json.loads((folder / f"doc-{name}.json").read_text()) for name in strategies}
    return {"site": site, "db": db, "docs": docs}


def postgres_bindir() -> Path | None:
    """The folder of Debian's PostgreSQL server programs (initdb, pg_ctl), newest first; None
    when PostgreSQL is not installed."""
    import shutil

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresCluster:
    """A throwaway PostgreSQL cluster listening only on a Unix socket in its own temporary
    folder. As root, the server runs as the ``postgres`` user (or ``nobody``): PostgreSQL
    refuses to run as root. :meth:`create_database` gives each test its own database."""

    def __init__(self, bindir: Path):
        import pwd
        import tempfile

        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="mmal-pg-"))
        self.runas: list[str] = []
        if os.geteuid() == 0:
            user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
            if user is None:
                raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")
            entry = pwd.getpwnam(user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
            self.runas = ["runuser", "-u", user, "--"]
        self.data = self.base / "data"
        self.user = "mmal"
        self._count = 0

    def _run(self, *cmd: str) -> None:
        result = subprocess.run([*self.runas, *cmd], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {(result.stderr or result.stdout)[-1000:]}")

    def start(self) -> "PostgresCluster":
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user,
                  "-E", "UTF8", "--no-sync", "--locale=C")
        # no TCP at all (listen_addresses empty): the socket in our folder is the only way in
        options = f"-k {self.base} -c listen_addresses='' -F -c max_connections=300"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                  str(self.base / "server.log"), "-w", "-t", "60", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@/{database}?host={self.base}"

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        self._count += 1
        name = f"t{os.getpid()}_{self._count}"
        with psycopg.connect(host=str(self.base), user=self.user, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        import shutil

        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.runas, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
