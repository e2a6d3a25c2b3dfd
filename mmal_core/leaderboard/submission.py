"""Leaderboard submissions: a versioned JSON document, built from the results database, and
its verification by replay.

The document (schema version :data:`SCHEMA_VERSION`)::

    {"schema_version": 1,
     "benchmark": {"name": "synthetic-redundant", "hash": "8a7c9852427e7043"},
     "strategy": {"name": "margin", "label": "margin", "params": {}},
     "plugin": {"distribution": "mmal-strategies", "version": "0.1.0", "source_hash": "..."},
     "environment": {"python": "3.11.2", "torch": "2.13.0", "mmal": "0.1.0", "device": "cpu", ...},
     "runs": [{"seed": 0, "initial_ids": [...],
               "rounds": [{"round": 0, "n_labeled": 20, "queried_ids": [...],
                           "metrics": {"accuracy": 0.61, ...}, "timings": {"train": 0.2, ...}}, ...]},
              ...]}

Verification (:func:`verify_submission`) trusts nothing but the benchmark hash: it rebuilds
the benchmark's dataset for every seed, checks that the initial set is the one the loop draws
for that seed, that every round queries the right number of distinct, unlabeled pool ids,
and then, round by round, retrains the benchmark's model on the claimed labeled set with
:func:`mmal_core.loop.train_round_model` and recomputes the metrics with
:func:`mmal_core.loop.round_metrics` -- the very functions the loop uses, so a run replayed on
CPU gives the numbers it recorded. Each compared metric (the benchmark's ``metrics``) may
differ from the claim by at most :func:`metric_tolerance` (one test sample's worth, to allow
for floating-point differences between machines); leaderboards then rank the *replayed*
values, never the claimed ones.

The replay also re-runs the strategy's selection on each replayed model
(:func:`_replay_selection`, built from the loop's own helpers; it mirrors the selection step
of :func:`mmal_core.loop.execute_run`). A submission is verified only when this machine has
the strategy's plugin with the submission's source hash and that strategy queries the
claimed ids in every round of every seed; otherwise it is rejected naming the first seed
and round that differs (ids picked by hand, or by another strategy, are never ranked).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import sys
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import format_validation_error
from ..errors import MmalError
from ..plugins import benchmark_availability

SCHEMA_VERSION = 1


# -- the schema -------------------------------------------------------------------------------
def _display_text(value: str) -> str:
    """A name shown on leaderboards: no control or invisible formatting characters (bidi
    overrides, zero-width spaces: they let one label pose as another) and no leading or
    trailing whitespace (``"margin "`` would look like ``"margin"``)."""
    if value != value.strip():
        raise ValueError("leading or trailing whitespace is not allowed")
    bad = next((ch for ch in value if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")), None)
    if bad is not None:
        raise ValueError(f"control or invisible formatting character U+{ord(bad):04X} is not allowed")
    return value


#: A string shown to readers (names, labels, versions).
DisplayText = Annotated[str, AfterValidator(_display_text)]

#: Size limits of the free-form parts of a document (bytes of compact JSON, or entries).
MAX_PARAMS_BYTES = 4096
MAX_ENVIRONMENT_BYTES = 2048
MAX_ENVIRONMENT_KEYS = 32
MAX_METRICS_BYTES = 8192
MAX_TIMINGS_KEYS = 32
MAX_KEY_CHARS = 100


def _json_bytes_at_most(limit: int):
    """A validator: the value, written as compact JSON, takes at most ``limit`` bytes and its
    keys at most :data:`MAX_KEY_CHARS` characters."""
    def check(value: Any) -> Any:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > limit:
            raise ValueError(f"at most {limit} bytes of JSON are allowed, got {size}")
        long_key = next((k for k in _keys(value) if len(k) > MAX_KEY_CHARS), None)
        if long_key is not None:
            raise ValueError(f"keys of at most {MAX_KEY_CHARS} characters are allowed, got one of {len(long_key)}")
        return value
    return AfterValidator(check)


def _keys(value: Any):
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield from (str(k) for k in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class _Doc(BaseModel):
    # strict: a seed of ``true`` or an id of ``"5"`` is a schema error, not silently coerced
    model_config = ConfigDict(extra="forbid", strict=True)


class BenchmarkRef(_Doc):
    name: DisplayText = Field(min_length=1, max_length=200)
    hash: str = Field(pattern=r"^[0-9a-f]{16}$")


class StrategyRef(_Doc):
    name: DisplayText = Field(min_length=1, max_length=200)
    label: DisplayText = Field(min_length=1, max_length=200)
    params: Annotated[dict[str, Any], _json_bytes_at_most(MAX_PARAMS_BYTES)] = Field(default_factory=dict)


class PluginRef(_Doc):
    distribution: DisplayText = Field(min_length=1, max_length=200)
    version: DisplayText = Field(min_length=1, max_length=100)
    source_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class Environment(BaseModel):
    model_config = ConfigDict(extra="allow")
    python: str = Field(max_length=100)
    torch: str | None = Field(default=None, max_length=100)
    mmal: str = Field(max_length=100)
    device: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _small(self) -> "Environment":
        fields = self.model_dump()
        if len(fields) > MAX_ENVIRONMENT_KEYS:
            raise ValueError(f"at most {MAX_ENVIRONMENT_KEYS} keys are allowed, got {len(fields)}")
        _json_bytes_at_most(MAX_ENVIRONMENT_BYTES).func(fields)
        return self


class RoundClaim(_Doc):
    round: int = Field(ge=0)
    n_labeled: int = Field(ge=0)
    queried_ids: list[int] = Field(max_length=1_000_000)
    metrics: Annotated[dict[str, Any], _json_bytes_at_most(MAX_METRICS_BYTES)]
    timings: Annotated[dict[str, float], _json_bytes_at_most(MAX_METRICS_BYTES)] = Field(
        default_factory=dict, max_length=MAX_TIMINGS_KEYS)


class SeedClaim(_Doc):
    seed: int = Field(ge=0)
    initial_ids: list[int] = Field(max_length=1_000_000)
    rounds: list[RoundClaim] = Field(min_length=1, max_length=1000)


class Submission(_Doc):
    """A leaderboard submission (schema version 1)."""

    schema_version: Literal[1]
    benchmark: BenchmarkRef
    strategy: StrategyRef
    plugin: PluginRef
    environment: Environment
    runs: list[SeedClaim] = Field(min_length=1, max_length=64)


def parse_submission(data: Any, source: str = "submission") -> Submission:
    """Validate a decoded JSON document; raises :class:`MmalError` naming the key at fault.

    The schema version is checked first, so a document of another version gets that
    message rather than a list of unknown keys.
    """
    if not isinstance(data, dict):
        raise MmalError(f"{source}: expected a JSON object at the top level, got {type(data).__name__}")
    if "schema_version" not in data:
        raise MmalError(f"{source}: schema_version: required key is missing (this mmal reads version {SCHEMA_VERSION})")
    version = data["schema_version"]
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise MmalError(f"{source}: schema_version {version!r} is not supported; this mmal reads version {SCHEMA_VERSION}")
    try:
        return Submission.model_validate(data)
    except ValidationError as err:
        raise MmalError(format_validation_error(err, source)) from None


# -- building a submission from the results database ---------------------------------------------------
def source_hash(strategy_name: str) -> str:
    """SHA-256 (hex) of the Python sources of the package that defines strategy ``strategy_name``.

    Every ``*.py`` file under the top-level package, in sorted order, with its relative path.
    """
    from ..plugins import get_plugin_manager

    cls = get_plugin_manager().get("strategy", strategy_name)
    top = cls.__module__.split(".")[0]
    module = sys.modules.get(top) or importlib.import_module(top)
    digest = hashlib.sha256()
    paths = getattr(module, "__path__", None)
    if paths:
        root = Path(list(paths)[0])
        files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    else:
        root_file = Path(inspect.getfile(module))
        root, files = root_file.parent, [root_file]
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _select_runs(store, selector: str, strategy: str | None) -> tuple[int, list[dict[str, Any]]]:
    if selector.startswith("run:"):
        number = selector[4:]
        runs = [r for r in store.runs() if number.isdigit() and r["id"] == int(number)]
        if not runs:
            raise MmalError(f"{selector}: no such run in {store.path}")
        experiment_id = runs[0]["experiment_id"]
        strategy = strategy or runs[0]["strategy_label"]
    else:
        experiment_id = store.resolve_experiment(selector)
    runs = store.runs(experiment_id)
    labels = sorted({r["strategy_label"] for r in runs})
    if strategy is not None:
        if strategy not in labels:
            raise MmalError(f"--strategy {strategy}: experiment {selector} has no runs of it; it has {', '.join(labels)}")
        runs = [r for r in runs if r["strategy_label"] == strategy]
    elif len(labels) > 1:
        raise MmalError(f"{selector}: the experiment holds several strategies ({', '.join(labels)}); pick one with --strategy")
    return experiment_id, runs


def build_submission(store, selector: str, strategy: str | None = None) -> dict[str, Any]:
    """The submission document for one strategy's runs of a benchmark in ``store``.

    selector: an experiment name or id (``mmal bench run`` prints it), or ``run:ID`` for the
    experiment and strategy of that run. Every seed of the benchmark must be finished.
    """
    from .benchmarks import all_benchmarks, strategy_distribution

    experiment_id, runs = _select_runs(store, selector, strategy)
    finished = [r for r in runs if r["status"] == "finished"]
    if not finished:
        raise MmalError(f"{selector}: no finished runs to submit (run `mmal bench run` to finish them)")
    benches = [b for b in all_benchmarks().values() if b.matches_run(finished[0])]
    if not benches:
        raise MmalError(
            f"{selector}: its runs match no installed benchmark (dataset, model, budget and seeds must equal "
            "a benchmark's; see `mmal bench list`)"
        )
    bench = benches[0]
    by_seed: dict[int, dict[str, Any]] = {}
    for run in finished:
        if bench.matches_run(run):
            by_seed[run["seed"]] = run
    missing = sorted(set(bench.seeds) - set(by_seed))
    if missing:
        raise MmalError(
            f"{selector}: benchmark '{bench.name}' needs seeds {list(bench.seeds)}, runs for {missing} are missing "
            f"or unfinished; run `mmal bench run {bench.name} --strategy {finished[0]['strategy_label']}`"
        )
    first = by_seed[bench.seeds[0]]
    dist, version = strategy_distribution(first["strategy"])
    env = store.experiment_row(experiment_id)["environment"]
    seeds = []
    for seed in bench.seeds:
        run = by_seed[seed]
        rounds = store.rounds(run["id"])
        seeds.append({
            "seed": seed,
            "initial_ids": run["initial_ids"],
            "rounds": [{"round": r.round, "n_labeled": r.n_labeled, "queried_ids": r.queried_ids,
                        "metrics": r.metrics, "timings": r.timings} for r in rounds],
        })
    doc = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": {"name": bench.name, "hash": bench.hash},
        "strategy": {"name": first["strategy"], "label": first["strategy_label"], "params": first["strategy_params"]},
        "plugin": {"distribution": dist, "version": version, "source_hash": source_hash(first["strategy"])},
        "environment": {
            "python": env.get("python", sys.version.split()[0]),
            "torch": env.get("torch"),
            "mmal": env.get("mmal", "?"),
            "device": env.get("device"),
            "platform": env.get("platform"),
            "numpy": env.get("numpy"),
        },
        "runs": seeds,
    }
    parse_submission(json.loads(json.dumps(doc)), "built submission")  # our own output must be valid
    return doc


# -- verification by replay ------------------------------------------------------------------------------
def metric_tolerance(n_test: int) -> float:
    """Largest accepted |claimed - replayed| for a metric: one test sample's worth (1 / n_test)."""
    return 1.0 / max(int(n_test), 1)


@dataclass
class Verdict:
    """Outcome of a replay: ``status`` is ``verified`` or ``rejected`` (then ``reason`` says why)."""

    status: str
    reason: str = ""
    replayed: list[dict[str, Any]] = field(default_factory=list)
    rounds_trained: int = 0
    #: Outcome of re-running the strategy's selection: "reproduced ...", "differs ..." or
    #: "not checked: why" (the last two reject unless ``require_selection`` is off).
    selection: str = ""


class ReplayCache:
    """Thread-safe LRU of replayed round metrics, keyed by (benchmark hash, seed, round, labeled set).

    Every strategy starts from the same initial set, so round 0 of each seed is trained once
    per benchmark; resubmissions cost nothing.
    """

    def __init__(self, size: int = 4096):
        self.size = size
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._datasets: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: str, metrics: dict[str, Any]) -> None:
        with self._lock:
            self._items[key] = metrics
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def model(self, key: str) -> Any:
        """A trained round model kept for selection replays (None when not cached)."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        return None

    def put_model(self, key: str, model: Any, size: int = 256) -> None:
        with self._lock:
            self._models[key] = model
            self._models.move_to_end(key)
            while len(self._models) > size:
                self._models.popitem(last=False)

    def dataset(self, bench, seed: int):
        from ..plugins import load_dataset

        key = (bench.hash, int(seed))
        with self._lock:
            if key in self._datasets:
                self._datasets.move_to_end(key)
                return self._datasets[key]
        dataset = load_dataset(bench.dataset.name, seed=seed, **bench.dataset.params)
        with self._lock:
            self._datasets[key] = dataset
            while len(self._datasets) > 8:
                self._datasets.popitem(last=False)
        return dataset


def _reject(reason: str) -> Verdict:
    return Verdict("rejected", reason)


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (NaN would compare as 'within tolerance' otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _selection_strategy(doc: Submission) -> tuple[Any, str]:
    """(strategy instance, "") when this machine has the submission's strategy with the same
    distribution and source hash; else (None, why the selection is not re-run)."""
    from .benchmarks import strategy_distribution
    from ..config import PluginSpec
    from ..loop import build_strategy

    name = doc.strategy.name
    try:
        dist, _ = strategy_distribution(name)
        if dist != doc.plugin.distribution:
            return None, f"not checked: strategy '{name}' comes from {dist} here, not {doc.plugin.distribution}"
        if source_hash(name) != doc.plugin.source_hash:
            return None, f"not checked: the source of {dist} here differs from the submission's"
        return build_strategy(PluginSpec(name=name, params=doc.strategy.params)), ""
    except MmalError as err:
        return None, f"not checked: {err}"


def _replay_selection(strategy: Any, name: str, model: Any, dataset: Any, metrics: dict[str, Any],
                      is_labeled: np.ndarray, budget: int, seed: int, rnd: int) -> list[int]:
    """Sample ids the strategy queries in round ``rnd``, computed exactly as the loop does."""
    from ..loop import select_round

    labeled, unlabeled = np.flatnonzero(is_labeled), np.flatnonzero(~is_labeled)
    chosen = select_round(strategy, name, model, dataset, labeled, unlabeled, metrics, budget, seed, rnd)
    return dataset.train.ids[chosen].tolist()


def verify_submission(doc: Submission, cache: ReplayCache | None = None, check_selection: bool = True,
                      require_selection: bool = True) -> Verdict:
    """Replay ``doc`` and compare; never raises for a bad claim (it is rejected with a reason).

    check_selection: re-run the strategy's selection of every round on the replayed model
    (needs the strategy's plugin here with the submission's source hash) and report in
    :attr:`Verdict.selection` whether it queries the claimed ids.
    require_selection: reject unless that re-run reproduced every round (what a leaderboard
    needs; off, the outcome is only reported).
    """
    verdict = _verify(doc, cache, check_selection, require_selection)
    if (require_selection and verdict.status == "verified"
            and not verdict.selection.startswith("reproduced")):
        return Verdict("rejected", f"selection not reproduced: {verdict.selection}", [], verdict.rounds_trained,
                       verdict.selection)
    return verdict


def _replayable_benchmark(doc: Submission) -> tuple[Any, str]:
    """(the benchmark the submission names, "") when this server can replay it, else (None, why not)."""
    from .benchmarks import all_benchmarks, benchmark_by_hash

    bench = benchmark_by_hash(doc.benchmark.hash)
    if bench is None:
        known = ", ".join(f"{b.name}={b.hash}" for b in all_benchmarks().values())
        return None, f"unknown benchmark hash {doc.benchmark.hash} (this server knows {known})"
    if bench.name != doc.benchmark.name:
        return None, f"benchmark hash {bench.hash} is '{bench.name}', not '{doc.benchmark.name}'"
    available, why = benchmark_availability(bench)
    if not available:
        return None, f"benchmark '{bench.name}' cannot be replayed here: {why}"
    seeds = [run.seed for run in doc.runs]
    if sorted(seeds) != sorted(bench.seeds):
        return None, f"benchmark '{bench.name}' needs exactly the seeds {list(bench.seeds)}, got {seeds}"
    return bench, ""


def _claimed_picks(claim: RoundClaim, r: int, count: int, want: int, position_of: dict[int, int],
                   is_labeled: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The pool positions a round claims to query, or (None, why the claim cannot be right)."""
    if claim.round != r:
        return None, f"round number {claim.round}, expected {r}"
    if claim.n_labeled != count or int(is_labeled.sum()) != count:
        return None, f"n_labeled {claim.n_labeled}, the benchmark's schedule gives {count}"
    if len(claim.queried_ids) != want:
        return None, f"{len(claim.queried_ids)} queried ids, the schedule buys {want}"
    if len(set(claim.queried_ids)) != len(claim.queried_ids):
        return None, "queried_ids contain duplicates"
    outside = [i for i in claim.queried_ids if i not in position_of]
    if outside:
        return None, f"queried id {outside[0]} is not in the pool"
    picks = np.array([position_of[i] for i in claim.queried_ids], dtype=np.int64)
    if picks.size and is_labeled[picks].any():
        return None, f"queried id {int(ids[picks[is_labeled[picks]][0]])} was already labeled"
    return picks, ""


def _replay_round(bench: Any, cache: ReplayCache, dataset: Any, labeled: np.ndarray, seed: int, r: int, state: Any,
                  wants_model: bool) -> tuple[dict[str, Any], Any, Any, int]:
    """(metrics, model, warm-start state, models trained: 0 or 1) of one replayed round.

    Rounds that start from the same labeled set are trained once per cache (not under warm
    start, whose model depends on the previous round's)."""
    from ..loop import round_metrics, train_round_model

    key = hashlib.sha256(json.dumps([bench.hash, seed, r, labeled.tolist()]).encode()).hexdigest()
    metrics = None if bench.model.warm_start else cache.get(key)
    model = cache.model(key) if wants_model else None
    if metrics is not None and (model is not None or not wants_model):
        return metrics, model, state, 0
    model = train_round_model(bench.model, dataset, labeled, seed, r, init_state=state)
    metrics = json.loads(json.dumps(round_metrics(model, dataset, labeled), default=float))
    if bench.model.warm_start:
        state = model.state()
    else:
        cache.put(key, metrics)
        if wants_model:
            cache.put_model(key, model)
    return metrics, model, state, 1


def _metric_difference(paths: Iterable[str], claimed_metrics: dict[str, Any], metrics: dict[str, Any],
                       tolerance: float) -> str:
    """Why the claimed metrics of a round differ from the replay's ("" when they agree)."""
    from ..metrics import get_metric

    for path in paths:
        claimed = _number(get_metric(claimed_metrics, path))
        actual = _number(get_metric(metrics, path))
        if claimed is None:
            return f"metric '{path}' is missing or not a finite number in the claim"
        if actual is None:
            return f"the replay produced no metric '{path}'"
        if abs(claimed - actual) > tolerance:
            return f"claimed {path} {claimed:.6g} but the replay gives {actual:.6g} (tolerance {tolerance:.3g})"
    return ""


def _verify(doc: Submission, cache: ReplayCache | None, check_selection: bool, stop_on_difference: bool) -> Verdict:
    from ..loop import _STREAM_INITIAL, derive_seed, initial_set

    cache = cache or ReplayCache()
    bench, reason = _replayable_benchmark(doc)
    if reason:
        return _reject(reason)
    counts = bench.labeled_counts()
    schedule = bench.budget.schedule
    replayed: list[dict[str, Any]] = []
    trained = 0
    strategy, selection = _selection_strategy(doc) if check_selection else (None, "not checked")
    if strategy is None and stop_on_difference:
        return Verdict("verified", "", [], 0, selection)
    selection_rounds = 0
    for run in sorted(doc.runs, key=lambda r: r.seed):
        where = f"seed {run.seed}"
        if strategy is not None:  # a fresh instance per run, as the loop builds one per run
            strategy, selection = _selection_strategy(doc)
        dataset = cache.dataset(bench, run.seed)
        pool = dataset.train
        tolerance = metric_tolerance(len(dataset.test))
        position_of = {int(i): p for p, i in enumerate(pool.ids)}
        rng = np.random.default_rng(derive_seed(run.seed, _STREAM_INITIAL))
        expected = initial_set(pool.labels, bench.budget.initial, bench.budget.stratified, rng)
        if sorted(run.initial_ids) != sorted(pool.ids[expected].tolist()):
            return _reject(f"{where}: initial_ids are not the benchmark's initial set for this seed")
        if len(run.rounds) != bench.n_rounds:
            return _reject(f"{where}: {len(run.rounds)} rounds, benchmark '{bench.name}' has {bench.n_rounds}")
        is_labeled = np.zeros(len(pool), dtype=bool)
        is_labeled[expected] = True
        seed_metrics, state = [], None
        for r, claim in enumerate(run.rounds):
            at = f"{where} round {r}"
            want = schedule[r] if r < len(schedule) else 0
            picks, reason = _claimed_picks(claim, r, counts[r], want, position_of, is_labeled, pool.ids)
            if reason:
                return _reject(f"{at}: {reason}")
            labeled = np.flatnonzero(is_labeled)
            wants_model = strategy is not None and want > 0
            try:
                metrics, model, state, fresh = _replay_round(bench, cache, dataset, labeled, run.seed, r, state,
                                                             wants_model)
            except MmalError as err:
                return _reject(f"{at}: replay failed: {err}")
            trained += fresh
            reason = _metric_difference(bench.metrics, claim.metrics, metrics, tolerance)
            if reason:
                return _reject(f"{at}: {reason}")
            if wants_model:
                try:
                    chosen = _replay_selection(strategy, doc.strategy.name, model, dataset, dict(metrics),
                                               is_labeled, want, run.seed, r)
                except Exception as err:  # a strategy failing here says nothing about the claim
                    strategy, selection = None, f"not checked: the strategy failed at {at}: {type(err).__name__}: {err}"
                else:
                    if sorted(chosen) != sorted(claim.queried_ids):
                        strategy = None
                        selection = f"differs: at {at} the server's copy of the strategy queries other ids"
                if strategy is None and stop_on_difference:  # no need to replay the rest
                    return Verdict("verified", "", [], trained, selection)
                if strategy is not None:
                    selection_rounds += 1
            seed_metrics.append(metrics)
            is_labeled[picks] = True
        replayed.append({"seed": run.seed, "n_labeled": counts, "metrics": seed_metrics})
    if strategy is not None:
        selection = f"reproduced: the server's copy of the strategy queried the claimed ids in all {selection_rounds} rounds"
    return Verdict("verified", "", replayed, trained, selection)
