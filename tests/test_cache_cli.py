"""`mmal cache build|list|verify|rm` and runs that use the cache, end to end (in-process CLI)."""

from __future__ import annotations

import pytest

from _support import one_line_error, tiny_config
from mmal_core.cli import main


@pytest.fixture
def mmal(capsys, monkeypatch):
    """Run the CLI in this process; returns (exit status, stdout, stderr)."""
    monkeypatch.setenv("COLUMNS", "250")

    def _run(*args: str, env: dict | None = None):
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        out, err = capsys.readouterr()
        return exit_.value.code, out, err

    return _run


def test_build_list_verify_rm(tmp_path, mmal):
    d = str(tmp_path / "cache")
    code, out, _ = mmal("cache", "build", "av-digits", "--cache-dir", d)
    assert code == 0 and "built:" in out
    code, out, _ = mmal("cache", "build", "av-digits", "--cache-dir", d)
    assert code == 0 and "already cached" in out
    code, out, _ = mmal("cache", "list", env={"MMAL_CACHE_DIR": d})
    assert code == 0 and f"cache folder: {d}" in out
    assert "av-digits" in out and "mfcc-stats" in out and "ok" in out
    code, out, _ = mmal("cache", "verify", "--cache-dir", d)
    assert code == 0 and "ok" in out and "1797 samples" in out
    code, out, _ = mmal("cache", "rm", "av-digits", "--cache-dir", d)
    assert code == 0 and "removed" in out
    assert not list((tmp_path / "cache").glob("*.h5"))


def test_bad_requests_get_one_line_errors(tmp_path, mmal):
    d = str(tmp_path / "cache")
    one_line_error(mmal("cache", "build", "av-digits", "--cache-dir", d, "-e", "image=bogus"), "unknown encoder 'bogus'")
    one_line_error(mmal("cache", "build", "av-digits", "--cache-dir", d, "-e", "image=minilm"), "expected text items")
    one_line_error(mmal("cache", "build", "synthetic-difficulty", "--cache-dir", d), "no cache")
    one_line_error(mmal("cache", "build", "av-digits", "--cache-dir", d, "-p", "pairing_seed"), "expected KEY=VALUE")
    one_line_error(mmal("cache", "rm", "--cache-dir", d), "--all")
    one_line_error(mmal("cache", "verify", "clipart", "--cache-dir", d), "no cache of dataset 'clipart'")
    assert not list((tmp_path / "cache").glob("*.h5")), "a failed build leaves no cache"


def test_run_builds_the_cache_then_refuses_a_corrupt_one(tmp_path, write_config, mmal):
    d = tmp_path / "cache"
    cfg = tiny_config(
        dataset={"name": "av-digits", "params": {"encoders": {"image": {"name": "identity", "params": {"scale": 2.0}}}}},
        model={"name": "fusion-mlp", "params": {"epochs": 2, "hidden": 8, "min_steps": 0}},
        budget={"initial": 20, "per_round": 20, "rounds": 1},
        strategies=["random"],
    )
    config = write_config(cfg)
    env = {"MMAL_CACHE_DIR": str(d)}
    code, out, err = mmal("run", str(config), "--db", str(tmp_path / "r.db"), "--workers", "1", env=env)
    assert code == 0, err
    (cache,) = d.glob("av-digits-*.h5")
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 3])
    bad = mmal("run", str(config), "--db", str(tmp_path / "r2.db"), "--workers", "1", env=env)
    one_line_error(bad, "truncated or corrupt", "mmal cache rm", "mmal cache build av-digits")
    one_line_error(mmal("cache", "verify", env=env), "1 of 1 cache(s) failed verification")
