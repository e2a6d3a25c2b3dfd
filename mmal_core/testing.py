"""Conformance checks for plugin authors, in the manner of scikit-learn's estimator checks.

Every plugin kind has a list of small, named checks. In a plugin's own test file::

    from mmal_core.testing import parametrize_with_checks
    from my_package.plugin import MyStrategy, MyDataset

    @parametrize_with_checks([MyStrategy, (MyStrategy, {"k": 3}), MyDataset])
    def test_mmal_conformance(check):
        check()

gives one pytest test per (plugin, check), with ids such as
``MyStrategy(k=3)-check_picks_valid``. :func:`yield_checks` yields the same ``(name,
check)`` pairs for other test runners, and ``check_strategy``, ``check_dataset``,
``check_model``, ``check_encoder``, ``check_metric`` and ``check_benchmark`` run every check of
one kind at once.
Each check raises ``AssertionError`` with a message that says what is wrong.

Kinds are told apart by base class: :class:`~mmal_core.Strategy`, :class:`~mmal_core.Dataset`,
:class:`~mmal_core.model.Model`, :class:`~mmal_core.Encoder`, :class:`~mmal_core.Metric` (classes,
optionally with parameters; metrics take none) and :class:`~mmal_core.Benchmark` (instances).
"""

from __future__ import annotations

import inspect
import json
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from itertools import combinations
from typing import Any

import numpy as np

from .data import Dataset, ModalitySpec, MultimodalDataset, Split
from .errors import MmalError
from .strategy import Strategy
from .view import REQUIREMENTS, PoolView

#: A named check: calling it runs the check (raises AssertionError on failure).
Check = tuple[str, Callable[[], Any]]


def synthetic_view(
    n: int = 60,
    n_classes: int = 3,
    modalities: tuple[str, ...] = ("m0", "m1"),
    dim: int = 5,
    n_labeled: int = 12,
    mc_samples: int = 4,
    missing_rate: float = 0.2,
    seed: int = 0,
) -> PoolView:
    """A PoolView with every field filled by random but well-formed arrays.

    Probabilities are normalised, masks keep at least one modality per sample, and the
    round's metrics include per-modality accuracies.
    """
    rng = np.random.default_rng(seed)
    M = len(modalities)

    def probs(*shape):
        p = rng.dirichlet(np.ones(n_classes), size=int(np.prod(shape)))
        return p.reshape(*shape, n_classes).astype(np.float32)

    mask = rng.random((n, M)) > missing_rate
    mask[~mask.any(axis=1), 0] = True
    lmask = rng.random((n_labeled, M)) > missing_rate
    lmask[~lmask.any(axis=1), 0] = True
    subsets = {}
    for r in range(0, M + 1):  # the empty subset too: the all-masked prediction
        from itertools import combinations

        for s in combinations(modalities, r):
            subsets[s] = probs(n)
    return PoolView(
        ids=np.arange(1000, 1000 + n),
        probs=probs(n),
        embeddings=rng.normal(size=(n, dim)).astype(np.float32),
        labeled_embeddings=rng.normal(size=(n_labeled, dim)).astype(np.float32),
        labeled_labels=rng.integers(0, n_classes, n_labeled),
        modality_probs={m: probs(n) for m in modalities},
        modality_embeddings={m: rng.normal(size=(n, dim)).astype(np.float32) * mask[:, [j]] for j, m in enumerate(modalities)},
        labeled_modality_embeddings={m: rng.normal(size=(n_labeled, dim)).astype(np.float32) for m in modalities},
        mc_probs=probs(mc_samples, n),
        subset_probs=subsets,
        mask=mask,
        labeled_mask=lmask,
        modalities=list(modalities),
        n_classes=n_classes,
        metrics={"accuracy": 0.5, "modality_accuracy": {m: 0.3 + 0.1 * j for j, m in enumerate(modalities)}},
        params={"mc_samples": mc_samples},
    )



# -- running the checks ------------------------------------------------------------------------
def yield_checks(plugin: Any, params: dict[str, Any] | None = None, **options: Any) -> Iterator[Check]:
    """``(check name, check)`` pairs for ``plugin``: a plugin class (with ``params``) or a Benchmark.

    options go to the kind's checks: ``every_class`` and ``seed`` for datasets, ``items`` (raw
    items of the encoder's kind) for encoders, ``view`` for strategies.
    """
    from .benchmark import Benchmark
    from .cache import Encoder
    from .metrics import Metric
    from .model import Model

    if isinstance(plugin, Benchmark):
        if params:
            raise TypeError("a Benchmark is an instance: it takes no parameters")
        yield from _benchmark_checks(plugin)
        return
    if not isinstance(plugin, type):
        raise TypeError(f"expected a plugin class or a Benchmark, got {plugin!r}")
    params = dict(params or {})
    for base, checks in ((Strategy, _strategy_checks), (Dataset, _dataset_checks),
                         (Model, _model_checks), (Encoder, _encoder_checks), (Metric, _metric_checks)):
        if issubclass(plugin, base):
            yield from checks(plugin, params, **options)
            return
    raise TypeError(
        f"{plugin.__name__} is not a plugin class: subclass mmal_core.Strategy, Dataset, Encoder, Metric "
        "or mmal_core.model.Model (benchmarks are Benchmark instances)"
    )


def parametrize_with_checks(plugins: Iterable[Any]):
    """A ``pytest.mark.parametrize("check", ...)`` over every check of every plugin.

    plugins: plugin classes, ``(class, params)`` pairs, ``(class, params, options)`` triples
    (options as in :func:`yield_checks`) and Benchmark instances. The test receives a
    ``check`` to call; ids read ``Class(param=value)-check_name`` (``+option`` after the
    parameters when options are given).
    """
    import pytest

    values, ids = [], []
    for entry in plugins:
        plugin, params, options = _unpack(entry)
        label = _label(plugin, params) + "".join(f"+{k}" for k in sorted(options))
        for name, check in yield_checks(plugin, params, **options):
            values.append(check)
            ids.append(f"{label}-{name}")
    return pytest.mark.parametrize("check", values, ids=ids)


def check_plugin(plugin: Any, params: dict[str, Any] | None = None, **options: Any) -> None:
    """Run every check of ``plugin`` in order (the first failure raises)."""
    for _, check in yield_checks(plugin, params, **options):
        check()


def _unpack(entry: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    if isinstance(entry, tuple):
        if not 1 <= len(entry) <= 3:
            raise TypeError(f"expected (class, params[, options]), got a tuple of {len(entry)}")
        plugin, params, options = (tuple(entry) + ({}, {}))[:3]
        return plugin, dict(params or {}), dict(options or {})
    return entry, {}, {}


def _label(plugin: Any, params: dict[str, Any]) -> str:
    if not isinstance(plugin, type):
        return f"Benchmark({getattr(plugin, 'name', '?')})"
    args = ",".join(f"{k}={v!r}" for k, v in sorted(params.items()))
    return f"{plugin.__name__}({args})"


def _run_all(checks: Iterator[Check]) -> None:
    for _, check in checks:
        check()


# -- strategies --------------------------------------------------------------------------------
def check_strategy(cls: type, params: dict[str, Any] | None = None, view: PoolView | None = None) -> None:
    """Run every strategy check (see :func:`_strategy_checks`)."""
    _run_all(_strategy_checks(cls, dict(params or {}), view=view))


def _strategy_checks(cls: type, params: dict[str, Any], view: PoolView | None = None) -> Iterator[Check]:
    """Checks of a strategy class.

    ``check_strategy_contract``: subclass of Strategy, a lower-case ``name``, known ``requires``
    and a docstring; ``check_params_stored``: parameters stored unchanged; for several budgets
    ``check_picks_valid``: the picks pass the loop's own check (unique integer positions of the
    right count in range, see :func:`mmal_core.loop.check_picks`), no global random generator
    is drawn from and only declared fields are read; ``check_picks_seeded``: the same rng seed
    gives the same picks; ``check_view_untouched``: nothing in the view (arrays, per-modality
    dicts, metrics) is modified.
    """
    def contract():
        assert isinstance(cls, type) and issubclass(cls, Strategy), f"{cls!r} must subclass mmal_core.Strategy"
        _check_name(cls)
        assert set(cls.requires) <= REQUIREMENTS, f"{cls.__name__}.requires has unknown fields {set(cls.requires) - REQUIREMENTS}"
        assert (cls.__doc__ or "").strip(), f"{cls.__name__} needs a docstring citing its source"

    def build() -> tuple[Any, PoolView]:
        contract()
        from .view import ALWAYS

        full = view if view is not None else synthetic_view()
        # Only what is declared (plus the always-present fields) is visible to the strategy.
        restricted = PoolView(
            **{k: full._data[k] for k in full.fields() if k in set(cls.requires) | set(ALWAYS)}
        )._for_strategy(cls.name)
        return cls(**params), restricted

    def select(strategy: Any, restricted: PoolView, budget: int) -> np.ndarray:
        from .loop import check_picks
        from .strategy import GlobalRandomGuard

        guard = GlobalRandomGuard()
        try:
            answer = strategy.select(restricted, budget, np.random.default_rng(123))
            guard.check(f"strategy '{cls.name}'")
            return check_picks(answer, budget, len(restricted), cls.name, ids=restricted.ids)
        except MmalError as err:  # the loop's one-line errors, as the author's test failure
            raise AssertionError(f"{err} (check_strategy, budget {budget})") from None

    def budgets(restricted: PoolView) -> list[int]:
        n = len(restricted)
        return sorted({1, 2, max(1, n // 7), n // 2, n})

    def picks_valid():
        strategy, restricted = build()
        for budget in budgets(restricted):
            select(strategy, restricted, budget)

    def picks_seeded():
        strategy, restricted = build()
        for budget in budgets(restricted):
            assert np.array_equal(select(strategy, restricted, budget), select(strategy, restricted, budget)), (
                f"{cls.name}: the same rng seed gave different picks (budget {budget}); draw every random "
                "number from the rng argument (not np.random.default_rng() or a generator kept between calls)"
            )

    def view_untouched():
        strategy, restricted = build()
        snapshot = _copy(restricted._data)
        for budget in budgets(restricted):
            select(strategy, restricted, budget)
            for k, v in snapshot.items():
                assert k in restricted._data and _equal(v, restricted._data[k]), (
                    f"{cls.name}: select() modified the view's '{k}'; a strategy must leave its view as it "
                    f"is (work on a copy: np.array(view.{k}), dict(view.{k}))"
                )

    yield "check_strategy_contract", contract
    yield "check_params_stored", lambda: _check_params_stored(cls, cls(**params), params)
    yield "check_picks_valid", picks_valid
    yield "check_picks_seeded", picks_seeded
    yield "check_view_untouched", view_untouched


# -- datasets ----------------------------------------------------------------------------------
def check_dataset(cls: type, params: dict[str, Any] | None = None, seed: int = 0,
                  every_class: bool = False) -> MultimodalDataset:
    """Run every dataset check; returns the loaded dataset.

    Checks: subclass of Dataset with a lower-case ``name``; parameters stored unchanged;
    ``load`` returns a MultimodalDataset of that name that passes
    :meth:`MultimodalDataset.validate` (shapes, dtypes, finite features, labels in range,
    unique ids, mask shape); loading twice with the same seed gives identical ids, labels,
    masks, features and modalities.

    every_class: also assert that every class ``0 .. n_classes-1`` occurs in the train split
    (the pool) and in the test split (``n_classes`` inconsistent with the labels). Off by
    default, because a small test fixture of a real dataset may lack classes; then a missing
    class is only a :class:`UserWarning`.
    """
    loads: dict[int, MultimodalDataset] = {}
    _run_all(_dataset_checks(cls, dict(params or {}), seed=seed, every_class=every_class, loads=loads))
    return loads[0]


def _dataset_checks(cls: type, params: dict[str, Any], seed: int = 0, every_class: bool = False,
                    loads: dict[int, MultimodalDataset] | None = None) -> Iterator[Check]:
    loads = {} if loads is None else loads  # the two loads, shared by the checks (loading is slow)

    def contract():
        assert isinstance(cls, type) and issubclass(cls, Dataset), f"{cls!r} must subclass mmal_core.Dataset"
        _check_name(cls)

    def load(which: int) -> MultimodalDataset:
        if which not in loads:
            contract()
            loads[which] = _load(cls, params, seed)
        return loads[which]

    def loads_valid():
        a = load(0)
        assert a.name == cls.name, f"{cls.name}: load() returned a dataset named {a.name!r}, expected {cls.name!r}"

    def classes_present():
        a = load(0)
        gaps = []
        for split in ("train", "test"):
            absent = sorted(set(range(a.n_classes)) - set(np.unique(getattr(a, split).labels).tolist()))
            if absent:
                gaps.append(f"class(es) {absent[:10]} never occur in the {split} split")
        if gaps:
            message = (
                f"{cls.name}: {'; '.join(gaps)} (n_classes={a.n_classes}); n_classes must match the labels "
                "and every class needs samples in train and test"
            )
            assert not every_class, message
            warnings.warn(message, UserWarning, stacklevel=2)

    def deterministic():
        a, b = load(0), load(1)
        again = f"{cls.name}: load({seed}) twice gave different"
        assert a.n_classes == b.n_classes, f"{again} n_classes"
        assert a.modalities == b.modalities, f"{again} modalities"
        for split in ("train", "test"):
            x, y = getattr(a, split), getattr(b, split)
            assert np.array_equal(x.ids, y.ids), f"{again} {split} ids (sample ids must be stable: results store them)"
            assert np.array_equal(x.labels, y.labels), f"{again} {split} labels"
            assert np.array_equal(x.mask, y.mask), f"{again} {split} mask"
            for m in x.modalities:
                assert np.array_equal(x.features[m], y.features[m]), f"{again} {split}/{m} features"

    yield "check_dataset_contract", contract
    yield "check_params_stored", lambda: _check_params_stored(cls, cls(**params), params)
    yield "check_load_valid", loads_valid
    yield "check_classes_present", classes_present
    yield "check_load_deterministic", deterministic


# -- models ------------------------------------------------------------------------------------
def check_model(cls: type, params: dict[str, Any] | None = None) -> None:
    """Run every model check (see :func:`_model_checks`)."""
    _run_all(_model_checks(cls, dict(params or {})))


def tiny_dataset(n_train: int = 48, n_test: int = 24, n_classes: int = 3, dims: tuple[int, ...] = (4, 3),
                 missing_rate: float = 0.25, seed: int = 0) -> MultimodalDataset:
    """A small learnable multimodal dataset with missing modalities, for model checks."""
    rng = np.random.default_rng(seed)
    names = [f"m{j}" for j in range(len(dims))]

    def split(n: int, offset: int) -> Split:
        labels = np.arange(n) % n_classes
        feats = {m: rng.normal(size=(n, d)) + labels[:, None] for m, d in zip(names, dims)}
        mask = rng.random((n, len(dims))) > missing_rate
        mask[~mask.any(axis=1), 0] = True
        return Split(feats, mask, labels, ids=np.arange(offset, offset + n))

    data = MultimodalDataset("tiny", [ModalitySpec(m, d) for m, d in zip(names, dims)], n_classes,
                             split(n_train, 0), split(n_test, n_train))
    return data.validate()


def _check_prediction_fields(name: str, out: dict[str, Any], want: set[str], n: int, c: int, names: list[str]) -> None:
    """Every requested PoolView field of a prediction on ``n`` samples of ``c`` classes has the
    shape the PoolView expects; probabilities are finite, non-negative and sum to one."""
    assert set(out) >= want, f"{name}: predict() left out {sorted(want - set(out))}"

    def probs(what: str, p: Any, shape: tuple[int, ...]):
        p = np.asarray(p)
        assert p.shape == shape, f"{name}: {what} has shape {p.shape}, expected {shape}"
        assert np.isfinite(p).all() and (p >= 0).all(), f"{name}: {what} must be finite and non-negative"
        assert np.allclose(p.sum(axis=-1), 1.0, atol=1e-4), f"{name}: {what} rows must sum to 1"

    def embedding(what: str, e: Any):
        e = np.asarray(e)
        assert e.ndim == 2 and len(e) == n and np.isfinite(e).all(), (
            f"{name}: {what} must be a finite (n, d) array, got shape {e.shape}"
        )

    if "probs" in want:
        probs("probs", out["probs"], (n, c))
    if "mc_probs" in want:
        probs("mc_probs", out["mc_probs"], (3, n, c))
    if "embeddings" in want:
        embedding("embeddings", out["embeddings"])
    for field in ("modality_probs", "modality_embeddings"):
        if field in want:
            assert list(out[field]) == names, f"{name}: {field} keys are {list(out[field])}, expected {names}"
            for m in names:
                (probs if field == "modality_probs" else embedding)(f"{field}['{m}']", *(
                    (out[field][m], (n, c)) if field == "modality_probs" else (out[field][m],)))
    if "subset_probs" in want:
        # Every subset, the empty one (every modality masked) included.
        subsets = {s for r in range(0, len(names) + 1) for s in combinations(names, r)}
        assert subsets <= set(out["subset_probs"]), (
            f"{name}: subset_probs must have every subset of {names}, () included, got {sorted(out['subset_probs'])}"
        )
        for s in subsets:
            probs(f"subset_probs[{s}]", out["subset_probs"][s], (n, c))


def _model_checks(cls: type, params: dict[str, Any]) -> Iterator[Check]:
    """Checks of a model class, on :func:`tiny_dataset` (use fast parameters in ``params``).

    ``check_model_contract``: subclass of Model, a lower-case ``name``, a ``version`` string, ``provides`` and
    ``provided()`` within the PoolView fields; ``check_params_stored``; ``check_predict_shapes``:
    every provided field has the shape the PoolView expects (probabilities sum to one);
    ``check_fit_deterministic``: the same seed gives the same probabilities;
    ``check_missing_ignored``: features of a missing modality do not change any output, and
    ``keep`` hides a modality like the mask does; ``check_warm_start``: ``state()`` is bytes that
    ``fit(init_state=...)`` accepts; ``check_predict_before_fit``: a clear MmalError.
    """
    from .model import Model

    data = tiny_dataset()
    labeled = np.arange(0, len(data.train), 2)
    names = data.modality_names

    def contract():
        assert isinstance(cls, type) and issubclass(cls, Model), f"{cls!r} must subclass mmal_core.model.Model"
        _check_name(cls)
        assert isinstance(cls.version, str) and cls.version, f"{cls.__name__}.version must be a non-empty string"
        assert set(cls.provides) <= REQUIREMENTS, f"{cls.__name__}.provides has unknown fields {set(cls.provides) - REQUIREMENTS}"
        provided = cls(**params).provided()
        assert set(provided) <= set(cls.provides), f"{cls.__name__}.provided() {sorted(provided)} is not within provides"

    def fitted(seed: int = 0, init_state: bytes | None = None) -> Any:
        contract()
        model = cls(**params)
        model.setup(data.modalities, data.n_classes)
        model.fit(data.train, labeled, seed=seed, init_state=init_state)
        return model

    def predict(model: Any, split: Split, want: Iterable[str], keep=None) -> dict[str, Any]:
        return model.predict(split, None, want=set(want), params={"mc_samples": 3}, keep=keep)

    def shapes():
        model = fitted()
        want = set(model.provided())
        out = predict(model, data.test, want)
        _check_prediction_fields(cls.name, out, want, len(data.test), data.n_classes, names)

    def deterministic():
        a = predict(fitted(seed=5), data.test, {"probs"})["probs"]
        b = predict(fitted(seed=5), data.test, {"probs"})["probs"]
        assert np.array_equal(a, b), f"{cls.name}: two fits with the same seed predicted different probabilities"

    def missing_ignored():
        model = fitted()
        want = set(model.provided()) - {"mc_probs"}
        base = predict(model, data.test, want)
        noisy = data.test.subset(np.arange(len(data.test)))
        for j, m in enumerate(names):
            x = noisy.features[m]
            x[~noisy.mask[:, j]] = 1e3  # what a missing modality's rows hold must not matter
        changed = predict(model, noisy, want)
        for field in sorted(want):
            assert _close(base[field], changed[field]), (
                f"{cls.name}: {field} changed when the features of missing modalities changed; "
                "a missing modality (mask False) must contribute nothing"
            )
        keep = np.array([True] + [False] * (len(names) - 1))
        hidden = data.test.subset(np.arange(len(data.test)))
        hidden.mask[:, 1:] = False
        rows = data.test.mask[:, 0]  # samples that still have a modality when only the first is kept
        a = predict(model, data.test, {"probs"}, keep=keep)["probs"][rows]
        b = predict(model, hidden, {"probs"})["probs"][rows]
        assert _close(a, b), f"{cls.name}: predict(keep=...) must treat the modalities it hides as missing"

    def warm_start():
        state = fitted().state()
        assert isinstance(state, bytes) and state, f"{cls.name}: state() must return non-empty bytes"
        model = fitted(seed=1, init_state=state)
        predict(model, data.test, {"probs"})

    def predict_before_fit():
        model = cls(**params)
        model.setup(data.modalities, data.n_classes)
        try:
            model.predict(data.test, None, want={"probs"})
        except MmalError:
            return
        except Exception as err:
            raise AssertionError(
                f"{cls.name}: predict() before fit() raised {type(err).__name__}: {err}; raise MmalError with one line"
            ) from None
        raise AssertionError(f"{cls.name}: predict() before fit() must raise MmalError, it answered")

    yield "check_model_contract", contract
    yield "check_params_stored", lambda: _check_params_stored(cls, cls(**params), params)
    yield "check_predict_shapes", shapes
    yield "check_fit_deterministic", deterministic
    yield "check_missing_ignored", missing_ignored
    yield "check_warm_start", warm_start
    yield "check_predict_before_fit", predict_before_fit


# -- metrics -----------------------------------------------------------------------------------
def check_metric(cls: type, params: dict[str, Any] | None = None) -> None:
    """Run every metric check (see :func:`_metric_checks`)."""
    _run_all(_metric_checks(cls, dict(params or {})))


_FITTED: dict[str, Any] = {}


def fitted_tiny_model() -> tuple[Any, MultimodalDataset, np.ndarray]:
    """A FusionMLP fitted on half of :func:`tiny_dataset`'s pool: ``(model, dataset, labeled)``.

    Built once per process (metric checks share it)."""
    if "model" not in _FITTED:
        from .builtin.fusion import FusionMLP

        data = tiny_dataset()
        labeled = np.arange(0, len(data.train), 2)
        model = FusionMLP(hidden=16, epochs=5, min_steps=10, device="cpu")
        model.setup(data.modalities, data.n_classes)
        model.fit(data.train, labeled, seed=0)
        _FITTED.update(model=model, data=data, labeled=labeled)
    return _FITTED["model"], _FITTED["data"], _FITTED["labeled"]


class _Restricted:
    """A model that provides only ``fields`` and refuses to predict anything else."""

    def __init__(self, model: Any, fields: frozenset[str]):
        self.model, self.fields = model, fields

    def provided(self) -> frozenset[str]:
        return self.fields

    def predict(self, split, index=None, want=frozenset({"probs"}), params=None, keep=None):
        extra = set(want) - self.fields
        assert not extra, f"predict() was asked for {sorted(extra)}, which the metric does not list in needs"
        return self.model.predict(split, index, want=want, params=params, keep=keep)


def _metric_checks(cls: type, params: dict[str, Any]) -> Iterator[Check]:
    """Checks of a metric class, on :func:`tiny_dataset` with a fitted FusionMLP.

    ``check_metric_contract``: subclass of Metric, a lower-case ``name`` that is not reserved,
    ``higher_is_better`` a bool, ``needs`` within the model fields and context needs, no
    parameters; ``check_metric_value``: ``compute`` returns a finite number or a dict of finite
    numbers keyed by str; ``check_metric_deterministic``: two fresh contexts give the same value;
    ``check_needs_honoured``: computed against a model that provides only what ``needs`` lists
    (reading anything else fails).
    """
    from .metrics import CONTEXT_NEEDS, Metric, MetricContext, compute_metrics
    from .view import REQUIREMENTS

    def contract():
        from .metrics import check_metric_class

        assert isinstance(cls, type) and issubclass(cls, Metric), f"{cls!r} must subclass mmal_core.Metric"
        _check_name(cls)
        assert not params, f"{cls.__name__}: metrics take no parameters"
        try:
            check_metric_class(cls, cls.__name__)
        except MmalError as err:
            raise AssertionError(str(err)) from None
        assert isinstance(cls.summary, str), f"{cls.__name__}.summary must be a string"

    def compute(model: Any) -> Any:
        contract()
        _, data, labeled = fitted_tiny_model()
        metric = cls()
        ctx = MetricContext(model, data, labeled, prefetch=metric.needs)
        try:
            return compute_metrics([(metric, f"metric '{cls.name}'")], ctx)[cls.name]
        except MmalError as err:
            raise AssertionError(str(err)) from None

    def value():
        model = fitted_tiny_model()[0]
        missing = set(cls.needs) - set(model.provided()) - CONTEXT_NEEDS
        if missing:
            warnings.warn(f"{cls.name}: FusionMLP does not provide {sorted(missing)}; value not checked",
                          UserWarning, stacklevel=2)
            return
        v = compute(model)
        values = v.values() if isinstance(v, dict) else [v]
        assert all(np.isfinite(x) for x in values), f"{cls.name}: compute() gave non-finite values {v!r} on tiny_dataset()"

    def deterministic():
        model = fitted_tiny_model()[0]
        if set(cls.needs) - set(model.provided()) - CONTEXT_NEEDS:
            return
        a, b = compute(model), compute(model)
        assert _equal(a, b), f"{cls.name}: two computations on the same model gave {a!r} and {b!r}"

    def needs_honoured():
        model = fitted_tiny_model()[0]
        fields = frozenset(cls.needs) & REQUIREMENTS
        if set(cls.needs) & {"keep", "coalitions"}:  # predictions with modalities hidden
            fields |= {"probs"}
        if fields - set(model.provided()):
            return
        compute(_Restricted(model, fields))

    yield "check_metric_contract", contract
    yield "check_metric_value", value
    yield "check_metric_deterministic", deterministic
    yield "check_needs_honoured", needs_honoured


# -- encoders ----------------------------------------------------------------------------------
def sample_items(kind: str, n: int = 5, seed: int = 0) -> list[Any]:
    """``n`` raw items of a built-in encoder kind (vector, text, image, audio), for encoder checks."""
    rng = np.random.default_rng(seed)
    if kind == "vector":
        return [rng.normal(size=8) for _ in range(n)]
    if kind == "text":
        words = ["red", "cat", "sits", "on", "a", "blue", "mat", "near", "the", "door"]
        return [" ".join(rng.choice(words, size=5)) for _ in range(n)]
    if kind == "image":
        return [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(n)]
    if kind == "audio":
        t = np.arange(4000) / 8000.0
        return [(np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.1 * rng.normal(size=t.size), 8000) for i in range(n)]
    raise ValueError(f"no sample items for kind {kind!r}: pass items=[...] (options of the check)")


def check_encoder(cls: type, params: dict[str, Any] | None = None, items: list[Any] | None = None) -> None:
    """Run every encoder check (see :func:`_encoder_checks`)."""
    _run_all(_encoder_checks(cls, dict(params or {}), items=items))


def _encoder_checks(cls: type, params: dict[str, Any], items: list[Any] | None = None) -> Iterator[Check]:
    """Checks of an encoder class.

    ``check_encoder_contract``: subclass of Encoder with a lower-case ``name``, a string
    ``version`` and a ``kind``; ``check_params_stored``; ``check_describe_stable``: ``describe()``
    is JSON and the same twice (it keys the feature cache); ``check_encode_shape``: (n, d) finite
    float32; ``check_encode_deterministic``; ``check_encode_batch_independent``: a row does not
    depend on the other items of its batch.
    """
    from .cache import Encoder

    def contract():
        assert isinstance(cls, type) and issubclass(cls, Encoder), f"{cls!r} must subclass mmal_core.Encoder"
        _check_name(cls)
        assert isinstance(cls.version, str) and cls.version, f"{cls.__name__}.version must be a non-empty string"
        assert isinstance(cls.kind, str) and cls.kind, f"{cls.__name__}.kind must name the raw items it accepts"

    def raw() -> list[Any]:
        return list(items) if items is not None else sample_items(cls.kind)

    def encode(batch: list[Any]) -> np.ndarray:
        contract()
        try:
            return cls(**params).encode(batch)
        except MmalError as err:
            raise AssertionError(f"{cls.name}: encode() failed: {err}") from None

    def describe_stable():
        contract()
        a, b = cls(**params).describe(), cls(**params).describe()
        json.dumps(a, sort_keys=True)
        assert a == b, f"{cls.name}: describe() differs between two instances with the same parameters"

    def shape():
        batch = raw()
        x = encode(batch)
        assert isinstance(x, np.ndarray) and x.dtype == np.float32, f"{cls.name}: encode() must return a float32 array"
        assert x.ndim == 2 and len(x) == len(batch) and x.shape[1] > 0, (
            f"{cls.name}: encode() of {len(batch)} items gave shape {x.shape}, expected ({len(batch)}, d)"
        )
        assert np.isfinite(x).all(), f"{cls.name}: encode() gave NaN or inf"

    def deterministic():
        batch = raw()
        assert np.array_equal(encode(batch), encode(batch)), f"{cls.name}: encoding the same items twice differed"

    def batch_independent():
        batch = raw()
        whole = encode(batch)
        alone = np.concatenate([encode([item]) for item in batch])
        assert np.allclose(whole, alone, rtol=1e-4, atol=1e-5), (
            f"{cls.name}: an item's vector depends on the other items of its batch"
        )

    yield "check_encoder_contract", contract
    yield "check_params_stored", lambda: _check_params_stored(cls, cls(**params), params)
    yield "check_describe_stable", describe_stable
    yield "check_encode_shape", shape
    yield "check_encode_deterministic", deterministic
    yield "check_encode_batch_independent", batch_independent


# -- benchmarks --------------------------------------------------------------------------------
def check_benchmark(bench: Any) -> None:
    """Run every benchmark check (see :func:`_benchmark_checks`)."""
    _run_all(_benchmark_checks(bench))


def _benchmark_checks(bench: Any) -> Iterator[Check]:
    """Checks of a Benchmark instance.

    ``check_benchmark_contract``: a Benchmark with a lower-case name; ``check_hash_stable``: the
    canonical spec is JSON and a rebuilt benchmark has the same hash; ``check_metrics_registered``:
    every compared metric path starts with a registered metric's name; ``check_plugins_valid``:
    when its dataset and model are installed, both build with the given parameters and the
    budget fits the dataset's pool (skipped with a warning when they are not installed).
    """
    from dataclasses import replace

    from .benchmark import Benchmark

    def contract():
        assert isinstance(bench, Benchmark), f"{bench!r} must be a mmal_core.benchmarks.Benchmark"
        _check_name(bench)

    def hash_stable():
        contract()
        json.dumps(bench.canonical(), sort_keys=True)
        assert replace(bench).hash == bench.hash, f"{bench.name}: rebuilding the benchmark changed its hash"

    def plugins_valid():
        contract()
        from .loop import build_model
        from .params import construct
        from .plugins import benchmark_availability, get_plugin_manager

        available, why = benchmark_availability(bench)
        if not available:
            warnings.warn(f"{bench.name}: not checked against its plugins: {why}", UserWarning, stacklevel=2)
            return
        try:
            build_model(bench.model)
            cls = get_plugin_manager().get("dataset", bench.dataset.name)
            data = construct(cls, bench.dataset.params, f"dataset '{bench.dataset.name}'").load(bench.seeds[0])
        except MmalError as err:
            raise AssertionError(f"{bench.name}: {err}") from None
        need = bench.labeled_counts()[-1]
        assert need <= len(data.train), (
            f"{bench.name}: the budget labels {need} samples but the pool has {len(data.train)}"
        )

    def metrics_registered():
        contract()
        from .plugins import check_metric_path

        for path in bench.metrics:
            try:
                check_metric_path(path, f"{bench.name}: metrics")
            except MmalError as err:
                raise AssertionError(str(err)) from None

    yield "check_benchmark_contract", contract
    yield "check_hash_stable", hash_stable
    yield "check_metrics_registered", metrics_registered
    yield "check_plugins_valid", plugins_valid


def _load(cls: type, params: dict[str, Any], seed: int) -> MultimodalDataset:
    """``cls(**params).load(seed)``, validated; a contract failure becomes an AssertionError."""
    try:
        dataset = cls(**params).load(seed)
        assert isinstance(dataset, MultimodalDataset), (
            f"{cls.name}: load() must return a MultimodalDataset, got {type(dataset).__name__}"
        )
        return dataset.validate()
    except MmalError as err:
        raise AssertionError(f"{cls.name}: {err}") from None


def _check_name(obj: Any) -> None:
    what = obj.__name__ if isinstance(obj, type) else type(obj).__name__
    name = obj.name
    assert isinstance(name, str) and name and name == name.strip(), f"{what}.name must be a non-empty string"
    assert _NAME.fullmatch(name), (
        f"{what}.name is {name!r}: use lower case letters, digits, '_', '-' or '.' (it is typed in configs)"
    )


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return np.allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


#: Registered names: typed in configs and shown in tables.
_NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]*")


def _check_params_stored(cls: type, obj: Any, params: dict[str, Any]) -> None:
    """Every ``__init__`` parameter is stored unchanged under its own name (get_params)."""
    sig = inspect.signature(cls.__init__)
    for p in list(sig.parameters.values())[1:]:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        assert hasattr(obj, p.name), f"{cls.__name__} must store parameter '{p.name}' as an attribute"
        expected = params.get(p.name, p.default)
        if expected is not inspect.Parameter.empty:
            got = getattr(obj, p.name)
            assert _same(got, expected), f"{cls.__name__}.{p.name} is {got!r}, expected the value passed ({expected!r})"
    try:
        obj.get_params()
        repr(obj)
    except Exception as err:
        raise AssertionError(f"{cls.__name__}.get_params() failed: {type(err).__name__}: {err}") from None


def _copy(value: Any) -> Any:
    """A deep copy of dicts, lists and arrays (what a view holds), to compare after select."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    if isinstance(value, np.ndarray):
        return np.array(value, copy=True)
    return value


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    return _same(a, b) or (a != a and b != b)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) if not isinstance(a, np.ndarray) else np.array_equal(a, b)
    except Exception:
        return a is b
