"""Benchmarks: named, versioned, frozen experiment specs with a content hash.

A benchmark fixes everything about an active-learning experiment except the query strategy:
the dataset and its parameters, the model, the budget schedule, the seeds and the metrics
that are compared. Its :attr:`Benchmark.hash` is the SHA-256 (16 hex digits) of that
content, so results are comparable only when they were produced under the same hash; a
changed spec is a new hash even if the name stays.

Benchmarks are plugins like datasets and strategies: a plugin returns :class:`Benchmark`
objects from the ``mmal_register_benchmarks`` hook. mmal's canonical suite (one benchmark
per synthetic pitfall setting, and one per real dataset when that dataset is installed) is
registered by :mod:`mmal_core.builtin` through that same hook.

A run in the results database belongs to a benchmark when its dataset, dataset parameters,
model and budget equal the benchmark's and its seed is one of the benchmark's seeds
(:meth:`Benchmark.matches_run`). ``mmal bench run`` produces such runs, but so does any
``mmal run`` config with the same settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .config import BudgetSpec, ExperimentConfig, ModelSpec, PluginSpec, content_hash
from .errors import MmalError, UnknownNameError, did_you_mean

#: Metrics every benchmark compares unless it says otherwise (paths into a round's metrics).
DEFAULT_METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class Benchmark:
    """One frozen benchmark.

    name: registered name (``synthetic-redundant``).
    version: a label the author bumps when the spec changes (the hash changes anyway).
    dataset: dataset plugin and parameters; model: model plugin, parameters, warm start.
    budget: initial set and per-round schedule; seeds: the seeds every submission must cover.
    metrics: metric paths recorded and compared on replay (``accuracy`` is always first); each
        starts with the name of a registered metric (``mmal list metrics``), checked by
        :meth:`available`.
    summary: one line for ``mmal bench list``.
    """

    name: str
    dataset: PluginSpec
    budget: BudgetSpec
    seeds: tuple[int, ...]
    model: ModelSpec = field(default_factory=ModelSpec)
    version: str = "1"
    metrics: tuple[str, ...] = DEFAULT_METRICS
    summary: str = ""

    def __post_init__(self):
        # Accept plain dicts / lists for convenience and freeze them into validated specs.
        for attr, cls in (("dataset", PluginSpec), ("model", ModelSpec), ("budget", BudgetSpec)):
            value = getattr(self, attr)
            if not isinstance(value, cls):
                try:
                    value = cls.model_validate(value)
                except Exception as err:  # pydantic.ValidationError
                    raise MmalError(f"benchmark '{self.name}': {attr}: {err}".splitlines()[0]) from None
                object.__setattr__(self, attr, value)
        seeds = tuple(int(s) for s in self.seeds)
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise MmalError(f"benchmark '{self.name}': seeds must be distinct non-negative integers, got {list(self.seeds)}")
        object.__setattr__(self, "seeds", seeds)
        metrics = tuple(self.metrics)
        if not metrics or metrics[0] != "accuracy":
            raise MmalError(f"benchmark '{self.name}': metrics must start with 'accuracy', got {list(metrics)}")
        object.__setattr__(self, "metrics", metrics)

    # -- identity ----------------------------------------------------------------------
    def setting(self) -> dict[str, Any]:
        """Dataset, model and budget in canonical form (what a stored run is matched on)."""
        return {
            "dataset": self.dataset.canonical(),
            "model": self.model.canonical(),
            "budget": self.budget.model_dump(),
        }

    def canonical(self) -> dict[str, Any]:
        """The whole frozen spec as a canonical dict (what is hashed)."""
        return {
            "name": self.name,
            "version": self.version,
            **self.setting(),
            "seeds": list(self.seeds),
            "metrics": list(self.metrics),
        }

    @property
    def hash(self) -> str:
        """Content hash of :meth:`canonical` (16 hex digits)."""
        return content_hash(self.canonical())

    @property
    def n_rounds(self) -> int:
        """Models trained per seed: the initial one plus one per query round."""
        return len(self.budget.schedule) + 1

    def labeled_counts(self) -> list[int]:
        """Labeled-set size at each round: ``[initial, initial + s0, ...]``."""
        counts = [self.budget.initial]
        for size in self.budget.schedule:
            counts.append(counts[-1] + size)
        return counts

    def matches_run(self, run: dict[str, Any]) -> bool:
        """True when a stored run (a row of :meth:`mmal_core.store.Store.runs`) belongs here."""
        if run.get("seed") not in self.seeds or run.get("dataset") != self.dataset.name:
            return False
        mine = self.setting()
        return (
            _canon(run.get("dataset_params")) == _canon(mine["dataset"]["params"])
            and _canon(run.get("model")) == _canon(mine["model"])
            and _canon(run.get("budget")) == _canon(mine["budget"])
        )

    # -- running -----------------------------------------------------------------------
    def experiment_name(self, strategy: PluginSpec) -> str:
        """Name of the experiment ``mmal bench run`` stores (one per benchmark and strategy)."""
        return f"bench:{self.name}:{strategy.label}"

    def experiment_config(self, strategy: PluginSpec) -> ExperimentConfig:
        """The experiment that runs ``strategy`` on this benchmark."""
        return ExperimentConfig(
            name=self.experiment_name(strategy),
            description=f"benchmark {self.name} v{self.version} (hash {self.hash})",
            dataset=[self.dataset],
            model=self.model,
            budget=self.budget,
            strategies=[strategy],
            seeds=list(self.seeds),
        )

    def available(self) -> tuple[bool, str]:
        """(True, "") when its dataset and model plugins and the plugins of the metrics it
        compares are installed, else (False, why)."""
        from .plugins import get_plugin_manager

        pm = get_plugin_manager()
        try:
            datasets = pm.entries("dataset")
            models = pm.entries("model")
            metrics = pm.entries("metric")
        except MmalError as err:
            return False, str(err)
        if self.dataset.name not in datasets:
            return False, f"dataset '{self.dataset.name}' is not installed"
        if self.model.name not in models:
            return False, f"model '{self.model.name}' is not installed"
        for path in self.metrics:
            if path.split(".")[0] not in metrics:
                return False, f"metric '{path}' is not a registered metric{did_you_mean(path.split('.')[0], metrics)}"
        return True, ""


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _synthetic(name: str, dataset: str, params: dict[str, Any], summary: str) -> Benchmark:
    # Small on purpose: one `mmal bench run` (3 seeds x 5 rounds) takes seconds on a CPU, and
    # the server replays a submission in about as long.
    return Benchmark(
        name=name,
        dataset=PluginSpec(name=dataset, params={"n_train": 1000, "n_test": 500, **params}),
        model=ModelSpec(name="fusion-mlp", params={"fusion": "concat", "epochs": 20, "device": "cpu"}),
        budget=BudgetSpec(initial=20, per_round=20, rounds=4),
        seeds=(0, 1, 2),
        version="1",
        summary=summary,
    )


def canonical_suite() -> list[Benchmark]:
    """mmal's canonical benchmarks: one per synthetic pitfall setting, one per real dataset.

    The real-dataset benchmarks are always listed; ``mmal bench list`` marks them unavailable
    until their dataset plugin is installed.
    """
    suite = [
        _synthetic("synthetic-missing", "synthetic-missing", {},
                   "pitfall: modalities missing at random in pool and test"),
        _synthetic("synthetic-difficulty", "synthetic-difficulty", {},
                   "pitfall: one modality much harder to learn from than the other"),
    ]
    for interaction, what in (
        ("redundant", "both modalities carry the same class information"),
        ("unique", "only one modality carries the class"),
        ("synergy", "the class is only visible from both modalities together"),
        ("mixture", "a mixture of redundant, unique and synergistic samples"),
    ):
        suite.append(_synthetic(f"synthetic-{interaction}", "synthetic-interaction",
                                {"interaction": interaction}, f"interaction pitfall: {what}"))
    for dataset, what in (("av-digits", "audio-visual spoken digits"), ("clipart", "clipart images with captions")):
        suite.append(Benchmark(
            name=dataset,
            dataset=PluginSpec(name=dataset),
            model=ModelSpec(name="fusion-mlp", params={"fusion": "concat", "epochs": 20, "device": "cpu"}),
            budget=BudgetSpec(initial=20, per_round=20, rounds=4),
            seeds=(0, 1, 2),
            version="1",
            summary=f"real data: {what}",
        ))
    return suite


# -- registry access ---------------------------------------------------------------------------
def all_benchmarks() -> dict[str, Benchmark]:
    """Every registered benchmark by name (plugins included)."""
    from .plugins import get_plugin_manager

    out: dict[str, Benchmark] = {}
    for name, entry in get_plugin_manager().entries("benchmark").items():
        if not isinstance(entry.obj, Benchmark):
            raise MmalError(
                f"plugin '{entry.plugin}' ({entry.dist}) registered benchmark '{name}' as "
                f"{type(entry.obj).__name__}, expected mmal_core.benchmarks.Benchmark"
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
    from .plugins import get_plugin_manager

    entry = get_plugin_manager().entry("strategy", strategy_name)
    return entry.dist, entry.version


def run_benchmark(bench: Benchmark, strategy: PluginSpec, db_path: str, callbacks=None,
                  plugin_version: str | None = None):
    """Run (or resume) ``strategy`` on ``bench`` into ``db_path``; returns the run outcomes.

    plugin_version: when given, the installed version of the strategy's distribution must
    equal it (so a recorded result names the exact code that produced it).
    """
    from .loop import run_experiment

    available, why = bench.available()
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
