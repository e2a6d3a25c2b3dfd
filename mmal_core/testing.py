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
    for r in range(1, M + 1):
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
    stored unchanged; for several budgets the picks are unique int positions of the right
    count in range; the same rng seed gives the same picks; only declared fields are read;
    the view is not modified.
    """
    params = dict(params or {})
    assert isinstance(cls, type) and issubclass(cls, Strategy), f"{cls!r} must subclass mmal_core.Strategy"
    assert isinstance(cls.name, str) and cls.name and cls.name == cls.name.strip(), f"{cls.__name__}.name must be a non-empty string"
    assert set(cls.requires) <= REQUIREMENTS, f"{cls.__name__}.requires has unknown fields {set(cls.requires) - REQUIREMENTS}"
    assert (cls.__doc__ or "").strip(), f"{cls.__name__} needs a docstring citing its source"
    strategy = cls(**params)
    sig = inspect.signature(cls.__init__)
    for p in list(sig.parameters.values())[1:]:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        assert hasattr(strategy, p.name), f"{cls.__name__} must store parameter '{p.name}' as an attribute"
        expected = params.get(p.name, p.default)
        if expected is not inspect.Parameter.empty:
            got = getattr(strategy, p.name)
            assert _same(got, expected), f"{cls.__name__}.{p.name} is {got!r}, expected the value passed ({expected!r})"
    full = view if view is not None else synthetic_view()
    # Only what is declared (plus the always-present fields) is visible to the strategy.
    from .view import ALWAYS

    restricted = PoolView(**{k: full._data[k] for k in full.fields() if k in set(cls.requires) | set(ALWAYS)})
    n = len(restricted)
    snapshot = {k: np.array(v, copy=True) for k, v in restricted._data.items() if isinstance(v, np.ndarray)}
    for budget in sorted({1, 2, max(1, n // 7), n // 2, n}):
        picks = strategy.select(restricted, budget, np.random.default_rng(123))
        picks = np.asarray(picks)
        assert picks.ndim == 1, f"{cls.name}: select() must return a 1-D array, got shape {picks.shape}"
        assert np.issubdtype(picks.dtype, np.integer), f"{cls.name}: select() must return integers, got {picks.dtype}"
        assert len(picks) == budget, f"{cls.name}: budget {budget} gave {len(picks)} picks"
        assert len(np.unique(picks)) == budget, f"{cls.name}: budget {budget} gave duplicate picks"
        assert picks.min() >= 0 and picks.max() < n, f"{cls.name}: picks outside [0, {n})"
        again = np.asarray(strategy.select(restricted, budget, np.random.default_rng(123)))
        assert np.array_equal(picks, again), f"{cls.name}: the same rng seed gave different picks (budget {budget})"
    for k, v in snapshot.items():
        assert np.array_equal(v, restricted._data[k]), f"{cls.name}: select() modified the view's '{k}'"


def check_dataset(cls: type, params: dict[str, Any] | None = None, seed: int = 0) -> MultimodalDataset:
    """Assert that a dataset class follows the contract; returns the loaded dataset."""
    assert isinstance(cls, type) and issubclass(cls, Dataset), f"{cls!r} must subclass mmal_core.Dataset"
    assert cls.name, f"{cls.__name__}.name must be set"
    builder = cls(**(params or {}))
    a = builder.load(seed)
    assert isinstance(a, MultimodalDataset), f"{cls.name}: load() must return a MultimodalDataset"
    try:
        a.validate()
    except MmalError as err:
        raise AssertionError(f"{cls.name}: {err}") from None
    b = cls(**(params or {})).load(seed)
    for split in ("train", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert np.array_equal(x.labels, y.labels), f"{cls.name}: same seed, different {split} labels"
        assert np.array_equal(x.mask, y.mask), f"{cls.name}: same seed, different {split} mask"
        for m in x.modalities:
            assert np.array_equal(x.features[m], y.features[m]), f"{cls.name}: same seed, different {split}/{m} features"
    return a


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) if not isinstance(a, np.ndarray) else np.array_equal(a, b)
    except Exception:
        return a is b
