"""Conformance checks for plugin authors (the role of scikit-learn's estimator checks).

In a plugin's own tests::

    from mmal_core.testing import check_strategy, check_dataset
    def test_my_strategy_conforms():
        check_strategy(MyStrategy)                  # default parameters
        check_strategy(MyStrategy, {"k": 3})        # or given ones

Each check raises ``AssertionError`` with a message that says what is wrong.
"""

from __future__ import annotations

import inspect
import re
import warnings
from typing import Any

import numpy as np

from .data import Dataset, MultimodalDataset
from .errors import MmalError
from .strategy import Strategy
from .view import REQUIREMENTS, PoolView


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


def check_strategy(cls: type, params: dict[str, Any] | None = None, view: PoolView | None = None) -> None:
    """Assert that a strategy class follows the plugin contract.

    Checks: subclass of Strategy with a lower-case ``name``; ``requires`` known; parameters
    stored unchanged; for several budgets the picks pass the loop's own check (unique integer
    positions of the right count in range, see :func:`mmal_core.loop.check_picks`); the same
    rng seed gives the same picks; no global random generator is drawn from (numpy's
    ``np.random.*``, Python's ``random``, torch's default generator); only declared fields
    are read; nothing in the view (arrays, per-modality dicts, metrics) is modified.
    """
    from .loop import check_picks
    from .strategy import GlobalRandomGuard
    from .view import ALWAYS

    params = dict(params or {})
    assert isinstance(cls, type) and issubclass(cls, Strategy), f"{cls!r} must subclass mmal_core.Strategy"
    assert isinstance(cls.name, str) and cls.name and cls.name == cls.name.strip(), f"{cls.__name__}.name must be a non-empty string"
    assert _NAME.fullmatch(cls.name), (
        f"{cls.__name__}.name is {cls.name!r}: use lower case letters, digits, '_', '-' or '.' (it is typed in configs)"
    )
    assert set(cls.requires) <= REQUIREMENTS, f"{cls.__name__}.requires has unknown fields {set(cls.requires) - REQUIREMENTS}"
    assert (cls.__doc__ or "").strip(), f"{cls.__name__} needs a docstring citing its source"
    strategy = cls(**params)
    _check_params_stored(cls, strategy, params)
    full = view if view is not None else synthetic_view()
    # Only what is declared (plus the always-present fields) is visible to the strategy.
    restricted = PoolView(
        **{k: full._data[k] for k in full.fields() if k in set(cls.requires) | set(ALWAYS)}
    )._for_strategy(cls.name)
    n = len(restricted)
    snapshot = _copy(restricted._data)

    def select(budget: int) -> np.ndarray:
        guard = GlobalRandomGuard()
        try:
            answer = strategy.select(restricted, budget, np.random.default_rng(123))
            guard.check(f"strategy '{cls.name}'")
            picks = check_picks(answer, budget, n, cls.name, ids=restricted.ids)
        except MmalError as err:  # the loop's one-line errors, as the author's test failure
            raise AssertionError(f"{err} (check_strategy, budget {budget})") from None
        for k, v in snapshot.items():
            assert k in restricted._data and _equal(v, restricted._data[k]), (
                f"{cls.name}: select() modified the view's '{k}'; a strategy must leave its view as it "
                f"is (work on a copy: np.array(view.{k}), dict(view.{k}))"
            )
        return picks

    for budget in sorted({1, 2, max(1, n // 7), n // 2, n}):
        picks = select(budget)
        again = select(budget)
        assert np.array_equal(picks, again), (
            f"{cls.name}: the same rng seed gave different picks (budget {budget}); draw every random "
            "number from the rng argument (not np.random.default_rng() or a generator kept between calls)"
        )


def check_dataset(cls: type, params: dict[str, Any] | None = None, seed: int = 0,
                  every_class: bool = False) -> MultimodalDataset:
    """Assert that a dataset class follows the contract; returns the loaded dataset.

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
    params = dict(params or {})
    assert isinstance(cls, type) and issubclass(cls, Dataset), f"{cls!r} must subclass mmal_core.Dataset"
    assert isinstance(cls.name, str) and cls.name, f"{cls.__name__}.name must be set"
    assert _NAME.fullmatch(cls.name), (
        f"{cls.__name__}.name is {cls.name!r}: use lower case letters, digits, '_', '-' or '.' (it is typed in configs)"
    )
    builder = cls(**params)
    _check_params_stored(cls, builder, params)
    a = _load(cls, params, seed)
    assert a.name == cls.name, f"{cls.name}: load() returned a dataset named {a.name!r}, expected {cls.name!r}"
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
    b = _load(cls, params, seed)
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
    return a


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
