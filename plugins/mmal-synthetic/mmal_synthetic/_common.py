"""Pieces shared by the three synthetic generators.

* parameter checks for the parameters every generator takes (sizes, modalities, dims);
* :class:`ClassLatent`, the class-conditional Gaussian latent all generators draw from;
* :class:`ModalityMap`, a fixed random map from the latent space into one modality
  (linear, or a small random ``sin``/``tanh`` network), with its output standardised;
* seeded random streams and the assembly of a :class:`mmal_core.MultimodalDataset`.

Everything random goes through :class:`numpy.random.Generator` objects derived from the seed
with :class:`numpy.random.SeedSequence`, so one seed always gives the same arrays. The
structure of a dataset (class centres, modality maps) has its own stream, separate from the
streams of the train and test samples, so changing ``n_train`` does not move the class
centres and the test set does not depend on the size of the pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

from mmal_core import ModalitySpec, MmalError, MultimodalDataset, Split
from mmal_core.params import check_float, check_int

#: Version of the generating code. It changes whenever the arrays produced for a given seed
#: and parameters change; it is recorded in every dataset's ``info``.
#: 2: synergy samples of synthetic-interaction with three or more modalities are tighter.
GENERATOR_VERSION = "2"

#: Size of the fixed reference sample used to standardise each modality's signal.
_REFERENCE_SIZE = 4096

# Stream tags for SeedSequence([seed, tag]).
STRUCTURE, TRAIN, TEST, MISSING_TRAIN, MISSING_TEST = range(5)


# -- parameter checks ------------------------------------------------------------------------
def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def per_modality(
    name: str,
    value: Any,
    n_modalities: int,
    check: Callable[[str, Any], Any],
) -> list[Any]:
    """Expand a per-modality parameter: one value for all modalities, or one per modality.

    ``check(label, item)`` validates one item (and raises :class:`MmalError` naming the
    parameter); a sequence of the wrong length is an error that names the parameter.
    """
    if _is_sequence(value):
        items = list(value)
        if len(items) != n_modalities:
            raise MmalError(
                f"parameter '{name}': expected {n_modalities} values (one per modality), got {len(items)}"
            )
        return [check(f"{name}[{j}]", v) for j, v in enumerate(items)]
    return [check(name, value)] * n_modalities


def check_common(
    n_train: Any,
    n_test: Any,
    n_classes: Any,
    n_modalities: Any,
    dim: Any,
    modality_names: Any,
    latent_dim: Any,
    separation: Any,
) -> dict[str, Any]:
    """Validate the parameters every generator takes; return them resolved."""
    n_classes = check_int("n_classes", n_classes, minimum=2)
    n_train = check_int("n_train", n_train, minimum=n_classes)
    n_test = check_int("n_test", n_test, minimum=n_classes)
    n_modalities = check_int("n_modalities", n_modalities, minimum=2)
    dims = per_modality("dim", dim, n_modalities, lambda lab, v: check_int(lab, v, minimum=1))
    if modality_names is None:
        names = [f"m{j}" for j in range(n_modalities)]
    else:
        if not _is_sequence(modality_names) or not all(isinstance(s, str) and s for s in modality_names):
            raise MmalError(f"parameter 'modality_names': expected a list of non-empty strings, got {modality_names!r}")
        names = list(modality_names)
        if len(names) != n_modalities:
            raise MmalError(
                f"parameter 'modality_names': expected {n_modalities} names (one per modality), got {len(names)}"
            )
        if len(set(names)) != len(names):
            raise MmalError(f"parameter 'modality_names': names must be unique, got {names}")
    latent_dim = check_int("latent_dim", latent_dim, minimum=1)
    separation = check_float("separation", separation, minimum=0.0, open_min=True)
    return {
        "n_train": n_train,
        "n_test": n_test,
        "n_classes": n_classes,
        "n_modalities": n_modalities,
        "dim": dims,
        "modality_names": names,
        "latent_dim": latent_dim,
        "separation": separation,
    }


def check_seed(seed: Any) -> int:
    return check_int("seed", seed, minimum=0)


# -- random streams ----------------------------------------------------------------------------
def stream(seed: int, tag: int) -> np.random.Generator:
    """An independent generator for ``(seed, tag)``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(tag)]))


def balanced_labels(rng: np.random.Generator, n: int, n_classes: int) -> np.ndarray:
    """``n`` labels with class counts differing by at most one, in random order."""
    return rng.permutation(np.arange(n, dtype=np.int64) % n_classes)


# -- the shared latent-class generator -------------------------------------------------------
class ClassLatent:
    """A class-conditional Gaussian mixture in a ``latent_dim``-dimensional latent space.

    Group ``g`` (a class, or any other discrete index) owns ``clusters`` centres; a sample of
    group ``g`` picks one of them uniformly and adds standard normal noise (unit variance in
    every latent direction). The centres lie at distance ``separation`` from the origin; when
    there are at most ``latent_dim`` centres in all they are mutually orthogonal, so every
    pair of centres is ``separation * sqrt(2)`` apart and all groups are equally hard to tell
    apart. With more centres than latent dimensions the directions are random unit vectors.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        n_groups: int,
        latent_dim: int,
        separation: float,
        clusters: int = 1,
    ):
        self.n_groups = n_groups
        self.clusters = clusters
        self.latent_dim = latent_dim
        k = n_groups * clusters
        raw = rng.standard_normal((latent_dim, k))
        if k <= latent_dim:
            q, r = np.linalg.qr(raw)
            directions = (q * np.sign(np.diag(r))).T  # (k, latent_dim), orthonormal rows
        else:
            directions = (raw / np.linalg.norm(raw, axis=0, keepdims=True)).T
        # Centre index order: group-major, so centre g * clusters + c belongs to group g.
        self.centers = separation * directions.reshape(n_groups, clusters, latent_dim)

    def sample(self, rng: np.random.Generator, groups: np.ndarray) -> np.ndarray:
        """Latent vectors ``(n, latent_dim)`` for the given group of each sample."""
        groups = np.asarray(groups, dtype=np.int64)
        n = len(groups)
        cluster = rng.integers(0, self.clusters, size=n)
        noise = rng.standard_normal((n, self.latent_dim))
        return self.centers[groups, cluster] + noise

    def posterior(self, z: np.ndarray) -> np.ndarray:
        """Exact group posterior ``p(g | z)`` (equal priors), shape ``(n, n_groups)``."""
        flat = self.centers.reshape(-1, self.latent_dim)
        d2 = ((z[:, None, :] - flat[None, :, :]) ** 2).sum(axis=2)
        logits = -0.5 * d2
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits).reshape(len(z), self.n_groups, self.clusters).sum(axis=2)
        return w / w.sum(axis=1, keepdims=True)

    def ambiguity(self, z: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """``1 - p(true group | z)`` in ``[0, 1]``: 0 deep inside a group, large near a boundary."""
        post = self.posterior(z)
        return np.clip(1.0 - post[np.arange(len(z)), np.asarray(groups)], 0.0, 1.0)


# -- modality maps ------------------------------------------------------------------------
def orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A random ``(rows, cols)`` matrix with orthonormal rows or columns (whichever fit)."""
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q = q * np.sign(np.diag(r))
    return q if rows >= cols else q.T


class ModalityMap:
    """A fixed random map from the latent space to one modality's ``dim`` features.

    ``kind="linear"``: ``z @ W`` with ``W`` a random orthonormal embedding (an isometry into
    the features when ``dim >= latent_dim``, a projection onto a random ``dim``-dimensional
    subspace otherwise).

    ``kind="nonlinear"``: a random two-layer network. The first layer twists the latent
    around the mean of the class centres: in a random orthonormal basis, every pair of
    coordinates is rotated by the angle ``TWIST * ||z - mu||`` (a ``cos``/``sin`` layer);
    the second layer is ``tanh(GAIN * u @ W + b)``. The twist is invertible (it keeps the
    distance to ``mu``), so no label information is lost, but every class, which is a blob
    in the latent space, becomes a curved arm wound around the others: a linear probe
    separates the classes much worse than a small MLP. (A plain random ``sin``/``tanh``
    network does not do this: it either stays nearly linear or folds the within-class noise
    onto itself and destroys the label for every probe alike.)

    The output is standardised (zero mean, unit variance per feature) with statistics of a
    reference sample drawn once from ``latent`` with balanced groups, so the signal power
    of every modality is 1 per feature whatever its kind and dimension.
    """

    #: twist of the nonlinear map, radians per latent unit of distance from the centre
    TWIST = 1.5
    #: gain of the tanh layer of the nonlinear map (small: mildly saturating)
    GAIN = 0.5

    def __init__(
        self,
        rng: np.random.Generator,
        latent: ClassLatent,
        dim: int,
        kind: str = "linear",
    ):
        self.kind = kind
        k = latent.latent_dim
        if kind == "linear":
            self.w = orthonormal(rng, k, dim)
        elif kind == "nonlinear":
            q, r = np.linalg.qr(rng.standard_normal((k, k)))
            self.basis = q * np.sign(np.diag(r))
            self.center = latent.centers.reshape(-1, k).mean(axis=0)
            self.w = orthonormal(rng, k, dim)
            self.b = 0.5 * rng.standard_normal(dim)
        else:  # pragma: no cover - callers validate the kind
            raise ValueError(kind)
        groups = np.arange(_REFERENCE_SIZE) % latent.n_groups
        ref = self._raw(latent.sample(rng, groups))
        self.mean = ref.mean(axis=0)
        std = ref.std(axis=0)
        self.std = np.where(std > 1e-8, std, 1.0)

    def _raw(self, z: np.ndarray) -> np.ndarray:
        if self.kind == "linear":
            return z @ self.w
        u = (z - self.center) @ self.basis
        angle = self.TWIST * np.linalg.norm(u, axis=1, keepdims=True)
        cos, sin = np.cos(angle), np.sin(angle)
        twisted = u.copy()
        even, odd = u[:, 0:-1:2], u[:, 1::2]  # pairs (0, 1), (2, 3), ...; an odd last coordinate stays
        twisted[:, 0:-1:2] = cos * even - sin * odd
        twisted[:, 1::2] = sin * even + cos * odd
        return np.tanh(self.GAIN * (twisted @ self.w) + self.b)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return (self._raw(z) - self.mean) / self.std


# -- assembly -----------------------------------------------------------------------------
def make_split(
    features: Sequence[np.ndarray],
    names: Sequence[str],
    mask: np.ndarray | None,
    labels: np.ndarray,
    first_id: int,
    difficulty: np.ndarray | None,
) -> Split:
    n = len(labels)
    if mask is None:
        mask = np.ones((n, len(names)), dtype=bool)
    feats = {}
    for j, (name, x) in enumerate(zip(names, features)):
        x = np.asarray(x, dtype=np.float32).copy()
        x[~mask[:, j]] = 0.0
        feats[name] = x
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return Split(feats, mask, labels, ids=ids, difficulty=difficulty)


def make_dataset(
    name: str,
    cfg: dict[str, Any],
    train: Split,
    test: Split,
    info: dict[str, Any],
) -> MultimodalDataset:
    specs = [ModalitySpec(m, d) for m, d in zip(cfg["modality_names"], cfg["dim"])]
    return MultimodalDataset(name=name, modalities=specs, n_classes=cfg["n_classes"], train=train, test=test, info=info)


def base_info(dataset: Any, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``info`` every generator records: who made it, with which version and parameters."""
    from . import __version__

    return {
        "generator": f"mmal-synthetic/{type(dataset).name}",
        "generator_version": GENERATOR_VERSION,
        "package_version": __version__,
        "dataset_version": type(dataset).version,
        "seed": int(seed),
        "params": _plain(dataset.get_params()),
        "resolved_params": _plain(cfg),
    }


def _plain(value: Any) -> Any:
    """Numpy scalars/arrays to plain Python (so ``info`` serialises to JSON/YAML)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
