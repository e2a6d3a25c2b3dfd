"""Results store: one SQLite file, committed round by round so a killed run resumes.

Tables:
    experiments(id, name, config_hash, config, created_at, environment)
    runs(id, experiment_id, run_key, dataset, dataset_params, strategy, strategy_params,
         strategy_label, seed, model, budget, initial_ids, status, started_at, finished_at, error)
    rounds(run_id, round, n_labeled, metrics, queried_ids, timings, model_state, created_at)

JSON columns hold dicts and id lists. An experiment is identified by (name, config hash): the
same config run again resumes it; a changed config is a new experiment under the same name.
A run is identified inside its experiment by a hash of everything that determines it.
A run's status: pending (reserved when the command starts, so ids follow the config's order),
running (or killed while running), finished or failed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import MmalError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at REAL NOT NULL,
    environment TEXT NOT NULL,
    UNIQUE (name, config_hash)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    run_key TEXT NOT NULL,
    dataset TEXT NOT NULL,
    dataset_params TEXT NOT NULL,
    strategy TEXT NOT NULL,
    strategy_params TEXT NOT NULL,
    strategy_label TEXT NOT NULL,
    seed INTEGER NOT NULL,
    model TEXT NOT NULL,
    budget TEXT NOT NULL,
    initial_ids TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    error TEXT,
    UNIQUE (experiment_id, run_key)
);
CREATE TABLE IF NOT EXISTS rounds (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    round INTEGER NOT NULL,
    n_labeled INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    queried_ids TEXT NOT NULL,
    timings TEXT NOT NULL,
    model_state BLOB,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, round)
);
"""


@dataclass
class RoundRecord:
    round: int
    n_labeled: int
    metrics: dict[str, Any]
    queried_ids: list[int]
    timings: dict[str, float]
    model_state: bytes | None = None


def check_writable(path: str | Path) -> Path:
    """Fail with a one-line error unless ``path`` can be created or opened for writing."""
    path = Path(path)
    if path.exists():
        if path.is_dir():
            raise MmalError(f"--db {path}: is a directory, expected a database file")
        if not os.access(path, os.W_OK):
            raise MmalError(f"--db {path}: the database file is not writable")
        return path
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MmalError(f"--db {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise MmalError(f"--db {path}: cannot create the database, the folder {parent} is not writable")
    # os.access says yes to root everywhere (/proc, read-only mounts): create the file for
    # real, and remove it again, so that the failure is this line and not an SQL error later.
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return path  # created by someone else in the meantime: sqlite opens it
    except OSError as err:
        raise MmalError(f"--db {path}: cannot create the database ({err.strerror or err})") from None
    os.unlink(path)
    return path


class Store:
    """A results database. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            if not self.path.is_file():
                raise MmalError(f"--db {self.path}: no results database there (run `mmal run` first)")
            uri = f"file:{self.path.resolve()}?mode=ro"
            self.conn = sqlite3.connect(uri, uri=True, timeout=60)
        else:
            check_writable(self.path)
            try:
                self.conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            except sqlite3.Error as err:
                raise MmalError(f"--db {self.path}: cannot open the database ({err})") from None
            self.conn.execute("PRAGMA busy_timeout = 60000")
        try:
            self._init(readonly)
        except sqlite3.DatabaseError as err:
            self.conn.close()
            raise MmalError(f"--db {self.path}: not an mmal results database ({err})") from None

    def _init(self, readonly: bool) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if readonly and "runs" not in tables:
            raise MmalError(f"--db {self.path}: not an mmal results database (no runs table)")
        if tables:
            # Check an existing file completely before writing anything to it (not even the
            # WAL flag), and before reading it: a foreign database, even one with a "meta" or
            # "runs" table, stays as it was and gets a one-line error, not an SQL error.
            if not {"meta", "experiments", "runs", "rounds"} <= tables:
                raise MmalError(f"--db {self.path}: not an mmal results database (an SQLite database of something else)")
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None or not str(row[0]).isdigit():
                raise MmalError(f"--db {self.path}: not an mmal results database (no mmal schema version)")
            if int(row[0]) != SCHEMA_VERSION:
                raise MmalError(f"--db {self.path}: schema version {row[0]}, this mmal reads version {SCHEMA_VERSION}")
        if readonly:
            return
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)
            self.conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    def transaction(self):
        store = self

        class _Tx:
            def __enter__(self_inner):
                store.conn.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, exc, tb):
                store.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
                return False

        return _Tx()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------
    def experiment(self, name: str, config_hash: str, config: dict, environment: dict) -> int:
        """Id of the (name, config hash) experiment, created when new."""
        with self.transaction():
            row = self.conn.execute(
                "SELECT id FROM experiments WHERE name=? AND config_hash=?", (name, config_hash)
            ).fetchone()
            if row:
                return int(row[0])
            cur = self.conn.execute(
                "INSERT INTO experiments(name, config_hash, config, created_at, environment) VALUES (?,?,?,?,?)",
                (name, config_hash, json.dumps(config, sort_keys=True), time.time(), json.dumps(environment, sort_keys=True)),
            )
            return int(cur.lastrowid)

    def reserve_runs(self, experiment_id: int, runs: list[tuple[str, dict[str, Any]]]) -> None:
        """Create the rows of runs not stored yet, status 'pending', in the order given.

        Called before any run starts, so that run ids follow the config's order whatever
        order parallel workers reach their runs in. ``fields`` as for :meth:`run`, without
        ``initial_ids`` (stored when the run starts).
        """
        with self.transaction():
            for run_key, fields in runs:
                self._insert_run(experiment_id, run_key, fields, [], "pending", "OR IGNORE")

    def run(self, experiment_id: int, run_key: str, fields: dict[str, Any]) -> tuple[int, list[int]]:
        """(run id, initial ids) of the run, created with ``fields`` when new."""
        initial_ids = [int(i) for i in fields["initial_ids"]]
        with self.transaction():
            row = self.conn.execute(
                "SELECT id, initial_ids, status FROM runs WHERE experiment_id=? AND run_key=?", (experiment_id, run_key)
            ).fetchone()
            if row is None:
                return self._insert_run(experiment_id, run_key, fields, initial_ids, "running"), initial_ids
            if row[2] == "pending":  # reserved by reserve_runs: starts now
                self.conn.execute("UPDATE runs SET status='running', initial_ids=?, started_at=? WHERE id=?",
                                  (json.dumps(initial_ids), time.time(), row[0]))
                return int(row[0]), initial_ids
            self.conn.execute("UPDATE runs SET status='running', error=NULL WHERE id=? AND status!='finished'", (row[0],))
            return int(row[0]), json.loads(row[1])

    def _insert_run(self, experiment_id: int, run_key: str, fields: dict[str, Any], initial_ids: list[int],
                    status: str, conflict: str = "") -> int:
        cur = self.conn.execute(
            f"INSERT {conflict} INTO runs(experiment_id, run_key, dataset, dataset_params, strategy, strategy_params,"
            " strategy_label, seed, model, budget, initial_ids, status, started_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                experiment_id, run_key, fields["dataset"], json.dumps(fields["dataset_params"], sort_keys=True),
                fields["strategy"], json.dumps(fields["strategy_params"], sort_keys=True), fields["strategy_label"],
                int(fields["seed"]), json.dumps(fields["model"], sort_keys=True),
                json.dumps(fields["budget"], sort_keys=True), json.dumps(initial_ids), status, time.time(),
            ),
        )
        return int(cur.lastrowid)

    def add_round(self, run_id: int, record: RoundRecord) -> None:
        """Commit one finished round atomically.

        A round already stored means another process works on the same run (two `mmal run`
        commands on one database): that is an error naming the run, not an SQL one.
        """
        try:
            self._insert_round(run_id, record)
        except sqlite3.IntegrityError:
            raise MmalError(
                f"run {run_id}: round {record.round} was already stored by another process; is another "
                f"`mmal run` working on {self.path}? Run the command again once it has stopped"
            ) from None

    def _insert_round(self, run_id: int, record: RoundRecord) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO rounds(run_id, round, n_labeled, metrics, queried_ids, timings, model_state, created_at)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    run_id, record.round, record.n_labeled, json.dumps(record.metrics, sort_keys=True),
                    json.dumps([int(i) for i in record.queried_ids]), json.dumps(record.timings, sort_keys=True),
                    record.model_state, time.time(),
                ),
            )

    def set_status(self, run_id: int, status: str, error: str | None = None) -> None:
        with self.transaction():
            # A finished run finished again (a re-run with nothing to do) keeps its record.
            self.conn.execute(
                "UPDATE runs SET status=?, error=?, finished_at=? WHERE id=? AND NOT (status='finished' AND ?='finished')",
                (status, error, time.time() if status == "finished" else None, run_id, status),
            )

    # -- reading -------------------------------------------------------------------------
    def find_run(self, experiment_id: int, run_key: str) -> tuple[int, str] | None:
        """(id, status) of the run ``run_key`` of an experiment, or None when it was never started."""
        row = self.conn.execute(
            "SELECT id, status FROM runs WHERE experiment_id=? AND run_key=?", (experiment_id, run_key)
        ).fetchone()
        return (int(row[0]), str(row[1])) if row is not None else None

    def rounds_of(self, experiment_id: int, run_key: str, first: int = 0) -> list[RoundRecord]:
        """The committed rounds ``first, first + 1, ...`` of the run ``run_key`` (without model states)."""
        rows = self.conn.execute(
            "SELECT o.round, o.n_labeled, o.metrics, o.queried_ids, o.timings FROM rounds o"
            " JOIN runs r ON r.id = o.run_id WHERE r.experiment_id=? AND r.run_key=? AND o.round >= ?"
            " ORDER BY o.round",
            (experiment_id, run_key, first),
        ).fetchall()
        return [RoundRecord(r[0], r[1], json.loads(r[2]), json.loads(r[3]), json.loads(r[4])) for r in rows]

    def count_rounds(self, experiment_id: int, run_key: str) -> int:
        """How many rounds of the run ``run_key`` are committed."""
        row = self.conn.execute(
            "SELECT COUNT(o.round) FROM runs r JOIN rounds o ON o.run_id = r.id WHERE r.experiment_id=? AND r.run_key=?",
            (experiment_id, run_key),
        ).fetchone()
        return int(row[0]) if row else 0

    def round_counts(self, experiment_id: int, run_keys: list[str]) -> dict[str, int]:
        """How many rounds of each of ``run_keys`` are committed, in one query per 500 keys
        (runs without a committed round, or not reserved yet, are left out)."""
        counts: dict[str, int] = {}
        for start in range(0, len(run_keys), 500):
            keys = run_keys[start : start + 500]
            marks = ",".join("?" * len(keys))
            counts.update(self.conn.execute(
                "SELECT r.run_key, COUNT(o.round) FROM runs r JOIN rounds o ON o.run_id = r.id"
                f" WHERE r.experiment_id=? AND r.run_key IN ({marks}) GROUP BY r.id",
                (experiment_id, *keys),
            ).fetchall())
        return counts

    def rounds(self, run_id: int, with_state: bool = False) -> list[RoundRecord]:
        cols = "round, n_labeled, metrics, queried_ids, timings" + (", model_state" if with_state else "")
        out = []
        for row in self.conn.execute(f"SELECT {cols} FROM rounds WHERE run_id=? ORDER BY round", (run_id,)):
            out.append(
                RoundRecord(row[0], row[1], json.loads(row[2]), json.loads(row[3]), json.loads(row[4]),
                            row[5] if with_state else None)
            )
        return out

    def experiments(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT e.id, e.name, e.config_hash, e.created_at, COUNT(r.id),"
            " SUM(CASE WHEN r.status='finished' THEN 1 ELSE 0 END)"
            " FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.id GROUP BY e.id ORDER BY e.id"
        ).fetchall()
        return [
            {"id": r[0], "name": r[1], "config_hash": r[2], "created_at": r[3], "runs": r[4], "finished": r[5] or 0}
            for r in rows
        ]

    def experiment_row(self, experiment_id: int) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT id, name, config_hash, config, created_at, environment FROM experiments WHERE id=?", (experiment_id,)
        ).fetchone()
        if row is None:
            raise MmalError(f"--experiment {experiment_id}: no such experiment in {self.path}")
        return {"id": row[0], "name": row[1], "config_hash": row[2], "config": json.loads(row[3]),
                "created_at": row[4], "environment": json.loads(row[5])}

    def runs(self, experiment_id: int | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT id, experiment_id, run_key, dataset, dataset_params, strategy, strategy_params, strategy_label,"
               " seed, model, budget, initial_ids, status, started_at, finished_at, error FROM runs")
        args: tuple = ()
        if experiment_id is not None:
            sql += " WHERE experiment_id=?"
            args = (experiment_id,)
        out = []
        for r in self.conn.execute(sql + " ORDER BY id", args):
            out.append({
                "id": r[0], "experiment_id": r[1], "run_key": r[2], "dataset": r[3],
                "dataset_params": json.loads(r[4]), "strategy": r[5], "strategy_params": json.loads(r[6]),
                "strategy_label": r[7], "seed": r[8], "model": json.loads(r[9]), "budget": json.loads(r[10]),
                "initial_ids": json.loads(r[11]), "status": r[12], "started_at": r[13], "finished_at": r[14],
                "error": r[15],
            })
        return out

    def iter_runs_with_rounds(self, experiment_id: int | None = None) -> Iterator[dict[str, Any]]:
        for run in self.runs(experiment_id):
            run["rounds"] = [r.__dict__ for r in self.rounds(run["id"])]
            for r in run["rounds"]:
                r.pop("model_state", None)
            yield run

    def iter_finished_runs(self, experiment_id: int | None = None) -> Iterator[dict[str, Any]]:
        """The finished runs that recorded at least one round, each with its rounds."""
        for run in self.iter_runs_with_rounds(experiment_id):
            if run["status"] == "finished" and run["rounds"]:
                yield run

    def resolve_experiment(self, selector: str | None) -> int:
        """Experiment id from a name or id; the newest one when ``selector`` is None."""
        exps = self.experiments()
        if not exps:
            raise MmalError(f"--db {self.path}: the database holds no experiments yet")
        if selector is None:
            return exps[-1]["id"]
        if selector.isdigit() and any(e["id"] == int(selector) for e in exps):
            return int(selector)
        named = [e for e in exps if e["name"] == selector]
        if not named:
            from .errors import did_you_mean

            raise MmalError(
                f"--experiment {selector}: no such experiment in {self.path}"
                f"{did_you_mean(selector, [e['name'] for e in exps])}"
            )
        return named[-1]["id"]
