"""The model interface: what a model plugin implements.

A model is trained on the labeled set every round and answers the questions a PoolView
needs. :class:`Model` is the interface; mmal's own multimodal network, ``fusion-mlp``, is
:class:`mmal_core.builtin.fusion.FusionMLP`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .data import ModalitySpec, Split
from .params import get_params


class Model:
    """Interface of model plugins.

    Subclasses set ``name``, ``provides`` (the PoolView fields they can compute, see
    :data:`mmal_core.view.REQUIREMENTS`) and take hyper-parameters as keyword arguments of
    ``__init__`` (validated there). The loop calls, each round::

        model.setup(modalities, n_classes)             # once per run
        model.fit(pool, labeled, seed, init_state)     # fresh weights unless init_state
        model.predict(split, index, want={...})        # dict of arrays, see below
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    provides: ClassVar[frozenset[str]] = frozenset()
    #: The version of the model's numbers: bump it whenever the same parameters, data and
    #: seed give different results (another random stream, another solver). It is part of
    #: every run key, config hash and benchmark hash (``ModelSpec.canonical``), so results
    #: of two versions are never resumed into each other or ranked together.
    version: ClassVar[str] = "1"

    def provided(self) -> frozenset[str]:
        """Fields this configured instance can compute (may depend on its parameters)."""
        return frozenset(self.provides)

    def setup(self, modalities: list[ModalitySpec], n_classes: int) -> None:
        raise NotImplementedError

    def fit(self, pool: Split, labeled: np.ndarray, seed: int, init_state: bytes | None = None) -> None:
        """Train on ``pool`` rows ``labeled`` (positions) with randomness from ``seed`` only."""
        raise NotImplementedError

    def predict(
        self,
        split: Split,
        index: np.ndarray | None = None,
        want: set[str] | frozenset[str] = frozenset({"probs"}),
        params: dict[str, Any] | None = None,
        keep: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Outputs for rows ``index`` of ``split`` (all rows when None).

        want: subset of {"probs", "embeddings", "modality_probs", "modality_embeddings",
            "mc_probs", "subset_probs"}.
        params: ``mc_samples`` (T) for ``mc_probs``.
        keep: optional (M,) bool; modalities set False are treated as missing everywhere.
        """
        raise NotImplementedError

    def state(self) -> bytes:
        """Serialized weights, for warm starts and resumable runs."""
        raise NotImplementedError

    #: True when the class implements :meth:`fit_many` (lockstep training of several runs).
    lockstep: ClassVar[bool] = False

    @classmethod
    def fit_many(cls, models: list["Model"], jobs: list[tuple[Split, np.ndarray, int, bytes | None]]) -> None:
        """Optional batched training: fit ``models[k]`` on ``jobs[k] = (pool, labeled, seed,
        init_state)`` for every k at once (lockstep execution of the runs of a study).

        The models are set up alike (same class, parameters, modalities and classes) and the
        labeled sets have equal sizes. Afterwards each model must be exactly what its own
        ``fit(*jobs[k])`` would have made: nothing of one member may depend on the others,
        so a run's results do not change with the group it trains in. It returns None (or
        the K trained models, in order). Classes that implement it set ``lockstep = True``;
        the loop calls ``fit`` one run at a time for the others.
        """
        raise NotImplementedError

    def lockstep_bytes(self, dataset: Any, n_labeled: int) -> int:
        """Rough peak memory (bytes) one run adds to a lockstep round with ``n_labeled``
        labeled samples of ``dataset`` (a :class:`~mmal_core.data.MultimodalDataset`); the
        loop batches a round's runs so that their sum stays within its memory budget. This
        default counts the labeled features twice and float32 answers of the width plus
        eight rows of class probabilities per pool and test sample."""
        width = sum(m.dim for m in dataset.modalities)
        rows = len(dataset.train) + len(dataset.test)
        return 4 * (2 * n_labeled * (width + len(dataset.modalities) + 1) + rows * (width + 8 * dataset.n_classes))

    @classmethod
    def predict_many(cls, models: list["Model"], requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Optional batched inference: ``models[k].predict(**requests[k])`` for every k, as one
        list (lockstep execution evaluates the runs of a group with one call).

        requests: keyword arguments of :meth:`predict` (``split``, ``index``, ``want``,
        ``params``, ``keep``), one dict per model, the models fitted alike (as after
        :meth:`fit_many`). Each answer must be exactly what the model's own ``predict`` gives;
        the loop checks the count and the shapes of what comes back. This default asks each
        model in turn.
        """
        return [model.predict(**request) for model, request in zip(models, requests)]

    def get_params(self) -> dict[str, Any]:
        return get_params(self)


def __getattr__(name: str):
    # FusionMLP and FUSIONS lived here before the built-in model moved to mmal_core.builtin.fusion.
    if name in ("FusionMLP", "FUSIONS", "CPU_STACK"):
        import importlib
        import warnings

        warnings.warn(f"mmal_core.model.{name} moved: import mmal_core.builtin.fusion.{name}", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module("mmal_core.builtin.fusion"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
