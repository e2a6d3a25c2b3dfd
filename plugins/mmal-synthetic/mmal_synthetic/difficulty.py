"""``synthetic-difficulty``: every modality carries the label, some are much harder to read."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal_core import Dataset, MultimodalDataset
from mmal_core.params import check_choice, check_float, check_int

from ._common import (
    STRUCTURE,
    TEST,
    TRAIN,
    ClassLatent,
    ModalityMap,
    balanced_labels,
    base_info,
    check_common,
    check_seed,
    make_dataset,
    make_split,
    per_modality,
    stream,
)

MAPPINGS = ("linear", "nonlinear")


def default_snr(n_modalities: int) -> list[float]:
    """Log-spaced from 4.0 (first modality) down to 0.5 (last): ``[4.0, 0.5]`` for two."""
    return [float(v) for v in np.geomspace(4.0, 0.5, n_modalities)]


def default_mapping(n_modalities: int) -> list[str]:
    """``"linear"`` for the first modality, ``"nonlinear"`` for every other one."""
    return ["linear"] + ["nonlinear"] * (n_modalities - 1)


class SyntheticDifficulty(Dataset):
    """Modalities that are each sufficient in principle but differ in difficulty.

    A sample of class ``y`` gets a latent vector ``z`` from a class-conditional Gaussian
    mixture (``clusters_per_class`` clusters per class, unit noise, centres ``separation``
    from the origin, see :class:`mmal_synthetic._common.ClassLatent`). The same ``z`` is
    shown to every modality ``m`` through its own fixed random map ``f_m`` (``mapping[m]``:
    ``"linear"``, a random orthonormal embedding, or ``"nonlinear"``, a random two-layer
    network whose ``cos``/``sin`` first layer twists the latent around its centre by an angle
    that grows with the distance to it, followed by a ``tanh`` layer; see
    :class:`mmal_synthetic._common.ModalityMap`). The twist loses no information but winds
    the classes around each other, so a linear probe does clearly worse than an MLP. The map
    is standardised to unit variance per feature, then scaled to the modality's
    signal-to-noise ratio and blurred with unit Gaussian noise::

        x_m = sqrt(snr[m]) * f_m(z) + eps_m,    eps_m ~ N(0, I)

    With a large ``snr`` each modality alone reaches the accuracy the latent allows; lowering
    ``snr[m]`` or making ``f_m`` nonlinear makes modality ``m`` the hard one.

    Parameters (all keyword, with defaults):
        n_train, n_test: sizes of the pool and the test split (4000, 1000).
        n_classes: number of classes, >= 2 (4).
        n_modalities: number of modalities, >= 2 (2).
        dim: feature dimension per modality, one int or one per modality (16).
        snr: per-modality signal-to-noise ratio (signal variance over noise variance per
            feature), one number or one per modality, >= 0. ``None``: log-spaced from 4.0 for
            the first modality to 0.5 for the last (``[4.0, 0.5]`` with two modalities).
        mapping: ``"linear"`` or ``"nonlinear"``, one or one per modality. ``None``: linear
            for the first modality, nonlinear for the others.
        clusters_per_class: Gaussian clusters per class in the latent space (1). More
            clusters make every class multimodal, which also costs a linear probe on a linear
            modality some accuracy.
        latent_dim: dimension of the latent space (8).
        separation: distance of the cluster centres from the origin; with at most
            ``latent_dim`` centres they are orthogonal, so any two are ``separation * sqrt(2)``
            apart (3.5).
        modality_names: names of the modalities (``None``: ``"m0"``, ``"m1"``, ...).

    ``Split.difficulty`` is the latent ambiguity of each sample, ``1 - p(y | z)`` under the
    exact latent mixture: near 0 deep inside its class, large near a class boundary. It does
    not depend on the modality noise.

    Accuracy on the test split (mean over seeds 0, 1, 2; probes trained on the full pool of
    4000: logistic regression / MLP with one hidden layer of 128 units; chance is 0.25):

    ==========================  ===============  ===============  ===============
    parameters                  m0 alone         m1 alone         both
    ==========================  ===============  ===============  ===============
    defaults                    0.96 / 0.96      0.50 / 0.56      0.96 / 0.96
    ``snr=[4, 4]``              0.96 / 0.96      0.62 / 0.79      0.96 / 0.96
    ``mapping="linear"``        0.96 / 0.96      0.80 / 0.78      0.96 / 0.96
    ==========================  ===============  ===============  ===============

    So with the defaults m0 is the easy modality and m1 the hard one, and the joint model
    gains nothing from m1; at equal SNR the nonlinear m1 loses about 0.18 to a linear probe.
    """

    name = "synthetic-difficulty"
    summary = "Synthetic: each modality carries the label, with per-modality SNR and linear/nonlinear maps"
    version = "1"

    def __init__(
        self,
        n_train: int = 4000,
        n_test: int = 1000,
        n_classes: int = 4,
        n_modalities: int = 2,
        dim: int | list[int] = 16,
        snr: float | list[float] | None = None,
        mapping: str | list[str] | None = None,
        clusters_per_class: int = 1,
        latent_dim: int = 8,
        separation: float = 3.5,
        modality_names: list[str] | None = None,
    ):
        self.n_train = n_train
        self.n_test = n_test
        self.n_classes = n_classes
        self.n_modalities = n_modalities
        self.dim = dim
        self.snr = snr
        self.mapping = mapping
        self.clusters_per_class = clusters_per_class
        self.latent_dim = latent_dim
        self.separation = separation
        self.modality_names = modality_names
        self._resolve()

    def _resolve(self) -> dict[str, Any]:
        cfg = check_common(
            self.n_train, self.n_test, self.n_classes, self.n_modalities, self.dim,
            self.modality_names, self.latent_dim, self.separation,
        )
        m = cfg["n_modalities"]
        snr = default_snr(m) if self.snr is None else self.snr
        cfg["snr"] = per_modality("snr", snr, m, lambda lab, v: check_float(lab, v, minimum=0.0))
        mapping = default_mapping(m) if self.mapping is None else self.mapping
        cfg["mapping"] = per_modality("mapping", mapping, m, lambda lab, v: check_choice(lab, v, MAPPINGS))
        cfg["clusters_per_class"] = check_int("clusters_per_class", self.clusters_per_class, minimum=1)
        return cfg

    def load(self, seed: int) -> MultimodalDataset:
        seed = check_seed(seed)
        cfg = self._resolve()
        c = cfg["n_classes"]
        rng = stream(seed, STRUCTURE)
        latent = ClassLatent(rng, c, cfg["latent_dim"], cfg["separation"], cfg["clusters_per_class"])
        maps = [ModalityMap(rng, latent, d, kind) for d, kind in zip(cfg["dim"], cfg["mapping"])]
        gains = [float(np.sqrt(s)) for s in cfg["snr"]]

        def split(tag: int, n: int, first_id: int):
            r = stream(seed, tag)
            y = balanced_labels(r, n, c)
            z = latent.sample(r, y)
            feats = [g * f(z) + r.standard_normal((n, f.std.shape[0])) for g, f in zip(gains, maps)]
            return make_split(feats, cfg["modality_names"], None, y, first_id, latent.ambiguity(z, y))

        train = split(TRAIN, cfg["n_train"], 0)
        test = split(TEST, cfg["n_test"], cfg["n_train"])
        info = base_info(self, seed, cfg)
        info["difficulty"] = "1 - p(y | z): latent ambiguity under the exact class-conditional latent mixture"
        return make_dataset(self.name, cfg, train, test, info)
