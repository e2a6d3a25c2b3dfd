"""Benchmarks: named, versioned, frozen experiment specs with a content hash.

A benchmark fixes everything about an active-learning experiment except the query strategy:
the dataset and its parameters, the model, the budget schedule, the seeds and the metrics
that are compared. Its :attr:`Benchmark.hash` is the SHA-256 (16 hex digits) of that
content, so results are comparable only when they were produced under the same hash; a
changed spec is a new hash even if the name stays.

Benchmarks are plugins like datasets and strategies: a plugin returns :class:`Benchmark`
objects from the ``mmal_register_benchmarks`` hook. mmal's canonical suite (one benchmark
per synthetic pitfall setting, and one per real dataset when that dataset is installed) is
registered by :mod:`mmal_core.builtin` through that same hook; the lookups by name and
``mmal bench run`` are in :mod:`mmal_core.leaderboard.benchmarks`.

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
from .errors import MmalError

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


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
