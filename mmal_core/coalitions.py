"""Coalitions of modalities: the fused model's prediction with only a subset present, and the
exact Shapley values of the game those predictions define.

The utilization metrics (:mod:`mmal_core.utilization`) and the per-round metric context
(:meth:`mmal_core.metrics.MetricContext.coalition_probs`) are built on these.
"""

from __future__ import annotations

from math import factorial
from typing import Any

import numpy as np

from .errors import MmalError

#: Exact Shapley values enumerate 2^M coalitions; beyond this they are refused.
MAX_SHAPLEY_MODALITIES = 8


def check_modality_count(n_modalities: int, where: str) -> None:
    """Raise :class:`MmalError` when exact Shapley metrics cannot be computed for ``n_modalities``."""
    if n_modalities > MAX_SHAPLEY_MODALITIES:
        raise MmalError(
            f"{where}: exact Shapley utilization metrics support at most {MAX_SHAPLEY_MODALITIES} modalities, "
            f"the dataset has {n_modalities}; set 'metrics: {{utilization: false}}' in the config to skip them"
        )


def coalition_masks(n_modalities: int) -> np.ndarray:
    """(2^M, M) bool: row ``s`` has modality ``j`` present iff bit ``j`` of ``s`` is set."""
    s = np.arange(2**n_modalities)[:, None]
    return ((s >> np.arange(n_modalities)[None, :]) & 1).astype(bool)


def shapley_from_coalitions(values: np.ndarray) -> np.ndarray:
    """Exact Shapley values from the value of every coalition.

    values: (2^M, ...) array; ``values[s]`` is the value of the coalition whose members are the
        set bits of ``s`` (``values[0]`` the empty coalition). Trailing axes are batched, so
        per-sample games (``(2^M, n)``) are solved at once.
    Returns: (M, ...) array ``phi`` with ``phi.sum(0) == values[-1] - values[0]`` (efficiency).
    """
    values = np.asarray(values, dtype=np.float64)
    n_coalitions = values.shape[0]
    M = n_coalitions.bit_length() - 1
    if n_coalitions != 2**M or M < 1:
        raise MmalError(f"shapley: expected 2^M coalition values, got {n_coalitions}")
    sizes = coalition_masks(M).sum(axis=1)
    weight = np.array([factorial(k) * factorial(M - k - 1) / factorial(M) for k in range(M)])
    phi = np.zeros((M,) + values.shape[1:])
    for j in range(M):
        without = np.flatnonzero(((np.arange(n_coalitions) >> j) & 1) == 0)
        gain = values[without | (1 << j)] - values[without]
        w = weight[sizes[without]].reshape((-1,) + (1,) * (values.ndim - 1))
        phi[j] = (w * gain).sum(axis=0)
    return phi


def label_prior(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) class frequencies of ``labels``, add-one smoothed (never zero)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return (counts + 1.0) / (counts.sum() + n_classes)


def coalition_probs(model: Any, split: Any, names: list[str]) -> list[np.ndarray]:
    """Fused (n, C) probabilities on ``split`` for every non-empty coalition, indexed by bitmask.

    Entry ``s`` (1 <= s < 2^M) is the prediction with only the modalities of bitmask ``s``
    present; entry 0 is None (the empty coalition is the label prior, see :func:`utilization`).
    Uses one ``subset_probs`` pass when the model provides it, else one masked pass per coalition.
    """
    M = len(names)
    masks = coalition_masks(M)
    out: list[Any] = [None] * (2**M)
    if "subset_probs" in model.provided():
        subsets = model.predict(split, want={"subset_probs"})["subset_probs"]
        for s in range(1, 2**M):
            out[s] = subsets[tuple(m for m, keep in zip(names, masks[s]) if keep)]
    else:
        for s in range(1, 2**M):
            out[s] = model.predict(split, want={"probs"}, keep=masks[s])["probs"]
    return out
