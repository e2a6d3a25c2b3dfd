"""Server state in a relational database through SQLAlchemy Core (parameterised SQL only).

Tables:
    tokens(id, name, token_hash, created_at, revoked_at)
        A token is shown once when created; only its SHA-256 is stored.
    submissions(id, token_id, submitter, benchmark_name, benchmark_hash, strategy_label,
                status, reason, document, document_hash, replayed, selection, size, created_at,
                started_at, finished_at)
        status: pending -> verifying -> verified | rejected. ``replayed`` holds the metrics the
        server recomputed (what leaderboards rank). The same document sent again with the same
        token (a client retrying after a lost answer) maps to the submission already stored.
        ``selection`` says whether the server's copy of the strategy re-ran to the same queries.

SQLite (the default) runs in WAL mode, so readers never block the writer and a committed
submission survives the process being killed.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column, Float, ForeignKey, Integer, MetaData, String, Table, Text, UniqueConstraint, create_engine, event, func,
    inspect, select, update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, OperationalError

from ..errors import MmalError

DEFAULT_DB = "mmal-server.db"

metadata = MetaData()

tokens = Table(
    "tokens", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
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
    UniqueConstraint("token_id", "document_hash"),
)

STATUSES = ("pending", "verifying", "verified", "rejected")


def database_url(value: str | None) -> str:
    """A SQLAlchemy URL from ``--db``: a URL as is, a plain path as an SQLite file."""
    value = value or DEFAULT_DB
    if "://" in value:
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
            metadata.create_all(self.engine)
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
        """
        text = json.dumps(doc, sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()
        with self.engine.begin() as conn:
            known = self._same_document(conn, token["id"], digest)
            if known is not None:
                return known, True
        try:
            return self._insert(token, doc, text, digest, size), False
        except IntegrityError:  # the same document arrived twice at once: the other one won
            with self.engine.connect() as conn:
                return int(self._same_document(conn, token["id"], digest)), True

    @staticmethod
    def _same_document(conn, token_id: int, digest: str) -> int | None:
        row = conn.execute(select(submissions.c.id).where(submissions.c.token_id == token_id,
                                                          submissions.c.document_hash == digest)).first()
        return int(row.id) if row else None

    def _insert(self, token: dict[str, Any], doc: dict[str, Any], text: str, digest: str, size: int) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(submissions.insert().values(
                token_id=token["id"], submitter=token["name"],
                benchmark_name=doc["benchmark"]["name"], benchmark_hash=doc["benchmark"]["hash"],
                strategy_label=doc["strategy"]["label"], status="pending",
                document=text, document_hash=digest, size=size, created_at=time.time(),
            ))
            return int(result.inserted_primary_key[0])

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
        """Put submissions left ``verifying`` by a killed process back to ``pending``."""
        with self.engine.begin() as conn:
            return conn.execute(
                update(submissions).where(submissions.c.status == "verifying").values(status="pending", started_at=None)
            ).rowcount

    def claim_next(self) -> dict[str, Any] | None:
        """Atomically move the oldest pending submission to ``verifying`` and return it."""
        while True:
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(submissions.c.id).where(submissions.c.status == "pending").order_by(submissions.c.id).limit(1)
                ).first()
                if row is None:
                    return None
                claimed = conn.execute(
                    update(submissions).where(submissions.c.id == row.id, submissions.c.status == "pending")
                    .values(status="verifying", started_at=time.time())
                ).rowcount
                if claimed:
                    doc = conn.execute(select(submissions.c.document).where(submissions.c.id == row.id)).scalar_one()
                    return {"id": int(row.id), "document": json.loads(doc)}
            # another worker took it first: try the next one

    def finish(self, submission_id: int, status: str, reason: str, replayed: list[dict[str, Any]] | None,
               selection: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(submissions).where(submissions.c.id == submission_id).values(
                    status=status, reason=reason or None, selection=selection or None,
                    replayed=json.dumps(replayed) if replayed is not None else None, finished_at=time.time(),
                )
            )


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
