"""Server state in a relational database through SQLAlchemy Core (parameterised SQL only).

Tables:
    tokens(id, name, token_hash, created_at, revoked_at, last_request_at)
        A token is shown once when created; only its SHA-256 is stored.
    submissions(id, token_id, submitter, benchmark_name, benchmark_hash, strategy_label,
                status, reason, document, document_hash, replayed, selection, size, created_at,
                started_at, finished_at, label_key, result_key, verified_key, attempts, worker,
                lease_until, replay_seconds)
        status: pending -> verifying -> verified | rejected. ``replayed`` holds the metrics the
        server recomputed (what leaderboards rank). The same document sent again with the same
        token (a client retrying after a lost answer) maps to the submission already stored.
        ``selection`` says how the server's copy of the strategy re-ran. ``result_key``
        fingerprints the result (:func:`.trust.result_key`); ``verified_key`` holds it once
        verified and is unique, so one result is verified once, for whoever sent it first.
        A worker claims a job by setting ``worker`` and a lease (``lease_until``) that it
        renews while the replay runs; a job whose lease ran out (its worker died) is claimed
        again, and one that has used up :data:`MAX_ATTEMPTS` claims is rejected.
    rate_events(id, token_id, at)
        Accepted submission attempts of the last minute per token: the rate limit holds across
        every server process on the database.
    schema_info(version)
        The schema version; :func:`migrate` upgrades an older database in place.

SQLite (the default) runs in WAL mode, so readers never block the writer and a committed
submission survives the process being killed. PostgreSQL (``postgresql://...``, through the
psycopg driver) suits several servers and workers on several machines.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text, UniqueConstraint, and_, create_engine,
    delete, event, func, inspect, or_, select, text, update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, OperationalError

from ...errors import MmalError
from .trust import label_key, result_key

DEFAULT_DB = "mmal-server.db"

metadata = MetaData()

tokens = Table(
    "tokens", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("last_request_at", Float, nullable=True),
)

submissions = Table(
    "submissions", metadata,
    Column("id", Integer, primary_key=True),
    Column("token_id", Integer, ForeignKey("tokens.id"), nullable=False),
    Column("submitter", String(200), nullable=False),
    Column("benchmark_name", String(200), nullable=False),
    Column("benchmark_hash", String(16), nullable=False),
    Column("strategy_label", String(500), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("reason", Text, nullable=True),
    Column("document", Text, nullable=False),
    Column("document_hash", String(64), nullable=False, index=True),
    Column("replayed", Text, nullable=True),
    Column("selection", Text, nullable=True),
    Column("size", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    # schema version 2
    Column("label_key", String(500), nullable=True),
    Column("result_key", String(64), nullable=True),
    Column("verified_key", String(64), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("worker", String(200), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("replay_seconds", Float, nullable=True),
    UniqueConstraint("token_id", "document_hash"),
)
Index("ix_submissions_result_key", submissions.c.result_key)
Index("ux_submissions_verified_key", submissions.c.verified_key, unique=True)
Index("ix_submissions_label", submissions.c.benchmark_name, submissions.c.label_key)

rate_events = Table(
    "rate_events", metadata,
    Column("id", Integer, primary_key=True),
    Column("token_id", Integer, ForeignKey("tokens.id"), nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_rate_events_token_at", "token_id", "at"),
)

schema_info = Table("schema_info", metadata, Column("version", Integer, nullable=False))

STATUSES = ("pending", "verifying", "verified", "rejected")
#: A job claimed this many times without a verdict (each time its worker died) is rejected.
MAX_ATTEMPTS = 2
#: Seconds a claim lasts unless the worker renews it.
DEFAULT_LEASE = 30.0


class DuplicateResult(MmalError):
    """The same result was already verified, for ``first`` (its submission row)."""

    def __init__(self, message: str, first: dict[str, Any]):
        super().__init__(message)
        self.first = first


class ConfusableLabel(MmalError):
    """A label that reads like another label already on the same leaderboard."""


def _v2(conn) -> None:
    """Version 1 (the first server) -> 2: columns for leases, attempts, result fingerprints and
    normalised labels, the per-token rate table; fingerprints of the stored documents."""
    for name in ("label_key", "result_key", "verified_key", "attempts", "worker", "lease_until", "replay_seconds"):
        col = submissions.c[name]
        ddl = col.type.compile(dialect=conn.dialect)
        default = f" DEFAULT {col.server_default.arg} NOT NULL" if col.server_default is not None else ""
        conn.execute(text(f"ALTER TABLE submissions ADD COLUMN {name} {ddl}{default}"))
    conn.execute(text("ALTER TABLE tokens ADD COLUMN last_request_at "
                      f"{tokens.c.last_request_at.type.compile(dialect=conn.dialect)}"))
    for index in submissions.indexes:
        if index.name in ("ix_submissions_result_key", "ux_submissions_verified_key", "ix_submissions_label"):
            index.create(conn)
    rate_events.create(conn)
    taken: set[str] = set()
    rows = conn.execute(select(submissions.c.id, submissions.c.document, submissions.c.strategy_label,
                               submissions.c.status, submissions.c.selection).order_by(submissions.c.id)).all()
    for row in rows:
        key = result_key(json.loads(row.document))
        values = {"label_key": label_key(row.strategy_label), "result_key": key}
        if row.status == "verified" and (row.selection or "").startswith("reproduced") and key not in taken:
            taken.add(key)
            values["verified_key"] = key
        conn.execute(update(submissions).where(submissions.c.id == row.id).values(**values))


#: Ordered schema steps: (version reached, step). Version 1 is the first server's schema,
#: which had no schema_info table.
MIGRATIONS = [(2, _v2)]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate(engine: Engine) -> int:
    """Create the tables of a new database, or upgrade an older one in place (in one
    transaction); returns the version the database had before."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # one server at a time migrates
            conn.execute(text("SELECT pg_advisory_xact_lock(726172)"))
        existing = set(inspect(conn).get_table_names())
        if "submissions" not in existing:
            metadata.create_all(conn)
            conn.execute(schema_info.insert().values(version=SCHEMA_VERSION))
            return 0
        if "schema_info" not in existing:
            schema_info.create(conn)
            conn.execute(schema_info.insert().values(version=1))
        version = int(conn.execute(select(func.max(schema_info.c.version))).scalar_one())
        if version > SCHEMA_VERSION:
            raise MmalError(f"the server database has schema version {version}; this mmal knows up to "
                            f"{SCHEMA_VERSION} (upgrade mmal)")
        for reached, step in MIGRATIONS:
            if reached > version:
                step(conn)
        conn.execute(update(schema_info).values(version=SCHEMA_VERSION))
        return version


def database_url(value: str | None) -> str:
    """A SQLAlchemy URL from ``--db``: a URL as is, a plain path as an SQLite file."""
    value = value or DEFAULT_DB
    if "://" in value:
        scheme, _, rest = value.partition("://")
        if scheme in ("postgresql", "postgres"):  # the psycopg (3) driver, not psycopg2
            return f"postgresql+psycopg://{rest}"
        return value
    path = Path(value)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise MmalError(f"--db {value}: is a directory, expected a database file or URL")
    if not parent.is_dir():
        raise MmalError(f"--db {value}: the folder {parent} does not exist")
    return f"sqlite:///{path}"


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a bearer token (what the tokens table stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ServerStore:
    """The server's database: tokens and submissions."""

    def __init__(self, url: str):
        self.url = url
        try:
            if url.startswith("sqlite"):
                self.engine: Engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
                event.listen(self.engine, "connect", _sqlite_pragmas)
            else:
                self.engine = create_engine(url, pool_pre_ping=True)
            existing = set(inspect(self.engine).get_table_names())
            if existing and not existing & set(metadata.tables):
                # e.g. an mmal results database: never add the server's tables to it
                self.engine.dispose()
                raise MmalError(
                    f"--db {url}: the database holds other tables ({', '.join(sorted(existing)[:5])}), "
                    "not an mmal server database"
                )
            migrate(self.engine)
        except ArgumentError as err:
            raise MmalError(f"--db {url}: not a database URL SQLAlchemy understands ({err})") from None
        except OperationalError as err:
            raise MmalError(f"--db {url}: cannot open the database ({str(err.orig).splitlines()[0]})") from None
        except DatabaseError as err:  # e.g. a file that is not SQLite at all
            raise MmalError(f"--db {url}: not an mmal server database ({str(err.orig).splitlines()[0]})") from None
        except ModuleNotFoundError as err:
            raise MmalError(f"--db {url}: the database driver is not installed ({err})") from None

    def close(self) -> None:
        self.engine.dispose()

    # -- tokens --------------------------------------------------------------------------------
    def create_token(self, name: str) -> str:
        """Create a token for ``name`` and return it (it cannot be shown again)."""
        name = name.strip()
        if not name or len(name) > 200:
            raise MmalError("token NAME: expected 1 to 200 characters")
        with self.engine.begin() as conn:
            active = conn.execute(
                select(tokens.c.id).where(tokens.c.name == name, tokens.c.revoked_at.is_(None))
            ).first()
            if active:
                raise MmalError(f"token '{name}' already exists; revoke it first with `mmal serve token revoke {name}`")
            token = secrets.token_urlsafe(32)
            conn.execute(tokens.insert().values(name=name, token_hash=hash_token(token), created_at=time.time()))
        return token

    def revoke_token(self, name: str) -> int:
        """Revoke every active token of ``name``; returns how many were revoked."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(tokens).where(tokens.c.name == name, tokens.c.revoked_at.is_(None)).values(revoked_at=time.time())
            )
        if result.rowcount == 0:
            raise MmalError(f"token '{name}': no active token of that name")
        return result.rowcount

    def list_tokens(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(tokens.c.id, tokens.c.name, tokens.c.created_at, tokens.c.revoked_at)
                                .order_by(tokens.c.id)).all()
        return [dict(r._mapping) for r in rows]

    def authenticate(self, token: str) -> dict[str, Any] | None:
        """The active token row matching ``token``, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(tokens.c.id, tokens.c.name).where(
                    tokens.c.token_hash == hash_token(token), tokens.c.revoked_at.is_(None)
                )
            ).first()
        return dict(row._mapping) if row else None

    # -- submissions ---------------------------------------------------------------------------
    def add_submission(self, token: dict[str, Any], doc: dict[str, Any], size: int) -> tuple[int, bool]:
        """Store a schema-valid document as ``pending``; committed before this returns.

        Returns (submission id, whether the same token had already sent this very document).
        Raises :class:`DuplicateResult` when the same result is already verified (for anyone,
        under any label) and :class:`ConfusableLabel` when the label reads like another label
        on the same benchmark's leaderboard; nothing is stored then.
        """
        text_ = json.dumps(doc, sort_keys=True)
        digest = hashlib.sha256(text_.encode()).hexdigest()
        key, lkey = result_key(doc), label_key(doc["strategy"]["label"])
        try:
            with self.engine.begin() as conn:
                # the checks and the insert are one step for a given result: PostgreSQL locks
                # the result's key, SQLite takes its (single) write lock by writing first
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(key[:15], 16)})
                else:
                    conn.execute(update(tokens).where(tokens.c.id == token["id"]).values(last_request_at=time.time()))
                known = self._same_document(conn, token["id"], digest)
                if known is not None:
                    return known, True
                self._check_new_result(conn, token, doc, key, lkey)
                return self._insert(conn, token, doc, text_, digest, size, key, lkey), False
        except IntegrityError:  # the same document arrived twice at once: the other one won
            with self.engine.connect() as conn:
                return int(self._same_document(conn, token["id"], digest)), True

    @staticmethod
    def _check_new_result(conn, token: dict[str, Any], doc: dict[str, Any], key: str, lkey: str) -> None:
        first = conn.execute(
            select(submissions.c.id, submissions.c.submitter, submissions.c.strategy_label,
                   submissions.c.created_at).where(submissions.c.verified_key == key)
        ).first()
        if first is not None:
            raise DuplicateResult(
                f"this result (benchmark {doc['benchmark']['name']}, strategy {doc['strategy']['name']} with "
                f"these parameters and picks) was first submitted by {first.submitter} as submission "
                f"{first.id} ('{first.strategy_label}'); it is ranked under that name only",
                {"id": int(first.id), "submitter": first.submitter, "strategy": first.strategy_label},
            )
        waiting = conn.execute(
            select(submissions.c.id).where(submissions.c.result_key == key, submissions.c.token_id != token["id"],
                                           submissions.c.status.in_(("pending", "verifying")))
        ).first()
        if waiting is not None:  # who sent it stays private until it is verified
            raise DuplicateResult(
                "the same result (benchmark, strategy, parameters and picks) was sent earlier by another "
                "submitter and is being verified; it belongs to them once verified (send it again if it is "
                "rejected)", {})
        lookalike = conn.execute(
            select(submissions.c.strategy_label).where(
                submissions.c.benchmark_name == doc["benchmark"]["name"], submissions.c.label_key == lkey,
                submissions.c.strategy_label != doc["strategy"]["label"], submissions.c.status != "rejected",
            ).limit(1)
        ).first()
        if lookalike is not None:
            raise ConfusableLabel(
                f"strategy.label {doc['strategy']['label']!r} reads like the label {lookalike[0]!r} already on "
                f"the '{doc['benchmark']['name']}' leaderboard (same letters after Unicode normalisation, "
                "look-alike characters and case); use exactly that label or a clearly different one"
            )

    @staticmethod
    def _same_document(conn, token_id: int, digest: str) -> int | None:
        row = conn.execute(select(submissions.c.id).where(submissions.c.token_id == token_id,
                                                          submissions.c.document_hash == digest)).first()
        return int(row.id) if row else None

    @staticmethod
    def _insert(conn, token: dict[str, Any], doc: dict[str, Any], text_: str, digest: str, size: int,
                key: str, lkey: str) -> int:
        result = conn.execute(submissions.insert().values(
            token_id=token["id"], submitter=token["name"],
            benchmark_name=doc["benchmark"]["name"], benchmark_hash=doc["benchmark"]["hash"],
            strategy_label=doc["strategy"]["label"], status="pending",
            document=text_, document_hash=digest, size=size, created_at=time.time(),
            result_key=key, label_key=lkey, attempts=0,
        ))
        return int(result.inserted_primary_key[0])

    # -- limits per token (in the database: every server process shares them) ------------------
    def allow_request(self, token_id: int, limit: int, window: float = 60.0) -> tuple[bool, float]:
        """Count one submission attempt of ``token_id``: (allowed, seconds until the next one
        would be). At most ``limit`` per ``window`` seconds across all processes."""
        if limit <= 0:
            return True, 0.0
        now = time.time()
        with self.engine.begin() as conn:
            # a write first: it takes the token's row lock (PostgreSQL) or the write lock
            # (SQLite), so concurrent requests of one token are counted one after the other
            conn.execute(update(tokens).where(tokens.c.id == token_id).values(last_request_at=now))
            conn.execute(delete(rate_events).where(rate_events.c.token_id == token_id, rate_events.c.at <= now - window))
            count, oldest = conn.execute(select(func.count(), func.min(rate_events.c.at))
                                         .where(rate_events.c.token_id == token_id)).first()
            if count >= limit:
                return False, max(float(oldest) + window - now, 0.0)
            conn.execute(rate_events.insert().values(token_id=token_id, at=now))
        return True, 0.0

    def verification_load(self, token_id: int, window: float = 86400.0) -> tuple[float, int]:
        """(seconds of replay spent on ``token_id``'s submissions finished in the last
        ``window`` seconds, how many of its submissions wait or are being verified)."""
        since = time.time() - window
        with self.engine.connect() as conn:
            spent = conn.execute(select(func.coalesce(func.sum(submissions.c.replay_seconds), 0.0)).where(
                submissions.c.token_id == token_id, submissions.c.finished_at > since)).scalar_one()
            queued = conn.execute(select(func.count()).where(
                submissions.c.token_id == token_id, submissions.c.status.in_(("pending", "verifying")))).scalar_one()
        return float(spent), int(queued)

    def submission(self, submission_id: int, with_document: bool = False) -> dict[str, Any] | None:
        cols = [c for c in submissions.c if with_document or c.name not in ("document", "replayed", "document_hash")]
        with self.engine.connect() as conn:
            row = conn.execute(select(*cols).where(submissions.c.id == submission_id)).first()
        return dict(row._mapping) if row else None

    def submissions(self, status: str | None = None, with_replayed: bool = False) -> list[dict[str, Any]]:
        cols = [c for c in submissions.c
                if c.name not in ("document", "document_hash") and (with_replayed or c.name != "replayed")]
        query = select(*cols).order_by(submissions.c.id)
        if status is not None:
            query = query.where(submissions.c.status == status)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query).all()]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(submissions.c.status, func.count()).group_by(submissions.c.status)).all()
        return {status: int(n) for status, n in rows}

    def version(self) -> tuple:
        """Changes whenever a submission is added or finishes (for caching pages)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(func.count(), func.max(submissions.c.finished_at))
                               .where(submissions.c.status == "verified")).first()
        return tuple(row)

    # -- the worker's side ------------------------------------------------------------------------
    def requeue_interrupted(self) -> int:
        """Put submissions left ``verifying`` without a lease back to ``pending`` (a database
        of schema version 1 only; with leases, :meth:`claim_next` takes over jobs whose worker
        stopped renewing them, and never the running job of a live worker)."""
        with self.engine.begin() as conn:
            return conn.execute(
                update(submissions).where(submissions.c.status == "verifying", submissions.c.lease_until.is_(None))
                .values(status="pending", started_at=None)
            ).rowcount

    def claim_next(self, worker: str = "worker", lease: float = DEFAULT_LEASE,
                   max_attempts: int = MAX_ATTEMPTS) -> dict[str, Any] | None:
        """Claim one job for ``worker``: a pending submission, or one whose worker's lease ran
        out. Exactly one worker gets each claim (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a
        compare-and-set under SQLite's single writer). Tokens with fewer jobs in progress go
        first, so one token's slow jobs cannot hold every worker; then the oldest.

        A job whose lease ran out after ``max_attempts`` claims is rejected instead (its replay
        killed its worker that many times)."""
        now = time.time()
        expired = and_(submissions.c.status == "verifying",
                       or_(submissions.c.lease_until.is_(None), submissions.c.lease_until < now))
        with self.engine.begin() as conn:
            conn.execute(update(submissions).where(expired, submissions.c.attempts >= max_attempts).values(
                status="rejected", finished_at=now, worker=None, lease_until=None,
                reason=f"the replay stopped its worker {max_attempts} times (killed or crashed before a verdict); "
                       "not retried",
            ))
        other = submissions.alias("other")
        busy = (select(func.count()).where(other.c.token_id == submissions.c.token_id,
                                           other.c.status == "verifying").scalar_subquery())
        query = (select(submissions.c.id, submissions.c.status, submissions.c.attempts)
                 .where(or_(submissions.c.status == "pending", expired)).order_by(busy, submissions.c.id).limit(1))
        while True:
            with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    query = query.with_for_update(of=submissions, skip_locked=True)
                row = conn.execute(query).first()
                if row is None:
                    return None
                claimed = conn.execute(
                    update(submissions).where(submissions.c.id == row.id, submissions.c.status == row.status,
                                              submissions.c.attempts == row.attempts)
                    .values(status="verifying", started_at=now, worker=worker, lease_until=now + lease,
                            attempts=row.attempts + 1)
                ).rowcount
                if claimed:
                    got = conn.execute(select(submissions.c.document, submissions.c.token_id)
                                       .where(submissions.c.id == row.id)).first()
                    return {"id": int(row.id), "document": json.loads(got.document), "token_id": int(got.token_id),
                            "attempt": int(row.attempts) + 1}
            # another worker took it first: try the next one

    def renew(self, submission_id: int, worker: str, lease: float = DEFAULT_LEASE) -> bool:
        """Extend ``worker``'s claim on a job; False when the job is no longer its own."""
        with self.engine.begin() as conn:
            return conn.execute(
                update(submissions).where(submissions.c.id == submission_id, submissions.c.worker == worker,
                                          submissions.c.status == "verifying")
                .values(lease_until=time.time() + lease)
            ).rowcount == 1

    def finish(self, submission_id: int, status: str, reason: str, replayed: list[dict[str, Any]] | None,
               selection: str | None = None, worker: str | None = None, replay_seconds: float | None = None) -> bool:
        """Record a verdict. With ``worker``, only while that worker still holds the claim
        (False otherwise: another worker took the job over). A verified result that another
        submission already verified is recorded as rejected, naming the first submitter."""
        values = dict(status=status, reason=reason or None, selection=selection or None,
                      replayed=json.dumps(replayed) if replayed is not None else None, finished_at=time.time(),
                      lease_until=None, replay_seconds=replay_seconds)
        where = [submissions.c.id == submission_id]
        if worker is not None:
            where += [submissions.c.worker == worker, submissions.c.status == "verifying"]
        try:
            with self.engine.begin() as conn:
                if status == "verified":
                    values["verified_key"] = submissions.c.result_key
                return conn.execute(update(submissions).where(*where).values(**values)).rowcount == 1
        except IntegrityError:  # verified_key is unique: the same result was verified first elsewhere
            with self.engine.connect() as conn:
                first = conn.execute(
                    select(submissions.c.id, submissions.c.submitter).where(
                        submissions.c.verified_key == select(submissions.c.result_key)
                        .where(submissions.c.id == submission_id).scalar_subquery())
                ).first()
            values.update(status="rejected", replayed=None, verified_key=None,
                          reason=f"duplicate: the same result was first submitted by {first.submitter} "
                                 f"(submission {first.id})" if first else "duplicate of a verified result")
            with self.engine.begin() as conn:
                return conn.execute(update(submissions).where(*where).values(**values)).rowcount == 1


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
