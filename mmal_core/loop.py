"""The pool-based, batch-mode active-learning loop.

For every (dataset, seed, strategy) of an experiment::

    labeled = initial set (random, or stratified by class)
    for round r = 0 .. len(schedule):
        model = fresh network (or the previous round's weights with warm_start), trained on labeled
        metrics = evaluate(model, test)
        if r < len(schedule):
            view = PoolView.from_model(model, pool, unlabeled, labeled, strategy.requires)
            picks = strategy.select(view, schedule[r], rng)
        commit round r (labeled count, metrics, queried ids, timings)
        labeled += picks

All randomness comes from the run's seed: the initial set from (seed, "initial"), model
weights and batch order of round r from (seed, r), the strategy's rng from (seed, r) too. A
round therefore depends only on the labeled set it starts from, so a run killed at any point
and started again reproduces the uninterrupted result exactly (on CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .plugins import load_dataset
from .version import __version__
from .config import BudgetSpec, ExperimentConfig, MetricsSpec, ModelSpec, PluginSpec, content_hash
from .data import MultimodalDataset
from .errors import MmalError
from .metrics import CONTEXT_NEEDS, MetricContext, aubc, compute_metrics
from .model import Model
from .params import construct
from .plugins import get_plugin_manager
from .store import RoundRecord, Store
from .strategy import GlobalRandomGuard
from .utilization import check_modality_count, query_metrics, shared_probes
from .view import PoolView

_STREAM_INITIAL, _STREAM_MODEL, _STREAM_STRATEGY = 101, 202, 303


def derive_seed(*parts: int) -> int:
    """A 32-bit seed derived from integer parts (stable across platforms and Python runs)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one active-learning run."""

    dataset: PluginSpec
    strategy: PluginSpec
    seed: int
    model: ModelSpec
    budget: BudgetSpec
    metrics: MetricsSpec = MetricsSpec()

    def canonical(self) -> dict[str, Any]:
        out = {
            "dataset": self.dataset.canonical(),
            "strategy": self.strategy.canonical(),
            "seed": self.seed,
            "model": self.model.canonical(),
            "budget": self.budget.model_dump(),
        }
        if self.metrics != MetricsSpec():  # only when set, so run keys of default configs stay stable
            out["metrics"] = self.metrics.model_dump()
        return out

    @property
    def key(self) -> str:
        return content_hash(self.canonical())

    @property
    def label(self) -> str:
        return f"{self.dataset.label} / {self.strategy.label} / seed {self.seed}"


@dataclass
class RunOutcome:
    spec: RunSpec
    run_id: int
    status: str
    n_labeled: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    resumed_rounds: int = 0
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


class Callbacks:
    """Progress hooks; the CLI implements them with rich progress bars."""

    def run_started(self, spec: RunSpec, total_rounds: int, done_rounds: int) -> None: ...

    def round_finished(self, spec: RunSpec, record: RoundRecord) -> None: ...

    def run_finished(self, outcome: RunOutcome) -> None: ...


# -- a run that fails: one line for it, whether another attempt can help, its outcome -----------
def describe_error(err: BaseException) -> str:
    """One line for a failed attempt: the message of a user error, else type, message and place."""
    if isinstance(err, MmalError):
        return str(err)
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    text = " ".join(str(err).split()) or "no message"
    return f"{type(err).__name__}: {text}{where}"


class NotRetried(str):
    """The error of an attempt that another attempt would only repeat: an :class:`MmalError`
    (a plugin that breaks the contract, a corrupt cache, a bad parameter) fails the same way
    every time, unlike a killed worker or an out-of-memory error, so it is not retried."""


def error_of(err: BaseException) -> str:
    """One line for a failed attempt, marked :class:`NotRetried` when retrying cannot help."""
    text = describe_error(err)
    return NotRetried(text) if isinstance(err, MmalError) else text


def failed_outcome(store: Store, experiment_id: int, spec: RunSpec, error: str) -> RunOutcome:
    """The outcome of a run that used up its attempts: the rounds it kept, and why it stopped."""
    found = store.find_run(experiment_id, spec.key)
    outcome = RunOutcome(spec, found[0] if found else -1, "failed", error=error)
    if found is not None:
        rounds = store.rounds(found[0])
        outcome.resumed_rounds = len(rounds)
        outcome.n_labeled = [r.n_labeled for r in rounds]
        outcome.accuracy = [r.metrics.get("accuracy", float("nan")) for r in rounds]
        store.set_status(found[0], "failed", error)
    return outcome


def notify_failure(callbacks: Callbacks, spec: RunSpec, attempt: int, reason: str, will_retry: bool) -> None:
    hook = getattr(callbacks, "run_failed", None)
    if hook is not None:
        hook(spec, attempt, reason, will_retry)


def environment() -> dict[str, Any]:
    """Package versions and platform facts recorded with every experiment."""
    import importlib.metadata as md

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "mmal": __version__,
        "numpy": np.__version__,
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # torch missing is reported by the model when it trains
        env["torch"] = None
    pm = get_plugin_manager()
    pm.load()
    env["plugins"] = {info.dist: info.version for info in pm.plugins.values() if info.ok}
    for name in ("pluggy", "pydantic"):
        try:
            env[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return env


def run_specs(config: ExperimentConfig) -> list[RunSpec]:
    """The runs of an experiment, in execution order (dataset, seed, strategy)."""
    return [
        RunSpec(d, s, seed, config.model, config.budget, config.metrics)
        for d in config.dataset
        for seed in config.seeds
        for s in config.strategies
    ]


def build_strategy(spec: PluginSpec):
    cls = get_plugin_manager().get("strategy", spec.name)
    return construct(cls, spec.params, f"strategy '{spec.name}'")


def build_model(spec: ModelSpec):
    cls = get_plugin_manager().get("model", spec.name)
    return construct(cls, spec.params, f"model '{spec.name}'")


def validate_experiment(config: ExperimentConfig, source: str = "config", devices_here: bool = True) -> None:
    """Check every name, parameter and budget before anything is written.

    devices_here: the runs execute on this machine, so a ``device: cuda`` parameter (model
    or strategy) needs a GPU that torch sees here (False for a Ray cluster).

    Raises :class:`MmalError` naming ``source`` and the key at fault.
    """
    pm = get_plugin_manager()
    try:
        model = build_model(config.model)
    except MmalError as err:
        raise type(err)(f"{source}: model: {err}") from None  # a PluginError stays one (exit 3)
    if devices_here:
        _check_device(model, f"{source}: model: model '{config.model.name}'")
    provided = model.provided()
    for i, spec in enumerate(config.strategies):
        try:
            strategy = build_strategy(spec)
        except MmalError as err:
            raise type(err)(f"{source}: strategies[{i}]: {err}") from None
        if devices_here:
            _check_device(strategy, f"{source}: strategies[{i}]: strategy '{spec.name}'")
        # labeled_* fields are the same model outputs computed on the labeled rows
        missing = {r for r in strategy.requires if r.removeprefix("labeled_") not in provided}
        if missing:
            raise MmalError(
                f"{source}: strategies[{i}]: strategy '{spec.name}' needs {sorted(missing)} but model "
                f"'{config.model.name}' with these parameters does not provide it"
                + (" (it has no unimodal heads)" if "modality_probs" in missing else "")
            )
    for i, spec in enumerate(config.dataset):
        try:
            pm.get("dataset", spec.name)
            dataset = load_dataset(spec.name, seed=config.seeds[0], **spec.params)
        except MmalError as err:
            raise type(err)(f"{source}: dataset[{i}]: {err}") from None
        check_budget(config.budget, dataset, f"{source}: budget")
        if config.metrics.utilization is True:
            check_modality_count(len(dataset.modalities), f"{source}: metrics.utilization: dataset[{i}]")


def _check_device(obj: Any, where: str) -> None:
    """A model or strategy with the ``device: auto|cpu|cuda`` parameter asking for a GPU that
    is not there fails every run the same way: say so before anything is written."""
    if getattr(obj, "device", None) != "cuda":
        return
    try:
        import torch
    except ImportError:
        return  # reported by the model when it trains
    if not torch.cuda.is_available():
        raise MmalError(f"{where}: parameter 'device': cuda was asked for but torch sees no GPU; use auto or cpu")


def check_budget(budget: BudgetSpec, dataset: MultimodalDataset, where: str) -> None:
    pool = len(dataset.train)
    if budget.total > pool:
        raise MmalError(
            f"{where}: the schedule labels {budget.total} samples but dataset '{dataset.name}' has a pool of {pool}"
        )


def initial_set(labels: np.ndarray, size: int, stratified: bool, rng: np.random.Generator) -> np.ndarray:
    """Positions of the initial labeled set (sorted).

    stratified: the same number of samples from every class (remainder to random classes),
    taking all of a class that is too small.
    """
    n = len(labels)
    if size > n:
        raise MmalError(f"budget.initial: {size} is larger than the pool ({n})")
    if not stratified:
        return np.sort(rng.choice(n, size=size, replace=False))
    classes = np.unique(labels)
    by_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    quota = {c: size // len(classes) for c in classes}
    for c in rng.permutation(classes)[: size % len(classes)]:
        quota[c] += 1
    picked = [by_class[c][: quota[c]] for c in classes]
    chosen = np.concatenate(picked)
    if len(chosen) < size:  # some classes were too small: fill from the rest at random
        rest = np.setdiff1d(np.arange(n), chosen)
        chosen = np.concatenate([chosen, rng.choice(rest, size - len(chosen), replace=False)])
    return np.sort(chosen)


def check_picks(picks: Any, budget: int, n_unlabeled: int, strategy: str, ids: np.ndarray | None = None) -> np.ndarray:
    """Validate a strategy's answer; a broken plugin gets a one-line error naming it.

    picks: what ``select`` returned: a 1-D integer array (a list of ints is accepted too) of
    ``budget`` unique positions in ``[0, n_unlabeled)``.
    ids: the view's sample ids, to say so when the picks look like ids rather than positions.
    Returns the picks as int64.
    """
    who = f"strategy '{strategy}'"
    expected = f"{budget} unique integer positions in [0, {n_unlabeled}) (into the unlabeled pool)"
    if picks is None:
        raise MmalError(f"{who}: select() returned None, expected {expected}")
    try:
        arr = np.asarray(picks)
    except Exception as err:  # ragged lists, GPU tensors, ...: a plugin bug, not ours
        text = " ".join(str(err).split())
        raise MmalError(f"{who}: select() returned a {type(picks).__name__} that is not an array ({text}); expected {expected}") from None
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        got = f"{type(picks).__name__} of dtype {arr.dtype} and shape {arr.shape}"
        hint = " (a boolean mask? return np.flatnonzero(mask))" if arr.dtype == bool else ""
        raise MmalError(f"{who}: select() must return a 1-D integer array, got {got}{hint}; expected {expected}")
    if len(arr) != budget:
        raise MmalError(f"{who}: select() returned {len(arr)} positions, expected {budget}")
    if len(arr) and (arr.min() < 0 or arr.max() >= n_unlabeled):
        bad = arr[(arr < 0) | (arr >= n_unlabeled)]
        hint = ""
        if ids is not None and np.isin(arr, np.asarray(ids)).all():
            hint = "; they look like sample ids (view.ids): return positions into the view instead"
        raise MmalError(
            f"{who}: select() returned positions outside [0, {n_unlabeled}) (e.g. {int(bad[0])}){hint}"
        )
    if len(np.unique(arr)) != len(arr):
        values, counts = np.unique(arr, return_counts=True)
        raise MmalError(
            f"{who}: select() returned duplicate positions (e.g. {int(values[counts > 1][0])}); "
            f"expected {expected}"
        )
    return arr.astype(np.int64)


class _DatasetCache:
    """Keeps the last dataset loaded, so strategies of one (dataset, seed) share it."""

    def __init__(self):
        self.key, self.value = None, None

    def get(self, spec: PluginSpec, seed: int) -> MultimodalDataset:
        key = (content_hash(spec.canonical()), seed)
        if key != self.key:
            self.key, self.value = key, load_dataset(spec.name, seed=seed, **spec.params)
        return self.value


def train_round_model(model_spec: ModelSpec, dataset: MultimodalDataset, labeled: np.ndarray, seed: int,
                      rnd: int, init_state: bytes | None = None):
    """Build and train the round-``rnd`` model of a run on pool positions ``labeled``.

    This is the single place that decides a round's model: the loop and any replay
    (verification of submitted results) call it, so both train exactly the same network.
    """
    model = build_model(model_spec)
    model.setup(dataset.modalities, dataset.n_classes)
    model.fit(dataset.train, np.sort(np.asarray(labeled, dtype=np.int64)),
              seed=derive_seed(seed, _STREAM_MODEL, rnd), init_state=init_state)
    return model


def round_metrics(model: Any, dataset: MultimodalDataset, labeled: np.ndarray,
                  options: MetricsSpec | None = None) -> dict[str, Any]:
    """The metrics recorded for a round: every registered metric (hook ``mmal_register_metrics``)
    whose ``needs`` the model provides, in registration order, over one shared
    :class:`~mmal_core.metrics.MetricContext`; the utilization ones (Shapley values, ablations,
    heads, probes) unless ``options`` turn them off. A plugin's metric that fails is a one-line
    :class:`MmalError` naming the plugin and the metric."""
    chosen = chosen_metrics(model, dataset, options)
    ctx = MetricContext(model, dataset, labeled, prefetch={f for m, _ in chosen for f in m.needs})
    return compute_metrics(chosen, ctx)


def chosen_metrics(model: Any, dataset: MultimodalDataset, options: MetricsSpec | None = None) -> list[tuple[Any, str]]:
    """(metric, who) of every metric :func:`round_metrics` computes for ``model`` on ``dataset``."""
    use_utilization = (options or MetricsSpec()).enabled(len(dataset.modalities))
    available = frozenset(model.provided()) | CONTEXT_NEEDS
    chosen = []
    for entry in get_plugin_manager().entries("metric").values():
        cls = entry.obj
        if cls.needs <= available and (use_utilization or not cls.utilization):
            chosen.append((cls(), f"metric '{entry.name}' of plugin '{entry.plugin}' ({entry.dist})"))
    return chosen


def select_round(strategy: Any, name: str, model: Any, dataset: MultimodalDataset, labeled: np.ndarray,
                 unlabeled: np.ndarray, metrics: dict[str, Any], budget: int, seed: int, rnd: int,
                 timings: dict[str, float] | None = None) -> np.ndarray:
    """Pool positions the strategy queries in round ``rnd`` (the loop's one definition of a query).

    Builds the PoolView of the fields ``strategy.requires`` from ``model``, calls
    ``strategy.select`` with the round's rng and checks the answer. ``timings`` (optional)
    receives the ``predict`` and ``select`` seconds. Replays of submitted runs call this too.
    """
    t0 = time.perf_counter()
    view = PoolView.from_model(
        model, dataset.train, unlabeled, labeled, strategy.requires,
        metrics=metrics, n_classes=dataset.n_classes, params=view_params(strategy),
    )._for_strategy(name)
    t1 = time.perf_counter()
    rng = np.random.default_rng(derive_seed(seed, _STREAM_STRATEGY, rnd))
    guard = GlobalRandomGuard()
    answer = strategy.select(view, budget, rng)
    guard.check(f"strategy '{name}'")
    picks = check_picks(answer, budget, len(unlabeled), name, ids=view.ids)
    if timings is not None:
        timings["predict"] = t1 - t0
        timings["select"] = time.perf_counter() - t1
    return unlabeled[picks]


def run_fields(spec: RunSpec, strategy: Any) -> dict[str, Any]:
    """What the results store records about a run (all but its initial set)."""
    return {
        "dataset": spec.dataset.name,
        "dataset_params": spec.dataset.params,
        "strategy": spec.strategy.name,
        "strategy_params": strategy.get_params(),
        "strategy_label": spec.strategy.label,
        "seed": spec.seed,
        "model": spec.model.canonical(),
        "budget": spec.budget.model_dump(),
    }


class _Run:
    """One run in progress: its dataset, strategy, labeled set and outcome so far.

    :func:`execute_run` drives one of them; :func:`execute_group` drives several in
    lockstep. Both go through the same steps (``start``, ``train_job``, ``finish_round``),
    so a run records the same rounds either way.
    """

    def __init__(self, spec: RunSpec, store: Store, experiment_id: int, callbacks: Callbacks,
                 datasets: _DatasetCache):
        self.spec, self.store, self.callbacks = spec, store, callbacks
        self.dataset = datasets.get(spec.dataset, spec.seed)
        check_budget(spec.budget, self.dataset, "budget")
        pool = self.dataset.train
        self.strategy = build_strategy(spec.strategy)
        self.schedule = spec.budget.schedule
        self.total_rounds = len(self.schedule) + 1
        rng_init = np.random.default_rng(derive_seed(spec.seed, _STREAM_INITIAL))
        initial = initial_set(pool.labels, spec.budget.initial, spec.budget.stratified, rng_init)
        self.run_id, initial_ids = store.run(
            experiment_id, spec.key, {**run_fields(spec, self.strategy), "initial_ids": pool.ids[initial].tolist()}
        )
        done = store.rounds(self.run_id, with_state=spec.model.warm_start)
        position_of = {int(i): p for p, i in enumerate(pool.ids)}
        labeled_ids = list(initial_ids) + [i for r in done for i in r.queried_ids]
        self.is_labeled = np.zeros(len(pool), dtype=bool)
        try:
            self.is_labeled[[position_of[int(i)] for i in labeled_ids]] = True
        except KeyError as err:
            raise MmalError(f"run {self.run_id}: stored sample id {err} is not in the pool of '{spec.dataset.name}'") from None
        self.outcome = RunOutcome(spec, self.run_id, "running", resumed_rounds=len(done))
        for r in done:
            self.outcome.n_labeled.append(r.n_labeled)
            self.outcome.accuracy.append(r.metrics.get("accuracy", float("nan")))
        callbacks.run_started(spec, self.total_rounds, len(done))
        self.state = done[-1].model_state if (done and spec.model.warm_start) else None
        self.rnd = len(done)
        self.new_rounds = 0

    @property
    def done(self) -> bool:
        return self.rnd >= self.total_rounds

    def labeled(self) -> np.ndarray:
        return np.flatnonzero(self.is_labeled)

    def train_job(self) -> tuple[Any, np.ndarray, int, bytes | None]:
        """(pool, labeled, model seed, initial state) of this round's fit."""
        return (self.dataset.train, self.labeled(), derive_seed(self.spec.seed, _STREAM_MODEL, self.rnd), self.state)

    def new_model(self):
        model = build_model(self.spec.model)
        model.setup(self.dataset.modalities, self.dataset.n_classes)
        return model

    def finish_round(self, model: Any, train_seconds: float, shared: dict[str, float] | None = None) -> None:
        """Evaluate the round's trained model, query, commit the round.

        shared: seconds of this run's share of batched passes (``evaluate``, ``predict``)."""
        spec, dataset, rnd = self.spec, self.dataset, self.rnd
        pool = dataset.train
        labeled = self.labeled()
        timings: dict[str, float] = {"train": train_seconds}
        t0 = time.perf_counter()
        metrics = round_metrics(model, dataset, labeled, spec.metrics)
        timings["evaluate"] = time.perf_counter() - t0
        queried: list[int] = []
        if rnd < len(self.schedule):
            unlabeled = np.flatnonzero(~self.is_labeled)
            chosen = select_round(self.strategy, spec.strategy.name, model, dataset, labeled, unlabeled, metrics,
                                  self.schedule[rnd], spec.seed, rnd, timings)
            queried = pool.ids[chosen].tolist()
            metrics["query"] = query_metrics(pool, chosen, dataset.n_classes)
        for k, v in (shared or {}).items():
            timings[k] = timings.get(k, 0.0) + v
        if spec.model.warm_start:
            self.state = model.state()
        record = RoundRecord(rnd, int(len(labeled)), metrics, queried, timings, self.state if spec.model.warm_start else None)
        self.store.add_round(self.run_id, record)
        if queried:
            self.is_labeled[chosen] = True
        self.outcome.n_labeled.append(record.n_labeled)
        self.outcome.accuracy.append(metrics["accuracy"])
        for k, v in timings.items():
            self.outcome.timings[k] = self.outcome.timings.get(k, 0.0) + v
        self.callbacks.round_finished(spec, record)
        self.rnd += 1
        self.new_rounds += 1

    def finish(self) -> RunOutcome:
        self.store.set_status(self.run_id, "finished")
        self.outcome.status = "finished"
        self.callbacks.run_finished(self.outcome)
        return self.outcome


def execute_run(
    spec: RunSpec,
    store: Store,
    experiment_id: int,
    callbacks: Callbacks | None = None,
    datasets: _DatasetCache | None = None,
    stop_after: int | None = None,
) -> RunOutcome:
    """Run (or resume) one active-learning run, committing each round as it finishes.

    stop_after: stop after this many new rounds (tests use it to simulate a killed run).
    """
    run = _Run(spec, store, experiment_id, callbacks or Callbacks(), datasets or _DatasetCache())
    while not run.done:
        if stop_after is not None and run.new_rounds >= stop_after:
            run.outcome.status = "interrupted"
            return run.outcome
        t0 = time.perf_counter()
        model = train_round_model(spec.model, run.dataset, run.labeled(), spec.seed, run.rnd, init_state=run.state)
        run.finish_round(model, time.perf_counter() - t0)
    return run.finish()


def supports_lockstep(model_spec: ModelSpec) -> bool:
    """True when the model plugin trains several runs at once (``Model.fit_many``)."""
    cls = get_plugin_manager().get("model", model_spec.name)
    return bool(getattr(cls, "lockstep", False)) and callable(getattr(cls, "fit_many", None))


def lockstep_key(spec: RunSpec) -> str:
    """Runs with equal keys train the same network on labeled sets of the same size every
    round: same dataset (with its parameters), model and budget (and metrics)."""
    return content_hash({k: v for k, v in spec.canonical().items() if k not in ("seed", "strategy")})


class _DatasetsBySeed(_DatasetCache):
    """Keeps every (dataset, seed) a group needs (a group spans seeds)."""

    def __init__(self):
        self.cache: dict[tuple[str, int], MultimodalDataset] = {}

    def get(self, spec: PluginSpec, seed: int) -> MultimodalDataset:
        key = (content_hash(spec.canonical()), seed)
        if key not in self.cache:
            self.cache[key] = load_dataset(spec.name, seed=seed, **spec.params)
        return self.cache[key]


def memory_budget() -> int:
    """Bytes one lockstep batch may take: half the memory available now (4 GiB if unknown)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _members_fitting(run: _Run, max_bytes: int | None) -> int:
    """How many runs like ``run`` one batch of its round may hold (at least 1)."""
    model = run.new_model()
    n_labeled = int(run.is_labeled.sum())
    try:
        each = int(model.lockstep_bytes(run.dataset, n_labeled))
    except Exception:  # a plugin without a working estimate of its own: the default one
        each = Model.lockstep_bytes(model, run.dataset, n_labeled)
    return max(1, int((memory_budget() if max_bytes is None else max_bytes) // max(each, 1)))


def _model_who(name: str) -> str:
    """How a warning names a model plugin: ``model 'x' of plugin 'p' (dist)``."""
    entry = get_plugin_manager().entries("model").get(name)
    return f"model '{name}'" + (f" of plugin '{entry.plugin}' ({entry.dist})" if entry else "")


def _twins(runs: list[_Run], indices: list[int]) -> dict[int, list[int]]:
    """``indices`` (of ``runs``, in order) by identical fit: runs of one lockstep group whose
    round trains on the same pool, labeled set, model seed and initial state train the same
    network, so it is trained once for all of them. Round 0 of a group's strategies of one
    seed is such a case (the initial set and the model's seed come from the seed alone).
    Keys: the first index of each set of twins, in order."""
    out: dict[int, list[int]] = {}
    first_of: dict[tuple, int] = {}
    for i, run in zip(indices, runs):
        pool, labeled, seed, state = run.train_job()
        key = (id(pool), seed, hashlib.blake2b(np.ascontiguousarray(labeled).tobytes(), digest_size=16).digest(),
               None if state is None else hashlib.blake2b(state, digest_size=16).digest())
        first = first_of.setdefault(key, i)
        out.setdefault(first, []).append(i)
    return out


def _fit_group(runs: list[_Run]) -> list[Any]:
    """Train this round's models of ``runs`` (same model spec, equal labeled sizes) in one
    ``fit_many`` (it trains the models in place and returns None, or returns the trained
    models, one per run); a plugin whose batched path raises or returns anything else is
    reported in one line and the runs fall back to one ``fit`` each (same models, by the
    contract of ``fit_many``)."""
    import logging

    models = [run.new_model() for run in runs]
    jobs = [run.train_job() for run in runs]
    cls = type(models[0])
    try:
        trained = cls.fit_many(models, jobs)
        if trained is None:
            return models
        if not isinstance(trained, (list, tuple)):
            problem = f"returned a {type(trained).__name__}, expected None or the {len(models)} trained models"
        elif len(trained) != len(models):
            problem = f"returned {len(trained)} models for {len(models)} runs"
        elif not all(isinstance(m, cls) for m in trained):
            odd = next(m for m in trained if not isinstance(m, cls))
            problem = f"returned a {type(odd).__name__} among its models, expected {cls.__name__} instances"
        else:
            return list(trained)
    except MmalError:
        raise
    except Exception as err:
        text = " ".join(str(err).split())[:200]
        problem = f"failed ({type(err).__name__}: {text})"
    logging.getLogger("mmal").warning("%s: fit_many %s; training these %d runs one at a time",
                                      _model_who(runs[0].spec.model.name), problem, len(runs))
    models = [run.new_model() for run in runs]
    for model, (pool, labeled, seed, state) in zip(models, jobs):
        model.fit(pool, labeled, seed=seed, init_state=state)
    return models


def _round_requests(run: _Run, model: Any) -> list[dict[str, Any]]:
    """The ``predict`` calls the round of ``run`` will make of ``model`` (see :func:`round_metrics`
    and :func:`select_round`), each with every field asked of the same rows: the test split for
    the metrics, the labeled rows for the probes and the view, the unlabeled rows for the view."""
    provided = frozenset(model.provided())
    needs: set[str] = set()
    labeled_needs: set[str] = set()
    for metric, _ in chosen_metrics(model, run.dataset, run.spec.metrics):
        needs |= metric.needs
        if "labeled" in metric.needs:
            labeled_needs |= metric.needs
    test = needs & provided
    if "coalitions" in needs and "subset_probs" in provided:
        test.add("subset_probs")
    pool, labeled = run.dataset.train, run.labeled()
    requests = [{"split": run.dataset.test, "index": None, "want": test, "params": {}}] if test else []
    if "keep" in needs and "probs" in provided:  # one modality kept at a time (modality_accuracy)
        M = len(run.dataset.modalities)
        requests += [{"split": run.dataset.test, "index": None, "want": {"probs"}, "params": {},
                      "keep": np.arange(M) == j} for j in range(M)]
    lab = labeled_needs & provided - {"mc_probs", "subset_probs"}
    if run.rnd < len(run.schedule):
        requires = set(run.strategy.requires)
        params = view_params(run.strategy)
        lab |= {f.removeprefix("labeled_") for f in requires if f.startswith("labeled_")} & provided
        unl = (requires & provided) - {"labeled_embeddings", "labeled_modality_embeddings"}
        if unl:
            requests.append({"split": pool, "index": np.flatnonzero(~run.is_labeled), "want": unl, "params": params})
    if lab:
        requests.append({"split": pool, "index": labeled, "want": lab, "params": {}})
    return requests


def _answer_problem(answers: Any, requests: list[dict[str, Any]], n_classes: int) -> str | None:
    """What is wrong with a batched answer (count, fields, shapes), or None."""
    if not isinstance(answers, (list, tuple)) or len(answers) != len(requests):
        got = f"{len(answers)} answers" if isinstance(answers, (list, tuple)) else f"a {type(answers).__name__}"
        return f"returned {got} for {len(requests)} requests"
    for k, (answer, request) in enumerate(zip(answers, requests)):
        if not isinstance(answer, dict):
            return f"answer {k} is a {type(answer).__name__}, not a dict"
        split, index = request["split"], request["index"]
        n = len(split) if index is None else len(index)
        for wanted in request["want"]:
            if wanted not in answer:
                return f"answer {k} has no '{wanted}'"
            value = answer[wanted]
            parts = value.values() if isinstance(value, dict) else [value]
            if isinstance(value, dict) and wanted in ("modality_probs", "modality_embeddings") \
                    and list(value) != list(split.modalities):
                return f"answer {k}: '{wanted}' has keys {list(value)}, expected {list(split.modalities)}"
            for part in parts:
                shape = np.shape(part)
                rows = shape[1] if wanted == "mc_probs" and len(shape) == 3 else (shape[0] if shape else None)
                classes_ok = wanted not in ("probs", "modality_probs", "mc_probs", "subset_probs") \
                    or (shape and shape[-1] == n_classes)
                if rows != n or len(shape) != (3 if wanted == "mc_probs" else 2) or not classes_ok:
                    return f"answer {k}: '{wanted}' has shape {shape} for {n} rows"
    return None


def _predict_group(runs: list[_Run], models: list[Any]) -> tuple[list[Any], dict[str, float] | None, tuple]:
    """Answer the known predict calls of this round of ``runs`` (:func:`_round_requests`) with
    two batched calls (``Model.predict_many``: the test split, then the pool) and return each
    model wrapped so that its round reads the answers (:class:`_Answered`), with each run's
    share of the seconds and the runs' linear probes fitted together (:func:`_group_probes`).
    A batched path that raises or answers the wrong count or shapes is reported in one line
    and the runs predict one at a time (seconds None); nothing is written before that."""
    import logging

    cls = type(models[0])
    batched = getattr(cls, "predict_many", None)
    if not callable(batched):
        return models, {}, ([], [], 0)
    known: list[list[tuple[dict[str, Any], dict[str, Any]]]] = [[] for _ in models]
    seconds = {"evaluate": 0.0, "predict": 0.0}
    try:
        per_run = [_round_requests(run, model) for run, model in zip(runs, models)]
    except Exception:
        return models, {}, ([], [], 0)  # the round reports it, one run at a time
    # runs that share a model (twins, see _twins) ask it once per rows: their calls of the
    # same split, rows, kept modalities and parameters become one call of every field asked
    slots: dict[str, list[tuple[list[int], dict[str, Any]]]] = {}
    merged: dict[tuple, tuple[list[int], dict[str, Any]]] = {}
    for k, requests in enumerate(per_run):
        for request in requests:
            kind = "evaluate" if request["split"] is runs[k].dataset.test else "predict"
            key = (id(models[k]), _request_key(request))
            if key in merged:
                users, call = merged[key]
                users.append(k)
                call["want"] = set(call["want"]) | set(request["want"])
                continue
            merged[key] = ([k], dict(request))
            slots.setdefault(kind, []).append(merged[key])
    for kind, calls in slots.items():
        requests = [request for _, request in calls]
        t0 = time.perf_counter()
        try:
            answers = batched([models[users[0]] for users, _ in calls], requests)
            problem = _answer_problem(answers, requests, runs[0].dataset.n_classes)
        except Exception as err:
            problem = f"raised {type(err).__name__}: {' '.join(str(err).split())[:200]}"
        if problem:
            logging.getLogger("mmal").warning("%s: predict_many %s; these %d runs predict one at a time",
                                              _model_who(runs[0].spec.model.name), problem, len(runs))
            return models, None, ([], [], 0)
        seconds[kind] += time.perf_counter() - t0
        for (users, request), answer in zip(calls, answers):
            for k in users:
                known[k].append((request, answer))
    t0 = time.perf_counter()
    probes = _group_probes(runs, models, known)
    seconds["evaluate"] += time.perf_counter() - t0
    share = {kind: s / len(models) for kind, s in seconds.items()}
    return [_Answered(model, answers) for model, answers in zip(models, known)], share, probes


def _request_key(request: dict[str, Any]) -> tuple:
    """What makes two predict calls of one model the same call but for the fields asked."""
    index, keep = request["index"], request.get("keep")
    return (id(request["split"]), None if index is None else hashlib.blake2b(np.asarray(index).tobytes()).digest(),
            None if keep is None else np.asarray(keep, dtype=bool).tobytes(),
            json.dumps(request["params"], sort_keys=True, default=str))


def _group_probes(runs: list[_Run], models: list[Any], known: list[list[tuple[dict, dict]]]) -> tuple:
    """The linear probes of the runs' ``probe_accuracy`` metric, fitted together from the
    batched answers: (problems, probes, classes) for :func:`~mmal_core.utilization.shared_probes`."""
    from .utilization import ProbeAccuracy, fit_linear_probes, probe_sets

    C = runs[0].dataset.n_classes
    if not any(isinstance(metric, ProbeAccuracy) for metric, _ in chosen_metrics(models[0], runs[0].dataset,
                                                                                   runs[0].spec.metrics)):
        return [], [], C
    problems = []
    seen: set[int] = set()  # twins share their answers: their probes are fitted once
    for run, answers in zip(runs, known):
        pool, labeled = run.dataset.train, run.labeled()
        for request, answer in answers:
            if (request["split"] is pool and request["index"] is not None and "modality_embeddings" in answer
                    and np.array_equal(request["index"], labeled)):
                if id(answer) in seen:
                    break
                seen.add(id(answer))
                sets = probe_sets(pool, labeled, answer["modality_embeddings"], run.dataset.test.mask,
                                  list(run.dataset.modality_names))
                problems.extend(sets.values())
                break
    return problems, fit_linear_probes(problems, C), C


class _Answered:
    """A fitted model whose predictions for its round's known calls were computed in a batch:
    ``predict`` returns a copy of the answer when a call asks for no more than it covers (same
    split, rows and ``keep``, the same MC-dropout settings), and asks the model otherwise.
    Everything else is the model's."""

    def __init__(self, model: Any, answers: list[tuple[dict[str, Any], dict[str, Any]]]):
        self._model, self._answers = model, answers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict(self, split, index=None, want=frozenset({"probs"}), params=None, keep=None):
        want, params = set(want), params or {}
        if not want and self._answers:
            return {}
        for request, answer in self._answers:
            known = request.get("keep")
            same_keep = keep is None if known is None else keep is not None and np.array_equal(
                np.asarray(keep, dtype=bool), known)
            if (same_keep and split is request["split"] and want <= request["want"]
                    and (index is None) == (request["index"] is None)
                    and (index is None or np.array_equal(np.asarray(index), request["index"]))
                    and ("mc_probs" not in want or all(params.get(p) == request["params"].get(p)
                                                       for p in ("mc_samples", "mc_seed")))):
                return {f: {m: np.array(v) for m, v in answer[f].items()} if isinstance(answer[f], dict)
                        else np.array(answer[f]) for f in want}
        return self._model.predict(split, index, want, params, keep)


def execute_group(
    specs: list[RunSpec],
    store: Store,
    experiment_id: int,
    callbacks: Callbacks | None = None,
    datasets: "_DatasetsBySeed | None" = None,
    stop_after: int | None = None,
    retries: int = 0,
    max_bytes: int | None = None,
) -> list[RunOutcome]:
    """Run (or resume) several runs in lockstep: round r of every run trains in one batched
    fit (``Model.fit_many``), then each run evaluates, queries and commits its round exactly
    as :func:`execute_run` would. A round's runs go in batches of at most ``max_bytes``
    (:func:`memory_budget` when None) by the model's estimate (``Model.lockstep_bytes``);
    the predict calls of a batch's round are answered in batches too (:func:`_predict_group`).
    The runs must share :func:`lockstep_key`; runs resumed at
    different rounds train with the others at the same round.

    A run that raises fails alone (marked failed with its one-line reason); the others go on.
    An error that another try could fix (not an :class:`MmalError`) is retried up to
    ``retries`` times, one run at a time, from the run's committed rounds.
    stop_after: stop every run after this many new rounds (tests: a killed group).
    Returns the outcomes in the order of ``specs``.
    """
    callbacks = callbacks or Callbacks()
    datasets = datasets if datasets is not None else _DatasetsBySeed()
    outcomes: dict[int, RunOutcome] = {}
    errors: dict[int, BaseException] = {}
    active: dict[int, _Run] = {}
    batched_predict = True
    for i, spec in enumerate(specs):
        try:
            active[i] = _Run(spec, store, experiment_id, callbacks, datasets)
        except Exception as err:
            errors[i] = err
    while active:
        for i in [i for i, run in active.items() if run.done]:
            outcomes[i] = active.pop(i).finish()
        if stop_after is not None:
            for i in [i for i, run in active.items() if run.new_rounds >= stop_after]:
                run = active.pop(i)
                run.outcome.status = "interrupted"
                outcomes[i] = run.outcome
        if not active:
            break
        rnd = min(run.rnd for run in active.values())
        members = [i for i, run in active.items() if run.rnd == rnd]
        sizes: dict[int, list[int]] = {}
        for i in members:  # equal budgets give equal sizes; anything else trains apart
            sizes.setdefault(int(active[i].is_labeled.sum()), []).append(i)
        for equal in sizes.values():
            twins = _twins([active[i] for i in equal], equal)
            firsts = list(twins)
            cap = _members_fitting(active[equal[0]], max_bytes)
            for chunk in [firsts[start : start + cap] for start in range(0, len(firsts), cap)]:
                same = [i for first in chunk for i in twins[first]]
                t0 = time.perf_counter()
                try:
                    trained = _fit_group([active[i] for i in chunk])
                except Exception as err:
                    for i in same:
                        errors[i] = err
                        active.pop(i)
                    continue
                models = [model for first, model in zip(chunk, trained) for _ in twins[first]]
                train_seconds = (time.perf_counter() - t0) / len(same)
                shared, probes = None, ([], [], 0)
                if batched_predict:
                    models, shared, probes = _predict_group([active[i] for i in same], models)
                    batched_predict = shared is not None  # a broken batched path is reported once
                with shared_probes(*probes):
                    for i, model in zip(same, models):
                        try:
                            active[i].finish_round(model, train_seconds, shared)
                        except Exception as err:
                            errors[i] = err
                            active.pop(i)
    for i, err in errors.items():
        outcomes[i] = _retry_alone(specs[i], err, store, experiment_id, callbacks, retries)
    return [outcomes[i] for i in range(len(specs))]


def _retry_alone(spec: RunSpec, err: BaseException, store: Store, experiment_id: int, callbacks: Callbacks,
                 retries: int) -> RunOutcome:
    """A run of a group that raised: retried on its own while it may help, else marked failed."""
    attempt, error = 1, error_of(err)
    while not isinstance(error, NotRetried) and attempt <= retries:
        notify_failure(callbacks, spec, attempt, error, True)
        attempt += 1
        try:
            return execute_run(spec, store, experiment_id, callbacks, _DatasetCache())
        except Exception as again:
            error = error_of(again)
    notify_failure(callbacks, spec, attempt, error, False)
    tries = f"{attempt} attempts" if attempt > 1 else "1 attempt"
    outcome = failed_outcome(store, experiment_id, spec, f"failed after {tries}: {error}")
    callbacks.run_finished(outcome)
    return outcome


#: Fewest runs the planner cuts a group down to for the sake of balance between workers
#: (splitting further only to give every worker something): a group this size still
#: batches well (fusion-mlp trains stacks of 16 to 64 on the CPU, by network size).
MIN_SPLIT = 16
#: Groups per worker the planner aims at: with several each, a worker that draws a smaller
#: or faster group takes the next one instead of idling while another finishes a big one.
GROUPS_PER_WORKER = 3


def plan_groups(specs: list[RunSpec], parts: int = 1, max_runs: int = 256) -> list[list[int]]:
    """Indices of ``specs`` in lockstep groups: runs of one :func:`lockstep_key` whose model
    has a batched path, split into pieces of equal size (within one run) and at most
    ``max_runs`` runs each (bounding memory); every other run is a group of its own, to run
    with :func:`execute_run` (see :func:`is_group`).

    With ``parts`` workers, groups are cut into pieces of about ``1 / (r * parts)`` of all
    runs, r = :data:`GROUPS_PER_WORKER` or fewer where pieces would fall below
    :data:`MIN_SPLIT` (but always a piece per worker), so that the workers, which take
    groups in turn, finish together; largest groups first.
    Where a run trains does not change its rounds, so the plan only moves time around.
    """
    keyed: dict[str, list[int]] = {}
    alone: list[list[int]] = []
    support: dict[str, bool] = {}
    for i, spec in enumerate(specs):
        name = spec.model.name
        if name not in support:
            support[name] = supports_lockstep(spec.model)
        if support[name]:
            keyed.setdefault(lockstep_key(spec), []).append(i)
        else:
            alone.append([i])
    total = sum(len(v) for v in keyed.values())
    parts = max(parts, 1)
    size = -(-total // parts)  # one piece per worker at least
    if parts > 1:
        for per_worker in range(GROUPS_PER_WORKER, 1, -1):
            piece = -(-total // (parts * per_worker))
            if piece >= MIN_SPLIT:
                size = piece
                break
    size = max(1, min(max_runs, size))
    groups = []
    for members in keyed.values():
        pieces = -(-len(members) // size)
        cuts = [round(len(members) * j / pieces) for j in range(pieces + 1)]
        groups.extend(_Group(members[a:b]) for a, b in zip(cuts, cuts[1:]))
    groups.sort(key=len, reverse=True)  # stable: equal sizes keep the runs' order
    return groups + alone


class _Group(list):
    """Indices of runs that train in lockstep (a plain list is a run trained on its own)."""


def is_group(indices: list[int]) -> bool:
    """True for a group of :func:`plan_groups` that trains in lockstep (even of one run)."""
    return isinstance(indices, _Group)


def view_params(strategy: Any) -> dict[str, Any]:
    """Settings a strategy passes to the model for its view (``mc_samples`` for MC dropout)."""
    params = {}
    if hasattr(strategy, "view_params"):
        params.update(strategy.view_params())
    return params


def run_experiment(
    config: ExperimentConfig,
    db_path: str,
    callbacks: Callbacks | None = None,
    source: str = "config",
    executor: Any = None,
    lockstep: bool = True,
) -> list[RunOutcome]:
    """Validate, then run or resume every run of ``config`` into the database at ``db_path``.

    executor: an :class:`mmal_core.runtime.executors.Executor` that spreads the runs over processes
    or a Ray cluster (its own ``lockstep`` setting applies); None runs them in this process.
    lockstep: train the runs that share dataset, model and budget together (see
    :func:`execute_group`) when the model has a batched path; False: one run at a time.
    """
    specs = run_specs(config)
    if executor is not None and hasattr(executor, "start_early"):
        executor.start_early(len(specs))
    validate_experiment(config, source, devices_here=getattr(executor, "runs_here", True))
    env = environment()
    with Store(db_path) as store:
        experiment_id = store.experiment(config.name, config.hash(), config.canonical(), env)
        # Run ids in the config's order, whichever order workers reach the runs in.
        strategies: dict[str, Any] = {}  # one instance per configured strategy, not per run
        for spec in specs:
            if spec.strategy.label not in strategies:
                strategies[spec.strategy.label] = build_strategy(spec.strategy)
        store.reserve_runs(experiment_id, [(spec.key, run_fields(spec, strategies[spec.strategy.label])) for spec in specs])
        if executor is not None:
            return executor.run(specs, store, experiment_id, callbacks)
        if lockstep:
            outcomes: dict[int, RunOutcome] = {}
            for group in plan_groups(specs):
                datasets = _DatasetsBySeed()  # what this group needs, all its seeds at once
                run = [specs[i] for i in group]
                done = (execute_group(run, store, experiment_id, callbacks, datasets) if is_group(group)
                        else [execute_run(run[0], store, experiment_id, callbacks, datasets)])
                outcomes.update(zip(group, done))
            return [outcomes[i] for i in range(len(specs))]
        datasets = _DatasetCache()
        return [execute_run(spec, store, experiment_id, callbacks, datasets) for spec in specs]


def summarize(outcomes: list[RunOutcome]) -> list[dict[str, Any]]:
    """Per (dataset, strategy): mean ± std of final accuracy and AUBC over seeds."""
    groups: dict[tuple[str, str], list[RunOutcome]] = {}
    for o in outcomes:
        groups.setdefault((o.spec.dataset.label, o.spec.strategy.label), []).append(o)
    rows = []
    for (dataset, strategy), runs in groups.items():
        finals = np.array([o.accuracy[-1] for o in runs if o.accuracy])
        areas = np.array([aubc(o.n_labeled, o.accuracy) for o in runs if o.accuracy])
        rows.append({
            "dataset": dataset,
            "strategy": strategy,
            "seeds": len(runs),
            "final_accuracy": float(finals.mean()) if finals.size else float("nan"),
            "final_accuracy_std": float(finals.std()) if finals.size else float("nan"),
            "aubc": float(areas.mean()) if areas.size else float("nan"),
            "aubc_std": float(areas.std()) if areas.size else float("nan"),
            "seconds": float(sum(sum(o.timings.values()) for o in runs)),
        })
    return rows
