"""Helpers shared by mmal's tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**overrides) -> dict:
    """A config that runs in about a second: 2 strategies x 1 seed, 3 query rounds."""
    cfg = {
        "name": "tiny",
        "dataset": {"name": "synthetic-difficulty", "params": {"n_train": 300, "n_test": 150, "dim": 8}},
        "model": {"name": "fusion-mlp", "params": {"epochs": 8, "hidden": 16}},
        "budget": {"initial": 10, "per_round": 10, "rounds": 3},
        "strategies": ["random", "margin"],
        "seeds": [0],
    }
    cfg.update(overrides)
    return cfg


def run_cli(*args: str, env_extra: dict | None = None, cwd: Path | None = None, timeout: float = 300):
    """Run ``python -m mmal_core ARGS`` in a fresh process; returns CompletedProcess."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["COLUMNS"] = "200"
    if env_extra:
        env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "mmal_core", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


def cli_in_process(capsys, *args: str, raw: bool = False) -> tuple[int, str, str]:
    """Run ``mmal ARGS`` in this process: (exit code, stdout, stderr).

    stderr is joined into one line (rich wraps long messages) unless ``raw`` is set, which
    keeps it as printed, to check that an error is one line.
    """
    import pytest

    from mmal_core.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return info.value.code, out.out, out.err if raw else " ".join(out.err.split())


def one_line_error(result: tuple[int, str, str], *needles: str) -> str:
    """Assert that a CLI result is exit 2 with one ``error:`` line holding every needle.

    Progress lines of encoders ("encoding ...") may precede the error. Returns the line.
    """
    code, out, err = result
    assert code == 2, out + err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("encoding ")]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def digest(path) -> str | None:
    """SHA-256 of a file's bytes (None when it does not exist): to show nothing was written."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
