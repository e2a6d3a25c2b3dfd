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


def cli_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``mmal ARGS`` in this process: (exit code, stdout, stderr on one line)."""
    import pytest

    from mmal_core.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return info.value.code, out.out, " ".join(out.err.split())
