"""HTTP API and pages of the leaderboard server.

API (JSON):
    POST /api/submissions            bearer token; body: a submission document (schema v1).
                                     202 {"id", "status": "pending", "status_url"}; the same
                                     document sent again by the same token gets the id it
                                     already has ("duplicate": true), so retrying is safe.
    GET  /api/submissions/{id}       status (pending | verifying | verified | rejected) and reason;
                                     a submission not verified is shown only to the bearer
                                     token that sent it (404 to anyone else).
    GET  /api/leaderboards/{name}    the ranked leaderboard of one benchmark (verified only).
    GET  /api/benchmarks             the benchmarks this server verifies, with their hashes.
    GET  /api/schema                 the JSON schema of a submission document.
Pages (HTML): ``/`` (every benchmark's ranked table and learning-curve plot) and
``/submissions/{id}``.

Checks on a submission, in this order: bearer token (401), per-token rate limit (429), a
Content-Type that is not JSON (415), body size (413), JSON syntax, including NaN/Infinity,
numbers that overflow to infinity and nesting deeper than :data:`MAX_JSON_DEPTH` (400),
schema and version (422). A refused request changes nothing. Every error, unknown routes
and methods included, is a JSON object ``{"error": ...}``; a database that stays locked
answers 503 with Retry-After instead of hanging or failing with a bare 500.
Every string that came from a request is escaped when it is put into HTML, and the pages
are served with a Content-Security-Policy that allows no scripts at all.
"""

from __future__ import annotations

import html
import json
import logging
import math
import threading
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...plugins import benchmark_availability
from ..benchmarks import all_benchmarks
from ...errors import MmalError
from ...pages import html_page
from ..ranking import Curve, build_leaderboard
from ..render import html_sections
from ..submission import SCHEMA_VERSION, metric_tolerance, parse_submission
from .trust import label_key
from .storage import ConfusableLabel, DuplicateResult, ServerStore
from .worker import JobLimits, VerificationWorker

#: Largest accepted request body (bytes).
DEFAULT_MAX_BODY = 2 * 1024 * 1024
#: Submissions per token per minute.
DEFAULT_RATE_LIMIT = 30
#: Seconds of verification per token per 24 hours (finished replays, plus the time limit of
#: each job still waiting or running).
DEFAULT_TOKEN_BUDGET = 3 * 3600.0
#: Deepest accepted nesting of arrays and objects in a submission (a real one needs < 10).
MAX_JSON_DEPTH = 64
#: Largest id a path may name (SQLite's INTEGER range); larger ones are simply not found.
_MAX_ID = 2**63 - 1

log = logging.getLogger("mmal.server")

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'")


class RateLimiter:
    """At most ``limit`` submission attempts per ``window`` seconds per token, counted in the
    server database, so that every server process on it shares one count."""

    def __init__(self, store: ServerStore, limit: int, window: float = 60.0):
        self.store, self.limit, self.window = store, limit, window

    def allow(self, token_id: int) -> tuple[bool, float]:
        """(allowed, seconds until the next attempt would be allowed)."""
        return self.store.allow_request(token_id, self.limit, self.window)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (use a finite number or null)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} overflows a 64-bit float")
    return value


def _depth_ok(value: Any, limit: int) -> bool:
    """Whether ``value`` nests arrays/objects at most ``limit`` levels deep (iterative)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return True


def parse_json_body(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a request body as strict JSON (RFC 8259); raises ValueError saying why not.

    Refuses what Python's json module would let through: NaN, Infinity and -Infinity, numbers
    that overflow to infinity (``1e400``), and nesting deeper than ``max_depth`` (which would
    otherwise exhaust the interpreter's recursion limit somewhere later).
    """
    text = body.decode("utf-8")
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    if not _depth_ok(data, max_depth):
        raise ValueError(f"nested deeper than {max_depth} levels")
    return data


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={"Content-Security-Policy": _CSP,
                                                           "X-Content-Type-Options": "nosniff"})


def leaderboard_from_submissions(rows: list[dict[str, Any]], benchmark: str | None = None,
                                 metric: str = "accuracy") -> dict[str, Any]:
    """The leaderboard of verified submissions (newest per benchmark, strategy and submitter).

    Ranks the metrics the server replayed (by the AUBC of ``metric``, in its direction), and
    only for benchmarks whose hash is the one registered now.
    """
    benches = all_benchmarks()
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        bench = benches.get(row["benchmark_name"])
        if row["status"] != "verified" or bench is None or bench.hash != row["benchmark_hash"]:
            continue
        if not (row.get("selection") or "").startswith("reproduced"):
            continue  # verified before selections had to be reproduced: never ranked
        if benchmark is not None and row["benchmark_name"] != benchmark:
            continue
        latest[(row["benchmark_name"], row["strategy_label"], row["submitter"])] = row
    labels: dict[tuple[str, str], set[str]] = {}
    for (bname, label, submitter) in latest:
        labels.setdefault((bname, label_key(label)), set()).add(submitter)  # look-alikes count as one
    curves = []
    taken: set[tuple[str, str]] = set()
    # oldest submission first, so a name once shown keeps belonging to the same submission
    for (bname, label, submitter), row in sorted(latest.items(), key=lambda item: item[1]["id"]):
        shown = label if len(labels[(bname, label_key(label))]) == 1 else f"{label} [{submitter}]"
        # A label may itself look like "margin [alice]": never let two submissions share a row
        # name (their seeds would be merged into one curve); the later one gets its id added.
        while (bname, label_key(shown)) in taken:
            shown = f"{shown} (#{int(row['id'])})"
        taken.add((bname, label_key(shown)))
        for seed in json.loads(row["replayed"] or "[]"):
            curves.append(Curve(bname, shown, int(seed["seed"]), list(seed["n_labeled"]), seed["metrics"],
                                {"submission": row["id"], "submitter": submitter}))
    return build_leaderboard(curves, benches, metric=metric)


def plugin_check(doc: dict[str, Any]) -> str:
    """Whether this server has the submitted strategy's plugin, and the same source."""
    from ..benchmarks import strategy_distribution
    from ..submission import source_hash

    name, plugin = doc["strategy"]["name"], doc["plugin"]
    try:
        dist, version = strategy_distribution(name)
        ours = source_hash(name)
    except MmalError:
        return f"strategy '{name}' is not installed here"
    except Exception as err:  # a broken plugin on this server must not break the page
        return f"strategy '{name}' cannot be inspected here ({type(err).__name__})"
    if dist != plugin["distribution"]:
        return f"here '{name}' comes from {dist} {version}, not {plugin['distribution']}"
    if ours == plugin["source_hash"]:
        return f"{dist} {version}: same source as the submission"
    return f"{dist} {version}: source differs from the submission (here {ours[:16]})"


def create_app(db_url: str, *, max_body: int = DEFAULT_MAX_BODY, rate_limit: int = DEFAULT_RATE_LIMIT,
               verify: bool = True, limits: JobLimits | None = None, workers: int = 1,
               token_budget: float = DEFAULT_TOKEN_BUDGET) -> FastAPI:
    """The FastAPI application on the database at ``db_url``.

    verify: run ``workers`` verification workers next to the web server (each replays in its
    own child process under ``limits``); off, only separate ``mmal serve worker`` processes
    verify (tests of the HTTP layer alone turn it off too).
    token_budget: seconds of verification per token per 24 hours (0: no budget).
    """
    all_benchmarks()  # load the plugins once, before request threads and the worker share them
    store = ServerStore(db_url)
    limits = limits or JobLimits()
    pool = [VerificationWorker(store, limits=limits) for _ in range(workers)] if verify else []
    limiter = RateLimiter(store, rate_limit)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for worker in pool:
            worker.start()
        yield
        for worker in pool:
            worker.stop()
        store.close()

    app = FastAPI(title="mmal leaderboard", version=str(SCHEMA_VERSION), lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.state.workers = pool
    app.state.limiter = limiter
    _add_error_handlers(app)
    intake = _Intake(store, limiter, pool, limits, max_body, token_budget)
    app.post("/api/submissions", status_code=202)(intake.submit)
    access = _Access(store)
    _add_read_api(app, store, access)
    _add_pages(app, store, access)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    # every error is {"error": ...}, like the API's own refusals
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), **(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def path_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(OperationalError)
    async def database_busy(request: Request, exc: OperationalError):
        log.warning("database error on %s %s: %s", request.method, request.url.path, exc.orig)
        return _error(503, "the server's database is busy or unavailable; retry later", **{"Retry-After": "5"})


class _Intake:
    """``POST /api/submissions``: who may submit (token, rate, verification budget), the body
    (type, size, JSON, schema), then storing it and waking the workers."""

    def __init__(self, store: ServerStore, limiter: RateLimiter, pool: list, limits: JobLimits, max_body: int,
                 token_budget: float):
        self.store, self.limiter, self.pool, self.limits = store, limiter, pool, limits
        self.max_body, self.token_budget = max_body, token_budget

    async def admit(self, request: Request) -> tuple[dict[str, Any] | None, JSONResponse | None]:
        """(the token's owner, None), or (None, the refusal)."""
        store, limiter, limits, token_budget = self.store, self.limiter, self.limits, self.token_budget
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, _error(401, "missing bearer token: send 'Authorization: Bearer <token>'",
                                **{"WWW-Authenticate": "Bearer"})
        owner = await run_in_threadpool(store.authenticate, token.strip())
        if owner is None:
            return None, _error(401, "invalid or revoked token", **{"WWW-Authenticate": "Bearer"})
        allowed, retry = await run_in_threadpool(limiter.allow, owner["id"])
        if not allowed:
            return None, _error(429, f"rate limit: at most {limiter.limit} submissions per minute per token",
                                **{"Retry-After": str(int(retry) + 1)})
        if token_budget > 0:
            spent, queued = await run_in_threadpool(store.verification_load, owner["id"])
            if spent + (queued + 1) * limits.time_limit > token_budget:
                return None, _error(429, f"verification budget: this token has used {spent:.0f} s of its {token_budget:.0f} s "
                                         f"per 24 hours, and {queued} of its submissions wait (each may take up to "
                                         f"{limits.time_limit:.0f} s); retry later", **{"Retry-After": "600"})
        return owner, None

    async def read(self, request: Request) -> tuple[Any, int, JSONResponse | None]:
        """(the parsed submission, its size in bytes, None), or (None, 0, the refusal)."""
        max_body = self.max_body
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype and ctype != "application/json" and not ctype.endswith("+json"):
            return None, 0, _error(415, f"Content-Type {ctype[:100]}: send the submission as application/json")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body):
            return None, 0, _error(413, f"request body larger than the limit of {max_body} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                return None, 0, _error(413, f"request body larger than the limit of {max_body} bytes")
        try:
            data = await run_in_threadpool(parse_json_body, bytes(body))
        except (UnicodeDecodeError, ValueError) as err:
            return None, 0, _error(400, f"malformed JSON: {err}")
        try:
            doc = await run_in_threadpool(parse_submission, data, "submission")
        except MmalError as err:
            return None, 0, _error(422, str(err))
        return doc, len(body), None

    async def submit(self, request: Request):
        store, pool = self.store, self.pool
        owner, refusal = await self.admit(request)
        if refusal is not None:
            return refusal
        doc, size, refusal = await self.read(request)
        if refusal is not None:
            return refusal
        try:
            submission_id, duplicate = await run_in_threadpool(
                store.add_submission, owner, doc.model_dump(mode="json"), size
            )
        except DuplicateResult as err:
            return JSONResponse({"error": str(err), "first": err.first or None}, status_code=409)
        except ConfusableLabel as err:
            return _error(422, str(err))
        for worker in pool:
            worker.wake()
        url = f"/api/submissions/{submission_id}"
        state = "pending"
        if duplicate:
            state = (await run_in_threadpool(store.submission, submission_id))["status"]
        return JSONResponse({"id": submission_id, "status": state, "duplicate": duplicate, "status_url": url, "page_url": f"/submissions/{submission_id}"},
                            status_code=202, headers={"Location": url})


class _Access:
    """Who may see a submission: verified ones are public; pending and rejected ones (their
    reasons, their submitter) only to the token that sent them."""

    def __init__(self, store: ServerStore):
        self.store = store

    def viewer(self, request: Request) -> dict[str, Any] | None:
        """The token of the request's bearer, or None (no token, or not a valid one)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.store.authenticate(token.strip())

    def visible(self, request: Request, submission_id: int, with_document: bool = False) -> dict[str, Any] | None:
        """The submission if the requester may see it, else None."""
        row = self.store.submission(submission_id, with_document) if 0 <= submission_id <= _MAX_ID else None
        if row is None or row["status"] == "verified":
            return row
        who = self.viewer(request)
        return row if who is not None and who["id"] == row["token_id"] else None


def _add_read_api(app: FastAPI, store: ServerStore, access: _Access) -> None:
    """Submission status, the submission schema, the benchmarks and one benchmark's leaderboard."""
    @app.get("/api/submissions/{submission_id}")
    def submission_status(submission_id: int, request: Request):
        row = access.visible(request, submission_id)
        if row is None:  # also when it is not the requester's to see: existence is not revealed
            return _error(404, f"no submission {submission_id}")
        return {
            "id": row["id"], "status": row["status"], "reason": row["reason"], "selection": row["selection"],
            "benchmark": {"name": row["benchmark_name"], "hash": row["benchmark_hash"]},
            "strategy": row["strategy_label"], "submitter": row["submitter"],
            "created_at": row["created_at"], "finished_at": row["finished_at"],
        }

    @app.get("/api/schema")
    def schema():
        from ..submission import Submission

        return Submission.model_json_schema()

    @app.get("/api/benchmarks")
    def benchmarks():
        out = []
        for bench in all_benchmarks().values():
            available, why = benchmark_availability(bench)
            out.append({"name": bench.name, "hash": bench.hash, "version": bench.version,
                        "available": available, "why": why or None, "spec": bench.canonical()})
        return out

    @app.get("/api/leaderboards/{benchmark}")
    def leaderboard(benchmark: str, metric: str = "accuracy"):
        from ...plugins import check_metric_path

        benches = all_benchmarks()
        if benchmark not in benches:
            return _error(404, "unknown benchmark; see /api/benchmarks")
        try:
            check_metric_path(metric, "metric")
        except MmalError as err:
            return _error(400, str(err))
        lb = leaderboard_from_submissions(store.submissions(with_replayed=True), benchmark, metric)
        tables = lb["benchmarks"]
        return {"benchmark": benchmark, "hash": benches[benchmark].hash,
                "metric": metric, "higher_is_better": lb["higher_is_better"],
                "rows": tables[0]["rows"] if tables else [], "curves": tables[0]["curves"] if tables else {}}


def _add_pages(app: FastAPI, store: ServerStore, access: _Access) -> None:
    """The HTML pages: the leaderboard (cached until the database changes) and one submission's."""
    page_cache: dict[str, Any] = {"version": None, "html": None}
    page_lock = threading.Lock()

    @app.get("/", response_class=HTMLResponse)
    def index():
        version = store.version()
        with page_lock:
            if page_cache["version"] == version and page_cache["html"] is not None:
                return _html(page_cache["html"])
        lb = leaderboard_from_submissions(store.submissions(with_replayed=True))
        counts = store.counts()
        known = "".join(
            f"<li><code>{html.escape(b.name)}</code> hash <code>{html.escape(b.hash)}</code></li>"
            for b in all_benchmarks().values()
        )
        body = (
            "<h1>mmal leaderboard</h1>"
            "<p>Only submissions the server verified by replay, selections included, are ranked. "
            f"Verified submissions: {int(counts.get('verified', 0))}.</p>"
            + html_sections(lb, link=lambda row: f"/submissions/{int(row['meta']['submission'])}")
            + f"<section><h2>Benchmarks</h2><ul>{known}</ul></section>"
        )
        page = html_page("mmal leaderboard", body)
        with page_lock:
            page_cache.update(version=version, html=page)
        return _html(page)

    @app.get("/submissions/{submission_id}", response_class=HTMLResponse)
    def submission_page(submission_id: int, request: Request):
        row = access.visible(request, submission_id, with_document=True)
        e = html.escape
        if row is None:
            return _html(html_page("not found", f"<h1>No submission {int(submission_id)}</h1>"), 404)
        doc = json.loads(row["document"])
        facts = [
            ("status", row["status"]), ("reason", row["reason"] or ""),
            ("benchmark", f"{row['benchmark_name']} (hash {row['benchmark_hash']})"),
            ("strategy", row["strategy_label"]), ("submitter", row["submitter"]),
            ("plugin", f"{doc['plugin']['distribution']} {doc['plugin']['version']} (source {doc['plugin']['source_hash'][:16]})"),
            ("plugin on this server", plugin_check(doc)),
            ("selection replay", row["selection"] or "-"),
            ("environment", ", ".join(f"{k}={v}" for k, v in sorted(doc["environment"].items()) if v is not None)),
        ]
        body = [f"<h1>Submission {int(row['id'])}</h1><table class=\"facts\">"]
        body += [f"<tr><th class=\"s\">{e(k)}</th><td class=\"s\">{e(str(v))}</td></tr>" for k, v in facts]
        body.append("</table><h2>Claimed accuracy per round</h2><table class=\"claims\"><tr><th>seed</th>"
                    "<th>n labeled</th><th>claimed accuracy</th><th>replayed</th></tr>")
        replayed = {s["seed"]: s for s in json.loads(row["replayed"] or "[]")} if row.get("replayed") else {}
        for run in doc["runs"]:
            for r, claim in enumerate(run["rounds"]):
                again = replayed.get(run["seed"])
                value = again["metrics"][r].get("accuracy") if again and r < len(again["metrics"]) else None
                acc = claim["metrics"].get("accuracy")
                body.append(f"<tr><td>{e(str(run['seed']))}</td><td>{e(str(claim['n_labeled']))}</td>"
                            f"<td>{e(str(acc))}</td><td>{e(str(value)) if value is not None else '-'}</td></tr>")
        body.append("</table><p><a href=\"/\">back to the leaderboard</a></p>")
        return _html(html_page(f"submission {int(row['id'])}", "".join(body)))


__all__ = ["create_app", "leaderboard_from_submissions", "metric_tolerance", "RateLimiter"]
