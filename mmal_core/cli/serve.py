"""``mmal serve`` (the leaderboard server and its tokens) and ``mmal submit``."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

import typer

from ..errors import MmalError
from ..extras import require_extra
from .common import console, default_db, err_console

_DB_HELP = "Server database: a SQLAlchemy URL or an SQLite file path. Default: ./mmal-server.db or $MMAL_SERVER_DB."


def _server_db(db: Optional[str]) -> str:
    import os

    if db is not None and not db.strip():
        raise MmalError("--db: expected a database file path or URL, got an empty string")
    require_extra("server", what="mmal serve", modules=("sqlalchemy",))
    from ..leaderboard.server.storage import database_url

    return database_url(db or os.environ.get("MMAL_SERVER_DB"))


def _limits(time_limit: float, memory_mb: int):
    from ..leaderboard.server.worker import JobLimits

    if not time_limit > 0:
        raise MmalError(f"--job-time-limit {time_limit}: expected a positive number of seconds")
    if memory_mb != 0 and memory_mb < 256:
        raise MmalError(f"--job-memory-mb {memory_mb}: expected 0 (no limit) or at least 256")
    return JobLimits(time_limit=time_limit, memory_mb=memory_mb)


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise MmalError(f"--token-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise MmalError(f"--token-file {path}: cannot read it ({err.__class__.__name__})") from None
    if not token or len(token.split()) != 1:
        raise MmalError(f"--token-file {path}: expected one token on one line")
    return token


def _request(url: str, data: bytes | None = None, token: str | None = None, timeout: float = 60) -> tuple[int, dict]:
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            body = json.loads(err.read() or b"{}")
        except ValueError:
            body = {}
        return err.code, body
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise MmalError(f"--to {url}: cannot reach the server ({reason})") from None



def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: loopback only)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    db: Optional[str] = typer.Option(None, "--db", help=_DB_HELP),
    rate_limit: int = typer.Option(30, "--rate-limit", help="Submissions per token per minute (0: no limit)."),
    max_body: int = typer.Option(2 * 1024 * 1024, "--max-body", help="Largest accepted request body in bytes."),
    workers: int = typer.Option(1, "--workers", help="Verification workers in this process (0: only separate `mmal serve worker` processes verify)."),
    time_limit: float = typer.Option(600.0, "--job-time-limit", help="Seconds one replay may take before it is stopped and rejected."),
    memory_mb: int = typer.Option(4096, "--job-memory-mb", help="Address space of a replay process in MiB (0: no limit)."),
    budget: float = typer.Option(3 * 3600.0, "--token-budget", help="Seconds of verification per token per 24 hours (0: no budget)."),
) -> None:
    """Serve the leaderboard: submissions API, verification workers and HTML pages."""
    if ctx.invoked_subcommand is not None:
        return
    require_extra("server", what="mmal serve")
    if not 0 < port < 65536:
        raise MmalError(f"--port {port}: expected 1..65535")
    if max_body < 1024:
        raise MmalError(f"--max-body {max_body}: expected at least 1024 bytes")
    if workers < 0:
        raise MmalError(f"--workers {workers}: expected 0 or more")
    if budget < 0:
        raise MmalError(f"--token-budget {budget}: expected 0 or more seconds")
    limits = _limits(time_limit, memory_mb)
    import uvicorn

    from ..leaderboard.server import create_app

    url = _server_db(db)
    application = create_app(url, max_body=max_body, rate_limit=rate_limit, workers=workers, limits=limits,
                             verify=workers > 0, token_budget=budget)
    err_console.print(f"mmal leaderboard on http://{host}:{port}/ (database {url})", highlight=False)
    uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)


def worker(
    db: Optional[str] = typer.Option(None, "--db", help=_DB_HELP),
    workers: int = typer.Option(1, "--workers", help="Verification workers in this process."),
    time_limit: float = typer.Option(600.0, "--job-time-limit", help="Seconds one replay may take before it is stopped and rejected."),
    memory_mb: int = typer.Option(4096, "--job-memory-mb", help="Address space of a replay process in MiB (0: no limit)."),
    lease: float = typer.Option(30.0, "--lease", help="Seconds after which another worker takes over the job of a worker that stopped renewing its claim."),
) -> None:
    """Verify submissions from the server database (runs until stopped; on any machine that
    reaches the database and has the same benchmark and strategy plugins installed)."""
    import dataclasses
    import signal
    import threading

    require_extra("server", what="mmal serve worker", modules=("sqlalchemy",))
    from ..leaderboard.server.storage import ServerStore
    from ..leaderboard.server.worker import VerificationWorker

    if workers < 1:
        raise MmalError(f"--workers {workers}: expected 1 or more")
    if not lease >= 1:
        raise MmalError(f"--lease {lease}: expected at least 1 second")
    limits = dataclasses.replace(_limits(time_limit, memory_mb), lease=lease)
    store = ServerStore(_server_db(db))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pool = [VerificationWorker(store, limits=limits) for _ in range(workers)]
    err_console.print(f"mmal verification workers: {workers} on {store.url}", highlight=False)
    for w in pool:
        w.start()
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for w in pool:
            w.stop()
        store.close()


def _server_store(db: Optional[str]):
    """The server's store for one command, closed when the ``with`` block ends."""
    from contextlib import closing

    from ..leaderboard.server.storage import ServerStore

    return closing(ServerStore(_server_db(db)))


def token_create(
    name: str = typer.Argument(..., help="Who the token is for."),
    db: Optional[str] = typer.Option(None, "--db", help=_DB_HELP),
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    with _server_store(db) as store:
        token = store.create_token(name)
    typer.echo(token)


def token_revoke(
    name: str = typer.Argument(..., help="The token's name."),
    db: Optional[str] = typer.Option(None, "--db", help=_DB_HELP),
) -> None:
    """Revoke the active token of NAME; its submissions stay."""
    with _server_store(db) as store:
        store.revoke_token(name)
    console.print(f"revoked token '{name}'")


def token_list(db: Optional[str] = typer.Option(None, "--db", help=_DB_HELP)) -> None:
    """Token names and whether they are active."""
    with _server_store(db) as store:
        for t in store.list_tokens():
            console.print(f"{t['name']}\t{'revoked' if t['revoked_at'] else 'active'}", highlight=False)


def submit(
    selector: str = typer.Argument(..., metavar="RUN_OR_EXPERIMENT",
                                   help="Experiment name or id (printed by `mmal bench run`), or run:ID."),
    to: str = typer.Option(..., "--to", help="Server URL, e.g. http://127.0.0.1:8000"),
    token_file: Path = typer.Option(..., "--token-file", help="File holding the bearer token."),
    db: str = typer.Option(None, "--db", help="Results database. Default: ./mmal-results.db or $MMAL_DB."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Strategy label, when the experiment has several."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the server has verified or rejected it."),
    timeout: float = typer.Option(600, "--timeout", help="Seconds to wait with --wait."),
) -> None:
    """Send a benchmark result to a leaderboard server; it is ranked once the server verified it."""
    from ..store import Store
    from ..leaderboard.submission import build_submission

    try:
        parsed = urllib.parse.urlparse(to)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
    except ValueError as err:
        raise MmalError(f"--to {to}: not a valid URL ({err}); expected e.g. http://127.0.0.1:8000") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise MmalError(f"--to {to}: expected an http(s) URL such as http://127.0.0.1:8000")
    if wait and not timeout > 0:
        raise MmalError(f"--timeout {timeout}: expected a positive number of seconds")
    token = _read_token(token_file)
    with Store(default_db(db), readonly=True) as store:
        doc = build_submission(store, selector, strategy)
    base = to.rstrip("/")
    status, body = _request(f"{base}/api/submissions", json.dumps(doc).encode(), token)
    if status != 202:
        raise MmalError(f"--to {to}: the server refused the submission ({status}: {body.get('error', body)})")
    console.print(f"submitted {doc['benchmark']['name']} / {doc['strategy']['label']}: "
                  f"id {body['id']}, status {body['status']} ({base}{body['status_url']})", highlight=False, soft_wrap=True)
    if not wait:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, state = _request(f"{base}{body['status_url']}", token=token)
        if status == 200 and state.get("status") in ("verified", "rejected"):
            if state["status"] == "rejected":
                raise MmalError(f"submission {body['id']} rejected: {state.get('reason')}")
            console.print(f"submission {body['id']} verified: ranked at {base}/", highlight=False, soft_wrap=True)
            return
        time.sleep(1.0)
    raise MmalError(f"--timeout {timeout}: submission {body['id']} is still being verified; check {base}{body['status_url']}")


def register(app: typer.Typer) -> None:
    serve_app = typer.Typer(help="Run the leaderboard server, or manage its tokens.", invoke_without_command=True)
    token_app = typer.Typer(help="Create, revoke and list submission tokens (stored hashed).", no_args_is_help=True)
    serve_app.add_typer(token_app, name="token")
    app.add_typer(serve_app, name="serve")
    serve_app.callback()(serve)
    serve_app.command("worker")(worker)
    token_app.command("create")(token_create)
    token_app.command("revoke")(token_revoke)
    token_app.command("list")(token_list)
    app.command()(submit)
