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

import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__, load_dataset
from .config import BudgetSpec, ExperimentConfig, MetricsSpec, ModelSpec, PluginSpec, content_hash
from .data import MultimodalDataset
from .errors import MmalError
from .metrics import aubc, evaluate
from .params import construct
from .plugins import get_plugin_manager
from .store import RoundRecord, Store
from .strategy import GlobalRandomGuard
from .utilization import check_modality_count, query_metrics, utilization
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
    """The metrics recorded for a round: test accuracy, macro-F1, per-modality accuracy and,
    unless ``options`` turn them off, the modality-utilization metrics of
    :func:`mmal_core.utilization.utilization` (Shapley values, ablations, heads, probes)."""
    metrics = evaluate(model, dataset)
    if (options or MetricsSpec()).enabled(len(dataset.modalities)):
        metrics.update(utilization(model, dataset, labeled))
    return metrics


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
    callbacks = callbacks or Callbacks()
    datasets = datasets or _DatasetCache()
    dataset = datasets.get(spec.dataset, spec.seed)
    check_budget(spec.budget, dataset, "budget")
    pool = dataset.train
    strategy = build_strategy(spec.strategy)
    schedule = spec.budget.schedule
    total_rounds = len(schedule) + 1

    rng_init = np.random.default_rng(derive_seed(spec.seed, _STREAM_INITIAL))
    initial = initial_set(pool.labels, spec.budget.initial, spec.budget.stratified, rng_init)
    run_id, initial_ids = store.run(
        experiment_id, spec.key, {**run_fields(spec, strategy), "initial_ids": pool.ids[initial].tolist()}
    )
    done = store.rounds(run_id, with_state=spec.model.warm_start)
    position_of = {int(i): p for p, i in enumerate(pool.ids)}
    labeled_ids = list(initial_ids) + [i for r in done for i in r.queried_ids]
    is_labeled = np.zeros(len(pool), dtype=bool)
    try:
        is_labeled[[position_of[int(i)] for i in labeled_ids]] = True
    except KeyError as err:
        raise MmalError(f"run {run_id}: stored sample id {err} is not in the pool of '{spec.dataset.name}'") from None
    outcome = RunOutcome(spec, run_id, "running", resumed_rounds=len(done))
    for r in done:
        outcome.n_labeled.append(r.n_labeled)
        outcome.accuracy.append(r.metrics.get("accuracy", float("nan")))
    callbacks.run_started(spec, total_rounds, len(done))
    state = done[-1].model_state if (done and spec.model.warm_start) else None

    new_rounds = 0
    for rnd in range(len(done), total_rounds):
        if stop_after is not None and new_rounds >= stop_after:
            outcome.status = "interrupted"
            return outcome
        labeled = np.flatnonzero(is_labeled)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        model = train_round_model(spec.model, dataset, labeled, spec.seed, rnd, init_state=state)
        timings["train"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        metrics = round_metrics(model, dataset, labeled, spec.metrics)
        timings["evaluate"] = time.perf_counter() - t0

        queried: list[int] = []
        if rnd < len(schedule):
            unlabeled = np.flatnonzero(~is_labeled)
            budget = schedule[rnd]
            chosen = select_round(strategy, spec.strategy.name, model, dataset, labeled, unlabeled, metrics,
                                  budget, spec.seed, rnd, timings)
            queried = pool.ids[chosen].tolist()
            metrics["query"] = query_metrics(pool, chosen, dataset.n_classes)
        if spec.model.warm_start:
            state = model.state()
        record = RoundRecord(rnd, int(len(labeled)), metrics, queried, timings, state if spec.model.warm_start else None)
        store.add_round(run_id, record)
        if queried:
            is_labeled[chosen] = True
        outcome.n_labeled.append(record.n_labeled)
        outcome.accuracy.append(metrics["accuracy"])
        for k, v in timings.items():
            outcome.timings[k] = outcome.timings.get(k, 0.0) + v
        callbacks.round_finished(spec, record)
        new_rounds += 1
    store.set_status(run_id, "finished")
    outcome.status = "finished"
    callbacks.run_finished(outcome)
    return outcome


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
) -> list[RunOutcome]:
    """Validate, then run or resume every run of ``config`` into the database at ``db_path``.

    executor: an :class:`mmal_core.executors.Executor` that spreads the runs over processes
    or a Ray cluster; None runs them one after the other in this process.
    """
    validate_experiment(config, source, devices_here=getattr(executor, "runs_here", True))
    env = environment()
    with Store(db_path) as store:
        experiment_id = store.experiment(config.name, config.hash(), config.canonical(), env)
        specs = run_specs(config)
        # Run ids in the config's order, whichever order workers reach the runs in.
        strategies: dict[str, Any] = {}  # one instance per configured strategy, not per run
        for spec in specs:
            if spec.strategy.label not in strategies:
                strategies[spec.strategy.label] = build_strategy(spec.strategy)
        store.reserve_runs(experiment_id, [(spec.key, run_fields(spec, strategies[spec.strategy.label])) for spec in specs])
        if executor is not None:
            return executor.run(specs, store, experiment_id, callbacks)
        datasets = _DatasetCache()
        outcomes = []
        for spec in specs:
            outcomes.append(execute_run(spec, store, experiment_id, callbacks, datasets))
        return outcomes


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
