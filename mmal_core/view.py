"""PoolView: everything a query strategy may see of the model and the unlabeled pool.

A strategy never trains and never touches the dataset: it scores arrays. The loop builds a
PoolView from the round's trained model with :meth:`PoolView.from_model`, computing only the
fields the strategy lists in ``requires``. Tests and plugin authors build one directly from
keyword arrays::

    view = PoolView(probs=np.array([[0.9, 0.1], [0.5, 0.5]]))

Fields (``n`` unlabeled samples, ``n_l`` labeled, ``C`` classes, ``M`` modalities):

==========================  ===============================================================
``ids``                     (n,) sample ids of the unlabeled pool, in view order
``probs``                   (n, C) fused class probabilities
``embeddings``              (n, d) fused embedding (input of the fused classifier layer)
``labeled_embeddings``      (n_l, d) fused embedding of the labeled set
``labeled_labels``          (n_l,) labels of the labeled set
``modality_probs``          {modality: (n, C)} probabilities of each unimodal head
``modality_embeddings``     {modality: (n, d_m)} each modality encoder's output
``labeled_modality_embeddings`` {modality: (n_l, d_m)} the same for the labeled set
``mc_probs``                (T, n, C) fused probabilities under T MC-dropout passes
``subset_probs``            {tuple of modalities: (n, C)} fused probabilities when only that
                            subset is present (every subset; the empty tuple ``()`` is the
                            prediction with every modality masked; used for Shapley)
``mask``                    (n, M) bool, True where a modality is present
``labeled_mask``            (n_l, M) bool
``modalities``              list of the M modality names, in mask column order
``n_classes``               number of classes C
``metrics``                 the round's test metrics (accuracy, per-modality values, ...)
``params``                  extra settings the loop passes (``mc_samples`` for mc_probs)
==========================  ===============================================================

Reading a field that was not computed raises :class:`MmalError` naming the field, which
tells a strategy author to add it to ``requires``. Arrays are shared with the loop, not
copied: a strategy must not change them (``check_strategy`` fails one that does); the view
holds its own copies of dicts, lists, ``metrics`` and ``params``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import MmalError

#: Fields a strategy can list in ``requires``; each costs a model pass to compute.
REQUIREMENTS: frozenset[str] = frozenset(
    {
        "probs",
        "embeddings",
        "labeled_embeddings",
        "modality_probs",
        "modality_embeddings",
        "labeled_modality_embeddings",
        "mc_probs",
        "subset_probs",
    }
)

#: Fields that are always present when the loop builds the view (cheap, no model pass).
ALWAYS = ("ids", "mask", "labeled_mask", "labeled_labels", "modalities", "n_classes", "metrics", "params")

_FIELDS = tuple(sorted(REQUIREMENTS)) + ALWAYS


def _own(key: str, value: Any) -> Any:
    """The view's own container for a field, so that a strategy changing its view (popping a
    modality, editing ``metrics``) can never reach the loop's objects: ``metrics`` is the
    dict the round records in the results database. Arrays are shared, not copied."""
    if key in ("metrics", "params"):
        import copy

        return copy.deepcopy(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


class PoolView:
    """Read-only bundle of pool arrays for a query strategy (see module docstring)."""

    __slots__ = ("_data", "_strategy")

    def __init__(self, **fields: Any):
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise MmalError(f"PoolView: unknown field(s) {sorted(unknown)}; known fields: {', '.join(_FIELDS)}")
        data = {k: _own(k, v) for k, v in fields.items() if v is not None}
        n = None
        for key in ("ids", "probs", "embeddings", "mask"):
            if key in data:
                n = len(data[key])
                break
        if "mc_probs" in data and n is None:
            n = np.shape(data["mc_probs"])[1]
        if n is None:
            for key in ("modality_probs", "modality_embeddings", "subset_probs"):
                if key in data and data[key]:
                    n = len(next(iter(data[key].values())))
                    break
        if n is None:
            raise MmalError("PoolView: give at least one per-sample array (ids, probs, embeddings, mask, ...)")
        data.setdefault("ids", np.arange(n, dtype=np.int64))
        if "modalities" not in data:
            for key in ("modality_probs", "modality_embeddings"):
                if key in data:
                    data["modalities"] = list(data[key])
                    break
        if "mask" not in data and "modalities" in data:
            data["mask"] = np.ones((n, len(data["modalities"])), dtype=bool)
        if "n_classes" not in data and "probs" in data:
            data["n_classes"] = int(np.shape(data["probs"])[1])
        data.setdefault("metrics", {})
        data.setdefault("params", {})
        for key in ("ids", "probs", "embeddings", "mask"):
            if key in data and len(data[key]) != n:
                raise MmalError(f"PoolView: '{key}' has {len(data[key])} rows, expected {n}")
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_strategy", None)

    def __getattr__(self, key: str) -> Any:
        if key in _FIELDS:
            data = object.__getattribute__(self, "_data")
            if key in data:
                return data[key]
            who = object.__getattribute__(self, "_strategy")
            who = f"strategy '{who}'" if who else "the strategy"
            raise MmalError(
                f"PoolView has no '{key}': {who} must list '{key}' in its requires"
                if key in REQUIREMENTS
                else f"PoolView has no '{key}'"
            )
        raise AttributeError(key)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("PoolView is read-only")

    def __len__(self) -> int:
        return len(self._data["ids"])

    @property
    def n(self) -> int:
        """Number of unlabeled samples in the view."""
        return len(self)

    def has(self, key: str) -> bool:
        """True when the field was computed (or given)."""
        return key in self._data

    def fields(self) -> list[str]:
        return sorted(self._data)

    def _for_strategy(self, name: str) -> "PoolView":
        object.__setattr__(self, "_strategy", name)
        return self

    @classmethod
    def from_model(cls, model: Any, pool: Any, unlabeled: np.ndarray, labeled: np.ndarray, requires, **extra) -> "PoolView":
        """Compute the fields in ``requires`` from a trained model (see :mod:`mmal_core.model`).

        model: a fitted :class:`mmal_core.model.Model`.
        pool: the train :class:`~mmal_core.data.Split`.
        unlabeled, labeled: positions into ``pool``.
        extra: always-present fields the loop passes (``metrics``, ``n_classes``, ``params``...).
        """
        requires = set(requires)
        unknown = requires - REQUIREMENTS
        if unknown:
            raise MmalError(f"requires: unknown field(s) {sorted(unknown)}; known: {', '.join(sorted(REQUIREMENTS))}")
        params = dict(extra.pop("params", {}) or {})
        out = model.predict(pool, unlabeled, want=requires - {"labeled_embeddings", "labeled_modality_embeddings"}, params=params)
        fields: dict[str, Any] = {k: out[k] for k in requires if k in out}
        lab_want = set()
        if "labeled_embeddings" in requires:
            lab_want.add("embeddings")
        if "labeled_modality_embeddings" in requires:
            lab_want.add("modality_embeddings")
        if lab_want:
            lab = model.predict(pool, labeled, want=lab_want, params=params)
            if "embeddings" in lab_want:
                fields["labeled_embeddings"] = lab["embeddings"]
            if "modality_embeddings" in lab_want:
                fields["labeled_modality_embeddings"] = lab["modality_embeddings"]
        return cls(
            ids=pool.ids[unlabeled],
            mask=pool.mask[unlabeled],
            labeled_mask=pool.mask[labeled],
            labeled_labels=pool.labels[labeled],
            modalities=list(pool.modalities),
            params=params,
            **fields,
            **extra,
        )
