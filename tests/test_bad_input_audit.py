"""Bad input found by an audit of every command: each gets one line, exit 2, nothing changed.

Every case here used to end in a traceback, exit 0 on a meaningless request, a multi-line or
garbled message, or a file written or destroyed by a command that should have refused.
"""

from __future__ import annotations

import os
import sqlite3

import pytest
import torch
import yaml

from _support import digest, one_line_error, tiny_config
from _support import cli_in_process as _cli_in_process

torch.set_num_threads(1)


def cli_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """``mmal ARGS`` in this process, stderr as printed (to check it is one line)."""
    return _cli_in_process(capsys, *args, raw=True)


def _micro_config(**overrides) -> dict:
    """Smaller than tiny_config: one strategy, no query round, two epochs."""
    cfg = tiny_config(
        model={"name": "fusion-mlp", "params": {"epochs": 2, "hidden": 8}},
        budget={"initial": 10, "per_round": 10, "rounds": 0},
        strategies=["random"],
    )
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def results_db(tmp_path_factory):
    """A results database with one finished experiment (built in this process)."""
    folder = tmp_path_factory.mktemp("audit")
    config = folder / "micro.yaml"
    config.write_text(yaml.safe_dump(_micro_config()))
    db = folder / "results.db"
    from mmal_core.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", str(config), "--db", str(db), "--workers", "1"])
    assert info.value.code == 0
    return db


@pytest.fixture
def copy_db(results_db, tmp_path):
    target = tmp_path / "copy.db"
    target.write_bytes(results_db.read_bytes())
    return target


# -- config values that passed validation ----------------------------------------------------
@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"dataset": []}, "dataset: List should have at least 1 item"),  # was: exit 0, empty experiment stored
        ({"seeds": [10**20]}, "seeds must be at most"),  # was: OverflowError in SQLite after the experiment was written
        ({"seeds": 10**11}, "a seed count must be at most"),  # was: MemoryError traceback
        ({"budget": {"initial": 10, "per_round": 1, "rounds": 10**20}}, "has a pool of 300"),  # was: OverflowError traceback
        ({"metrics": {"utilization": "sometimes"}}, "metrics.utilization: expected auto, true or false"),
        ({"dataset": {"name": "synthetic-difficulty", "params": {"n_train": 10**15}}}, "more memory than there is"),
    ],
)
def test_config_values_rejected_before_anything_is_written(capsys, write_config, copy_db, overrides, expected):
    path = write_config(_micro_config(**overrides))
    before = digest(copy_db)
    err = one_line_error(cli_in_process(capsys, "run", str(path), "--db", str(copy_db), "--workers", "1"), expected)
    assert str(path) in err
    assert "literal[" not in err and "more problem" not in err
    assert digest(copy_db) == before


def test_cuda_without_a_gpu_is_a_config_error(capsys, write_config, copy_db):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = digest(copy_db)
    for overrides, where in [
        ({"model": {"name": "fusion-mlp", "params": {"epochs": 2, "device": "cuda"}}}, "model: model 'fusion-mlp'"),
        ({"strategies": [{"name": "coreset", "params": {"device": "cuda"}}]}, "strategies[0]: strategy 'coreset'"),
    ]:
        path = write_config(_micro_config(**overrides))
        # was: every run failed (and was retried) after the experiment was stored
        one_line_error(cli_in_process(capsys, "run", str(path), "--db", str(copy_db), "--workers", "1"),
                        where, "torch sees no GPU")
    assert digest(copy_db) == before


# -- the results database ----------------------------------------------------------------------
def _foreign_db(path, tables, version=None):
    with sqlite3.connect(path) as conn:
        for t in tables:
            conn.execute(f"CREATE TABLE {t} (key TEXT PRIMARY KEY, value TEXT)")
        if version is not None:
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (version,))
    conn.close()
    return path


@pytest.mark.parametrize(
    "tables, version, expected",
    [
        (["meta", "stuff"], None, "something else"),  # was: mmal's tables added, exit 0
        (["meta", "experiments", "runs", "rounds"], "abc", "no mmal schema version"),  # was: ValueError traceback
        (["runs"], None, "something else"),  # show/export: was an SQL traceback
    ],
)
def test_foreign_sqlite_database_is_refused_and_untouched(capsys, write_config, tmp_path, tables, version, expected):
    db = _foreign_db(tmp_path / "other.db", tables, version)
    before = digest(db)
    config = write_config(_micro_config())
    one_line_error(cli_in_process(capsys, "run", str(config), "--db", str(db), "--workers", "1"),
                    f"--db {db}", expected)
    for command in ("show", "export", "leaderboard"):
        one_line_error(cli_in_process(capsys, command, "--db", str(db)), f"--db {db}")
    assert digest(db) == before  # not even the WAL flag in the header


def test_empty_db_option_is_an_error_not_the_default(capsys, write_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MMAL_DB", raising=False)
    config = write_config(_micro_config())
    # was: `--db ""` (an unset variable) silently ran into ./mmal-results.db
    one_line_error(cli_in_process(capsys, "run", str(config), "--db", ""), "--db: expected a database file path")
    one_line_error(cli_in_process(capsys, "show", "--db", ""), "--db: expected")
    assert not (tmp_path / "mmal-results.db").exists()



@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_db_in_a_folder_that_refuses_new_files(capsys, write_config):
    # was (as root, whom os.access lets write anywhere): a header, a progress bar, then an
    # sqlite3.OperationalError traceback with exit 1
    config = write_config(_micro_config())
    one_line_error(cli_in_process(capsys, "run", str(config), "--db", "/proc/mmal-audit.db"),
                    "--db /proc/mmal-audit.db: cannot create the database")

# -- output files ------------------------------------------------------------------------------
def test_output_that_is_not_a_writable_file(capsys, results_db, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for target in (str(folder), ""):  # was: IsADirectoryError / OSError tracebacks
        one_line_error(cli_in_process(capsys, "export", "--db", str(results_db), "-o", target), "is a directory")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # was: a device or FIFO (e.g. -o /dev/full as root) was replaced by a regular file
    one_line_error(cli_in_process(capsys, "export", "--db", str(results_db), "-o", str(fifo)), "not a regular file")
    assert not fifo.is_file() and fifo.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left behind"


# -- mmal bench / cache -----------------------------------------------------------------------
def test_bench_run_empty_strategy(capsys, tmp_path):
    db = tmp_path / "b.db"
    # was: a pydantic ValidationError traceback
    one_line_error(cli_in_process(capsys, "bench", "run", "synthetic-missing", "-s", "", "--db", str(db)), "--strategy")
    assert not db.exists()


def test_cache_rm_never_deletes_a_file_that_is_not_a_cache(capsys, tmp_path):
    victim = tmp_path / "notes.txt"
    victim.write_text("keep me")
    cache = tmp_path / "cache"
    # was: "removed .../notes.txt"
    one_line_error(cli_in_process(capsys, "cache", "rm", str(victim), "--cache-dir", str(cache)), "not a cache file")
    assert victim.read_text() == "keep me"


def test_cache_folder_that_is_a_file(capsys, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    # was: exit 0 with "no caches yet"
    for command in ("list", "verify"):
        one_line_error(cli_in_process(capsys, "cache", command, "--cache-dir", str(not_a_folder)), "is a file, expected a folder")


def test_cache_build_encoders_param_not_a_mapping(capsys, tmp_path):
    # was: TypeError traceback when --encoder is combined with a non-mapping --param encoders
    one_line_error(cli_in_process(capsys, "cache", "build", "av-digits", "-e", "image=identity", "-p", "encoders=5",
                                   "--cache-dir", str(tmp_path / "cache")), "--param encoders=5")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.h5"))


# -- mmal submit / serve -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://127.0.0.1:abc", "not a valid URL"),  # was: http.client.InvalidURL traceback
        ("http://[::1", "not a valid URL"),  # was: ValueError traceback
        ("http://127.0.0.1:99999", "Port out of range"),
    ],
)
def test_submit_bad_url(capsys, results_db, tmp_path, url, expected):
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    one_line_error(cli_in_process(capsys, "submit", "1", "--to", url, "--token-file", str(token), "--db", str(results_db)),
                    f"--to {url}", expected)


def test_submit_wait_needs_a_positive_timeout(capsys, results_db, tmp_path):
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    for timeout in ("-1", "nan"):
        one_line_error(cli_in_process(capsys, "submit", "1", "--to", "http://127.0.0.1:9", "--token-file", str(token),
                                       "--db", str(results_db), "--wait", "--timeout", timeout), "--timeout")


def test_error_text_is_not_read_as_markup_or_emoji(capsys, results_db, tmp_path):
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    # was: "error: run🔤 no such run" (rich turned ":abc:" into an emoji)
    one_line_error(cli_in_process(capsys, "submit", "run:abc:", "--to", "http://127.0.0.1:9", "--token-file",
                                   str(token), "--db", str(results_db)), "run:abc:")


def test_serve_token_refuses_other_databases(capsys, copy_db, tmp_path):
    pytest.importorskip("sqlalchemy")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 64)
    # was: a 150-line sqlalchemy traceback
    one_line_error(cli_in_process(capsys, "serve", "token", "list", "--db", str(junk)), "not an mmal server database")
    before = digest(copy_db)
    # was: exit 0, the server's tables added to the results database
    one_line_error(cli_in_process(capsys, "serve", "token", "create", "alice", "--db", str(copy_db)),
                    "not an mmal server database")
    assert digest(copy_db) == before
    one_line_error(cli_in_process(capsys, "serve", "token", "list", "--db", ""), "--db: expected")


# -- usage errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, expected",
    [
        (["run", "--workers", "abc"], "'abc' is not a valid integer"),
        (["bogus"], "No such command 'bogus'"),
        (["bench", "run"], "Missing argument 'NAME'"),
    ],
)
def test_usage_errors_are_one_line(capsys, args, expected):
    # was: "Usage: ...", "Try ... for help.", a blank line and "Error: ..." (four lines)
    err = one_line_error(cli_in_process(capsys, *args), expected, "--help")
    assert "Usage:" not in err
