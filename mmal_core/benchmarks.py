"""Deprecated module path, kept so that plugins written against it still import.

``Benchmark`` is :class:`mmal_core.Benchmark` (defined in :mod:`mmal_core.benchmark`); the
lookups by name (``all_benchmarks``, ``get_benchmark``, ``benchmark_by_hash``,
``run_benchmark``) are in :mod:`mmal_core.leaderboard.benchmarks`, and mmal's own suite
(``canonical_suite``) in :mod:`mmal_core.builtin.benchmarks`.
"""

from __future__ import annotations

import importlib
import warnings

_HOMES = {
    "Benchmark": "mmal_core.benchmark",
    "DEFAULT_METRICS": "mmal_core.benchmark",
    "canonical_suite": "mmal_core.builtin.benchmarks",
    "all_benchmarks": "mmal_core.leaderboard.benchmarks",
    "get_benchmark": "mmal_core.leaderboard.benchmarks",
    "benchmark_by_hash": "mmal_core.leaderboard.benchmarks",
    "strategy_distribution": "mmal_core.leaderboard.benchmarks",
    "run_benchmark": "mmal_core.leaderboard.benchmarks",
}


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    new = "mmal_core.Benchmark" if name == "Benchmark" else f"{home}.{name}"
    warnings.warn(f"mmal_core.benchmarks.{name} moved: import {new}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(home), name)
