"""Uncertainty sampling on the fused model's class probabilities.

References: Lewis & Gale (1994) for uncertainty sampling; Scheffer et al. (2001) for the
margin; Shannon entropy as in Settles, "Active Learning Literature Survey" (2009), §3.1.
"""

from __future__ import annotations

import numpy as np

from mmal_core import PoolView, ScoreStrategy, Strategy


class RandomSampling(Strategy):
    """Uniform random sampling without replacement: the baseline every study needs."""

    name = "random"
    summary = "uniformly random picks (baseline)"

    def select(self, view: PoolView, budget: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(view), size=budget, replace=False).astype(np.int64)


class LeastConfidence(ScoreStrategy):
    """Least confidence: score = 1 - max_c p(c | x) on the fused model (Lewis & Gale, 1994)."""

    name = "least_confidence"
    summary = "1 - max class probability of the fused model"
    requires = frozenset({"probs"})

    def score(self, view: PoolView) -> np.ndarray:
        return 1.0 - np.asarray(view.probs, dtype=np.float64).max(axis=1)


class Margin(ScoreStrategy):
    """Smallest margin between the two most probable classes (Scheffer et al., 2001)."""

    name = "margin"
    summary = "smallest gap between the top-2 fused class probabilities"
    requires = frozenset({"probs"})

    def score(self, view: PoolView) -> np.ndarray:
        probs = np.asarray(view.probs, dtype=np.float64)
        top2 = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]
        return -(top2[:, 1] - top2[:, 0])


class Entropy(ScoreStrategy):
    """Maximum entropy of the fused class distribution, -sum_c p log p (Settles, 2009)."""

    name = "entropy"
    summary = "Shannon entropy of the fused class probabilities"
    requires = frozenset({"probs"})

    def score(self, view: PoolView) -> np.ndarray:
        return entropy(np.asarray(view.probs, dtype=np.float64))


def entropy(probs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (0 log 0 = 0)."""
    p = np.clip(probs, 0.0, 1.0)
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=axis)
