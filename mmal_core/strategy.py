"""The query-strategy interface.

A strategy is a small class: parameters in ``__init__`` (validated there, stored unchanged),
a class attribute ``name``, the PoolView fields it needs in ``requires``, and
:meth:`Strategy.select`. Most heuristics only need a score; subclass
:class:`ScoreStrategy` and implement :meth:`ScoreStrategy.score`.
"""

from __future__ import annotations

import random
import sys
from typing import Any, ClassVar

import numpy as np

from .errors import MmalError
from .params import get_params
from .view import REQUIREMENTS, PoolView


class Strategy:
    """Base class of query strategies.

    Class attributes:
        name: the registered name (``"margin"``); lower case, unique across plugins.
        requires: PoolView fields the loop must compute (see :data:`mmal_core.view.REQUIREMENTS`).
        summary: one line shown by ``mmal list strategies``.
        multimodal: True when the strategy needs the model's unimodal heads or encoders.
    """

    name: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()
    summary: ClassVar[str] = ""
    multimodal: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.requires = frozenset(cls.requires)
        unknown = cls.requires - REQUIREMENTS
        if unknown:
            raise TypeError(f"strategy {cls.__name__}: unknown requires {sorted(unknown)}")

    def select(self, view: PoolView, budget: int, rng: np.random.Generator) -> np.ndarray:
        """Pick ``budget`` distinct positions into the unlabeled pool.

        view: the round's :class:`PoolView` (``len(view)`` unlabeled samples).
        budget: how many to pick, ``1 <= budget <= len(view)``.
        rng: the only source of randomness allowed, so a seed reproduces the picks.
        Returns: (budget,) int64 array of unique positions in ``[0, len(view))``.
        """
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as stored (recorded with every run)."""
        return get_params(self)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class GlobalRandomGuard:
    """Notices a strategy drawing from a global random generator instead of its ``rng``.

    Snapshot the global generators (numpy's legacy ``np.random.*`` state, Python's ``random``
    and, when torch is already imported, torch's CPU generator) before ``select`` and call
    :meth:`check` after it: a strategy that drew from any of them gives different picks for
    the same seed (and changes what later code draws), so it is a plugin bug.
    """

    __slots__ = ("_numpy", "_python", "_torch")

    def __init__(self) -> None:
        self._numpy = _numpy_state()
        self._python = random.getstate()
        self._torch = _torch_state()

    def changed(self) -> str | None:
        """The first global generator that was drawn from since the snapshot, or None."""
        state = _numpy_state()
        if state[1] != self._numpy[1] or not np.array_equal(state[0], self._numpy[0]):
            return "numpy's global random state (np.random.*)"
        if random.getstate() != self._python:
            return "Python's random module"
        torch_state = _torch_state()
        if self._torch is not None and torch_state is not None and not torch_state.equal(self._torch):
            return "torch's global generator (torch.rand*, torch.randperm, ... without a generator)"
        return None

    def check(self, who: str) -> None:
        """Raise :class:`MmalError` naming ``who`` when a global generator was used."""
        used = self.changed()
        if used is not None:
            raise MmalError(
                f"{who}: select() used {used}; draw every random number from the rng argument "
                "so that a seed reproduces the picks"
            )


def _numpy_state() -> tuple[np.ndarray, tuple[int, int]]:
    state = np.random.get_state()
    return state[1], (int(state[2]), int(state[3]))


def _torch_state():
    torch = sys.modules.get("torch")  # never import torch just to look at its state
    if torch is None or not hasattr(torch, "get_rng_state"):
        return None
    return torch.get_rng_state()


def top_k(scores: np.ndarray, k: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Positions of the ``k`` largest scores, best first.

    Ties are broken by a random permutation from ``rng`` (deterministic for a seed), or by
    position when ``rng`` is None. Runs in O(n + k log k) via ``argpartition``.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = scores.shape[0]
    if not 0 <= k <= n:
        raise MmalError(f"budget: expected between 0 and {n} (the unlabeled pool), got {k}")
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if np.isnan(scores).any():
        scores = np.where(np.isnan(scores), -np.inf, scores)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    shuffled = scores[order]
    if k < n:
        part = np.argpartition(-shuffled, k - 1)[:k]
        # argpartition may cut a tie group arbitrarily: take every element tied with the
        # k-th value, then resolve the tie by the permuted position.
        kth = shuffled[part].min()
        above = np.flatnonzero(shuffled > kth)
        tied = np.flatnonzero(shuffled == kth)
        chosen = np.concatenate([above, tied[: k - len(above)]])
    else:
        chosen = np.arange(n)
    chosen = chosen[np.lexsort((chosen, -shuffled[chosen]))]
    return order[chosen].astype(np.int64)


class ScoreStrategy(Strategy):
    """A strategy that ranks samples by an informativeness score (higher is picked first)."""

    def score(self, view: PoolView) -> np.ndarray:
        """(n,) scores, higher means more worth labeling."""
        raise NotImplementedError

    def select(self, view: PoolView, budget: int, rng: np.random.Generator) -> np.ndarray:
        return top_k(self._checked_scores(view), budget, rng)

    def _checked_scores(self, view: PoolView) -> np.ndarray:
        """``score(view)`` as a float array, or a one-line error saying what came back."""
        raw = self.score(view)
        n = len(view)
        try:
            scores = None if np.iscomplexobj(raw) else np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            scores = None
        if scores is None or raw is None or scores.shape != (n,):
            got = "None" if raw is None else (
                f"shape {scores.shape}" if scores is not None
                else "complex numbers" if np.iscomplexobj(raw) else type(raw).__name__
            )
            raise MmalError(
                f"strategy {self.name or type(self).__name__}: score() must return {n} numbers "
                f"(one per unlabeled sample), got {got}"
            )
        if n and np.isnan(scores).all():  # NaN ranks last; only NaN would be a silent random pick
            raise MmalError(f"strategy {self.name or type(self).__name__}: score() returned only NaN for {n} samples")
        return scores
