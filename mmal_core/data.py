"""Multimodal data as the core sees it: one float array per modality, a presence mask, labels.

A dataset plugin builds a :class:`MultimodalDataset` with a ``train`` split (the pool active
learning draws from) and a ``test`` split. Missing modalities are explicit: ``mask[i, m]`` is
False when sample ``i`` has no modality ``m``; the feature rows of a missing modality are
ignored (and zeroed) so that they can never be mistaken for data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .errors import MmalError


@dataclass(frozen=True)
class ModalitySpec:
    """What the model needs to know about one modality.

    name: modality name (``"image"``, ``"text"``, ``"m0"``...).
    dim: feature dimension ``d_m`` of the vectors the model receives.
    encoder: name of the encoder that produced the vectors (``"identity"`` for raw vectors).
    """

    name: str
    dim: int
    encoder: str = "identity"


def _as_features(modality: str, x: Any) -> np.ndarray:
    if x is None:
        raise MmalError(f"features of modality '{modality}': expected an (n, d) array of numbers, got None")
    try:
        raw = np.asarray(x)
        if raw.dtype.kind not in "biuf":
            raise TypeError(f"dtype {raw.dtype}")
        return np.ascontiguousarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as err:
        text = " ".join(str(err).split())
        raise MmalError(f"features of modality '{modality}': expected an (n, d) array of numbers, got {text}") from None


def _as_integers(what: str, values: Any, meaning: str) -> np.ndarray:
    """``values`` as int64; whole-number floats are accepted, anything that would be rounded is not."""
    try:
        raw = np.asarray(values)
    except (TypeError, ValueError) as err:
        raise MmalError(f"{what}: expected integer {meaning}, got {' '.join(str(err).split())}") from None
    if raw.dtype.kind in "iub":
        return raw.astype(np.int64)
    if raw.dtype.kind == "f":
        flat = raw.reshape(-1)
        bad = ~np.isfinite(flat) | (flat != np.round(flat))
        if not bad.any():
            return raw.astype(np.int64)
        raise MmalError(f"{what}: expected integer {meaning}, got {raw.dtype} values such as {flat[bad][0].item()!r}")
    example = raw.reshape(-1)[0] if raw.size else None
    raise MmalError(f"{what}: expected integer {meaning}, got {raw.dtype} values such as {example.item() if hasattr(example, 'item') else example!r}")


def _as_mask(mask: Any) -> np.ndarray:
    """``mask`` as bool; 0/1 numbers are accepted, other values are not silently made True."""
    try:
        raw = np.asarray(mask)
    except (TypeError, ValueError) as err:
        raise MmalError(f"mask: expected a boolean array, got {' '.join(str(err).split())}") from None
    if raw.dtype == bool:
        return raw
    if raw.dtype.kind in "iuf":
        bad = (raw != 0) & (raw != 1)
        if not bad.any():
            return raw.astype(bool)
        raise MmalError(
            f"mask: expected booleans (True where the modality is present), got {raw.dtype} values such as {raw[bad][0].item()!r}"
        )
    raise MmalError(f"mask: expected booleans (True where the modality is present), got dtype {raw.dtype}")


class Split:
    """One split of a multimodal dataset.

    features: dict modality -> (n, d_m) float32 array, in ``modalities`` order.
    mask: (n, n_modalities) bool, True where the modality is present.
    labels: (n,) int64 class indices in ``[0, n_classes)``.
    ids: (n,) int64 sample ids, unique within the dataset (stable across runs).
    difficulty: optional (n,) float per-sample difficulty a generator may provide.
    """

    def __init__(
        self,
        features: dict[str, np.ndarray],
        mask: np.ndarray,
        labels: np.ndarray,
        ids: np.ndarray | None = None,
        difficulty: np.ndarray | None = None,
    ):
        # Lazily read features (``getattr(x, 'lazy', False)``, e.g. rows of an HDF5 cache, see
        # mmal_core.cache.LazyFeatures) stay on disk; everything else becomes float32 in memory.
        if not isinstance(features, dict):
            raise MmalError(f"features: expected a dict modality -> (n, d) array, got {type(features).__name__}")
        self.features = {
            m: x if getattr(x, "lazy", False) else _as_features(m, x)
            for m, x in features.items()
        }
        self.modalities = list(self.features)
        self.labels = _as_integers("labels", labels, "class indices")
        if self.labels.ndim == 2 and self.labels.shape[1] == 1:  # a column vector
            self.labels = self.labels.reshape(-1)
        if self.labels.ndim != 1:
            raise MmalError(f"labels: expected a 1-D array of class indices, got shape {self.labels.shape}")
        n = len(self.labels)
        self.mask = _as_mask(mask)
        self.ids = np.arange(n, dtype=np.int64) if ids is None else _as_integers("ids", ids, "sample ids")
        self.difficulty = None if difficulty is None else np.asarray(difficulty, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "Split":
        """Rows ``index`` (positions, not ids) as a new split."""
        index = np.asarray(index, dtype=np.int64)
        return Split(
            {m: x[index] for m, x in self.features.items()},
            self.mask[index],
            self.labels[index],
            self.ids[index],
            None if self.difficulty is None else self.difficulty[index],
        )

    def fingerprint(self) -> str:
        """A short content hash (features, mask, labels, ids)."""
        h = hashlib.sha256()
        for m in self.modalities:
            h.update(m.encode())
            x = self.features[m]
            for start in range(0, len(x), 65536):  # in blocks, so lazy features stream
                h.update(np.ascontiguousarray(x[start : start + 65536], dtype=np.float32).tobytes())
        for a in (self.mask, self.labels, self.ids):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


@dataclass
class MultimodalDataset:
    """A pool (``train``) and a ``test`` split sharing modalities and classes.

    name: registered dataset name.
    modalities: list of :class:`ModalitySpec`, in the order of the mask columns.
    n_classes: number of classes; labels lie in ``[0, n_classes)``.
    info: free-form facts the generator wants recorded (parameters, version...).
    """

    name: str
    modalities: list[ModalitySpec]
    n_classes: int
    train: Split
    test: Split
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def modality_names(self) -> list[str]:
        return [m.name for m in self.modalities]

    def validate(self) -> "MultimodalDataset":
        """Check shapes, finiteness, label range and presence; zero the missing rows.

        Raises :class:`MmalError` with a one-line message naming the dataset, split and
        modality at fault.
        """
        bad_specs = [m for m in self.modalities if not isinstance(m, ModalitySpec)]
        if not isinstance(self.modalities, (list, tuple)) or bad_specs:
            raise MmalError(
                f"dataset '{self.name}': modalities must be a list of ModalitySpec(name, dim), got {self.modalities!r}"
            )
        names = self.modality_names
        if len(names) < 1 or len(set(names)) != len(names):
            raise MmalError(f"dataset '{self.name}': modality names must be unique and non-empty, got {names}")
        for spec in self.modalities:
            if isinstance(spec.dim, bool) or not isinstance(spec.dim, (int, np.integer)) or spec.dim < 1:
                raise MmalError(f"dataset '{self.name}', modality '{spec.name}': dim must be a positive integer, got {spec.dim!r}")
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, (int, np.integer)):
            raise MmalError(
                f"dataset '{self.name}': n_classes must be an integer, got {self.n_classes!r} ({type(self.n_classes).__name__})"
            )
        self.n_classes = int(self.n_classes)
        if self.n_classes < 2:
            raise MmalError(f"dataset '{self.name}': n_classes must be at least 2, got {self.n_classes}")
        for split_name, split in (("train", self.train), ("test", self.test)):
            where = f"dataset '{self.name}', split '{split_name}'"
            if not isinstance(split, Split):
                raise MmalError(f"{where}: expected a mmal_core.Split, got {type(split).__name__}")
            n = len(split)
            if n == 0:
                raise MmalError(f"{where}: the split is empty")
            if list(split.features) != names:
                raise MmalError(f"{where}: features have modalities {list(split.features)}, expected {names}")
            # One row per sample everywhere: name the array that disagrees with the labels.
            for what, rows in [("mask", len(split.mask) if split.mask.ndim else 0), ("ids", len(split.ids) if split.ids.ndim else 0)] + [
                (f"features of modality '{m}'", len(x) if np.ndim(x) else 0) for m, x in split.features.items()
            ]:
                if rows != n:
                    raise MmalError(f"{where}: {what} has {rows} rows but there are {n} labels (one row per sample)")
            if split.mask.shape != (n, len(names)):
                raise MmalError(f"{where}: mask has shape {split.mask.shape}, expected {(n, len(names))}")
            if split.ids.shape != (n,) or len(np.unique(split.ids)) != n:
                raise MmalError(f"{where}: ids must be {n} unique integers")
            if split.labels.min() < 0 or split.labels.max() >= self.n_classes:
                raise MmalError(
                    f"{where}: labels must lie in [0, {self.n_classes}), "
                    f"found values in [{split.labels.min()}, {split.labels.max()}]"
                )
            for j, spec in enumerate(self.modalities):
                x = split.features[spec.name]
                if x.ndim != 2 or x.shape != (n, spec.dim):
                    raise MmalError(f"{where}, modality '{spec.name}': features have shape {x.shape}, expected {(n, spec.dim)}")
                present = split.mask[:, j]
                if not present.any():
                    raise MmalError(f"{where}, modality '{spec.name}': the modality is missing in every sample")
                if getattr(x, "lazy", False):
                    continue  # checked (finite, missing rows zeroed) when the cache was written
                bad = ~np.isfinite(x[present]).all(axis=1)
                if bad.any():
                    first = int(split.ids[np.flatnonzero(present)[np.flatnonzero(bad)[0]]])
                    raise MmalError(
                        f"{where}, modality '{spec.name}': {int(bad.sum())} present sample(s) have NaN or inf "
                        f"features (first id {first})"
                    )
                if not present.all():
                    x[~present] = 0.0
        overlap = np.intersect1d(self.train.ids, self.test.ids)
        if overlap.size:
            raise MmalError(f"dataset '{self.name}': {overlap.size} sample id(s) appear in both train and test")
        return self


class Dataset:
    """Base class of dataset plugins.

    Subclasses set ``name`` (and ``summary``, ``version``), take their parameters as keyword
    arguments of ``__init__`` (validate them there and raise :class:`MmalError` naming the
    parameter), and implement :meth:`load`. Parameters are stored unchanged so that
    :meth:`get_params` can record them.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    version: ClassVar[str] = "1"

    def load(self, seed: int) -> MultimodalDataset:
        """Build the dataset for ``seed``; the same seed must give identical arrays."""
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        from .params import get_params

        return get_params(self)
