"""Benchmarks by name: lookups in the registry, availability, and running one (``mmal bench run``).

The :class:`~mmal_core.benchmark.Benchmark` spec itself is core (plugins register it); this
module is what the leaderboard service does with the registered ones.
"""

from __future__ import annotations

from ..benchmark import Benchmark
from ..config import PluginSpec
from ..errors import MmalError, UnknownNameError, did_you_mean
from ..plugins import benchmark_availability, get_plugin_manager


# -- registry access ---------------------------------------------------------------------------
def all_benchmarks() -> dict[str, Benchmark]:
    """Every registered benchmark by name (plugins included)."""
    out: dict[str, Benchmark] = {}
    for name, entry in get_plugin_manager().entries("benchmark").items():
        if not isinstance(entry.obj, Benchmark):
            raise MmalError(
                f"plugin '{entry.plugin}' ({entry.dist}) registered benchmark '{name}' as "
                f"{type(entry.obj).__name__}, expected mmal_core.Benchmark"
            )
        out[name] = entry.obj
    return out


def get_benchmark(name: str) -> Benchmark:
    """The benchmark registered as ``name``; unknown names get a 'did you mean' hint."""
    benchmarks = all_benchmarks()
    if name not in benchmarks:
        known = ", ".join(sorted(benchmarks)) or "none installed"
        raise UnknownNameError(f"unknown benchmark '{name}'{did_you_mean(name, benchmarks)}; installed: {known}")
    return benchmarks[name]


def benchmark_by_hash(hash_: str) -> Benchmark | None:
    """The registered benchmark whose content hash is ``hash_`` (None when none is)."""
    for bench in all_benchmarks().values():
        if bench.hash == hash_:
            return bench
    return None


def strategy_distribution(strategy_name: str) -> tuple[str, str]:
    """(distribution name, version) of the plugin that registers ``strategy_name``."""
    entry = get_plugin_manager().entry("strategy", strategy_name)
    return entry.dist, entry.version


def run_benchmark(bench: Benchmark, strategy: PluginSpec, db_path: str, callbacks=None,
                  plugin_version: str | None = None):
    """Run (or resume) ``strategy`` on ``bench`` into ``db_path``; returns the run outcomes.

    plugin_version: when given, the installed version of the strategy's distribution must
    equal it (so a recorded result names the exact code that produced it).
    """
    from ..loop import run_experiment

    available, why = benchmark_availability(bench)
    if not available:
        raise MmalError(f"benchmark '{bench.name}' is unavailable: {why}")
    dist, version = strategy_distribution(strategy.name)
    if plugin_version is not None and plugin_version != version:
        raise MmalError(
            f"--strategy-plugin-version {plugin_version}: strategy '{strategy.name}' comes from "
            f"{dist} {version}; install {dist}=={plugin_version} or drop the option"
        )
    config = bench.experiment_config(strategy)
    return run_experiment(config, db_path, callbacks, source=f"benchmark '{bench.name}'")
