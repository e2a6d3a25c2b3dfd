"""``synthetic-missing``: informative modalities, some of them missing for some samples."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal_core import Dataset, MmalError, MultimodalDataset
from mmal_core.params import check_choice, check_float

from ._common import (
    MISSING_TEST,
    MISSING_TRAIN,
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

MECHANISMS = ("mcar", "class")
APPLY_TO = ("pool", "test", "both")


def default_missing_rate(n_modalities: int) -> list[float]:
    """0.0 for the first modality, 0.5 for every other one (``[0.0, 0.5]`` for two)."""
    return [0.0] + [0.5] * (n_modalities - 1)


def class_rates(rates: list[float], n_classes: int, mechanism: str) -> np.ndarray:
    """Missing probability of each (class, modality), shape ``(n_classes, n_modalities)``.

    ``"mcar"``: ``rates[m]`` for every class. ``"class"``: class ``c`` misses modality ``m``
    with probability ``r + s * (2c / (C - 1) - 1)``, ``r = rates[m]``, ``s = min(r, 1 - r)``:
    linear in the class index, lowest for class 0 and highest for class ``C - 1``, inside
    ``[0, 1]``, and averaging to ``r`` over the (balanced) classes.
    """
    r = np.asarray(rates, dtype=np.float64)[None, :]
    if mechanism == "mcar":
        return np.repeat(r, n_classes, axis=0)
    t = (2.0 * np.arange(n_classes) / (n_classes - 1) - 1.0)[:, None]
    return np.clip(r + np.minimum(r, 1.0 - r) * t, 0.0, 1.0)


def draw_mask(rng: np.random.Generator, y: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Presence mask ``(n, M)``; a sample that would miss everything keeps one modality,
    chosen uniformly at random."""
    n, m_count = len(y), table.shape[1]
    missing = rng.random((n, m_count)) < table[y]
    keep = rng.integers(0, m_count, size=n)  # drawn for every sample: stable streams
    empty = missing.all(axis=1)
    missing[empty, keep[empty]] = False
    return ~missing


class SyntheticMissing(Dataset):
    """Informative modalities where some samples lack some modalities.

    The features follow a redundant design: a sample of class ``y`` gets one latent
    ``z ~ N(centre_y, I)`` from the shared class-conditional Gaussian latent
    (:class:`mmal_synthetic._common.ClassLatent`, one cluster per class), and every modality
    sees it through its own fixed random linear map plus noise,
    ``x_m = f_m(z) + noise * eps_m``. Each modality alone predicts the label; together they
    do better, because their noises are independent.

    Then modality ``m`` goes missing with probability ``missing_rate[m]``: its features are
    set to 0 and ``mask[:, m]`` to False.

    * ``mechanism="mcar"``: missing completely at random, the same probability for every
      sample.
    * ``mechanism="class"``: the probability depends on the class, linearly in the class
      index: class ``c`` misses modality ``m`` with probability ``r + s * (2c / (C - 1) - 1)``
      with ``r = missing_rate[m]`` and ``s = min(r, 1 - r)``. Class 0 misses least, class
      ``C - 1`` most, every probability stays in ``[0, 1]`` and the mean over the balanced
      classes is ``r`` (with ``r = 0.5``: from 0 for class 0 to 1 for class ``C - 1``).
      Missingness then leaks label information, a pitfall for models and strategies.
    * ``apply_to``: where modalities go missing: ``"pool"`` (train split only), ``"test"``
      (test only) or ``"both"``.

    Every sample keeps at least one modality: if the draw removes all of a sample's
    modalities, one of them, chosen uniformly at random, is kept. This lowers the effective
    rates slightly when every modality has a high rate (never with the defaults, where m0 is
    always present); the effective rates are recorded in ``info["missing_rates"]``. A
    modality that would end up missing in every sample of a split is an error
    (``missing_rate`` of 1.0 on one modality only, for instance).

    ``Split.difficulty`` is the latent ambiguity ``1 - p(y | z)`` of each sample (near 0
    deep inside its class, large near a class boundary); it ignores missingness, which the
    mask shows.

    Parameters (all keyword, with defaults):
        n_train, n_test: sizes of the pool and the test split (4000, 1000).
        n_classes: number of classes, >= 2 (4).
        n_modalities: number of modalities, >= 2 (2).
        dim: feature dimension per modality, one int or one per modality (16).
        missing_rate: probability that a modality is missing, in ``[0, 1]``, one number or
            one per modality (``None``: 0.0 for the first modality, 0.5 for the others,
            i.e. ``[0.0, 0.5]`` with two).
        mechanism: ``"mcar"`` or ``"class"`` (``"mcar"``).
        apply_to: ``"pool"``, ``"test"`` or ``"both"`` (``"both"``).
        noise: standard deviation of the per-feature modality noise, >= 0 (1.0).
        latent_dim: dimension of the latent space (8).
        separation: distance of the class centres from the origin (3.5).
        modality_names: names of the modalities (``None``: ``"m0"``, ``"m1"``, ...).

    Accuracy on the test split (mean over seeds 0, 1, 2; probes trained on the full pool of
    4000: logistic regression / MLP with one hidden layer of 128 units; chance is 0.25). A
    modality "alone" is its zero-filled features, so samples missing it are guessed; "both"
    is both modalities plus the mask:

    ===========================  ===============  ===============  ===============
    parameters                   m0 alone         m1 alone         both
    ===========================  ===============  ===============  ===============
    defaults (MCAR, [0, 0.5])    0.89 / 0.88      0.56 / 0.56      0.91 / 0.91
    ``missing_rate=0``           0.89 / 0.88      0.88 / 0.88      0.93 / 0.93
    ``mechanism="class"``        0.89 / 0.88      0.70 / 0.70      0.94 / 0.93
    ===========================  ===============  ===============  ===============

    On the samples where it is present, m1 alone reaches 0.89 / 0.88 (MCAR). With
    ``mechanism="class"`` the mask of m1 alone already predicts the class with 0.50
    accuracy: that is the leak the mechanism is meant to create.
    """

    name = "synthetic-missing"
    summary = "Synthetic: informative modalities with missing entries (MCAR or class-dependent)"
    version = "1"

    def __init__(
        self,
        n_train: int = 4000,
        n_test: int = 1000,
        n_classes: int = 4,
        n_modalities: int = 2,
        dim: int | list[int] = 16,
        missing_rate: float | list[float] | None = None,
        mechanism: str = "mcar",
        apply_to: str = "both",
        noise: float = 1.0,
        latent_dim: int = 8,
        separation: float = 3.5,
        modality_names: list[str] | None = None,
    ):
        self.n_train = n_train
        self.n_test = n_test
        self.n_classes = n_classes
        self.n_modalities = n_modalities
        self.dim = dim
        self.missing_rate = missing_rate
        self.mechanism = mechanism
        self.apply_to = apply_to
        self.noise = noise
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
        rate = default_missing_rate(m) if self.missing_rate is None else self.missing_rate
        cfg["missing_rate"] = per_modality(
            "missing_rate", rate, m, lambda lab, v: check_float(lab, v, minimum=0.0, maximum=1.0)
        )
        cfg["mechanism"] = check_choice("mechanism", self.mechanism, MECHANISMS)
        cfg["apply_to"] = check_choice("apply_to", self.apply_to, APPLY_TO)
        cfg["noise"] = check_float("noise", self.noise, minimum=0.0)
        return cfg

    def load(self, seed: int) -> MultimodalDataset:
        seed = check_seed(seed)
        cfg = self._resolve()
        c, names = cfg["n_classes"], cfg["modality_names"]
        rng = stream(seed, STRUCTURE)
        latent = ClassLatent(rng, c, cfg["latent_dim"], cfg["separation"], 1)
        maps = [ModalityMap(rng, latent, d, "linear") for d in cfg["dim"]]
        table = class_rates(cfg["missing_rate"], c, cfg["mechanism"])
        applied = {"train": cfg["apply_to"] in ("pool", "both"), "test": cfg["apply_to"] in ("test", "both")}
        effective: dict[str, list[float]] = {}

        def split(tag: int, mask_tag: int, n: int, first_id: int, split_name: str):
            r = stream(seed, tag)
            y = balanced_labels(r, n, c)
            z = latent.sample(r, y)
            feats = []
            for f in maps:
                x = f(z)
                feats.append(x + cfg["noise"] * r.standard_normal(x.shape))
            if applied[split_name]:
                mask = draw_mask(stream(seed, mask_tag), y, table)
            else:
                mask = np.ones((n, len(names)), dtype=bool)
            for j, name in enumerate(names):
                if not mask[:, j].any():
                    raise MmalError(
                        f"parameter 'missing_rate': modality '{name}' would be missing in every sample of "
                        f"split '{split_name}' (rate {cfg['missing_rate'][j]}); use a lower rate"
                    )
            effective[split_name] = [float(v) for v in 1.0 - mask.mean(axis=0)]
            return make_split(feats, names, mask, y, first_id, latent.ambiguity(z, y))

        train = split(TRAIN, MISSING_TRAIN, cfg["n_train"], 0, "train")
        test = split(TEST, MISSING_TEST, cfg["n_test"], cfg["n_train"], "test")
        info = base_info(self, seed, cfg)
        info["difficulty"] = "1 - p(y | z): latent ambiguity under the exact class-conditional latent mixture"
        info["class_missing_rates"] = table.tolist()
        info["missing_applied"] = applied
        info["missing_rates"] = effective
        return make_dataset(self.name, cfg, train, test, info)
