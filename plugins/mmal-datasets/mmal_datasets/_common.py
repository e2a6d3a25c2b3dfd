"""Helpers shared by the dataset loaders: lazy item sequences, file readers, split checks."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmal_core import MmalError


class LazyItems(Sequence):
    """A sequence whose item ``i`` is ``load(keys[i])`` (``None`` stays ``None``), read on access.

    ``load`` raises ``ValueError`` or ``OSError`` for an unreadable file: the cache builder
    then stores the modality as missing for that sample and counts it.
    """

    def __init__(self, keys: Sequence[Any], load: Callable[[Any], Any]):
        self.keys = list(keys)
        self.load = load

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        key = self.keys[i]
        return None if key is None else self.load(key)


def listing_hash(paths: Sequence[Path], root: Path) -> str:
    """Hash of relative paths and sizes: a cheap identity of a folder's content."""
    h = hashlib.sha256()
    for p in sorted(paths):
        try:
            size = p.stat().st_size
        except OSError:
            size = -1
        h.update(f"{p.relative_to(root)}\0{size}\n".encode())
    return h.hexdigest()[:16]


def read_image(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8; unreadable files raise ``ValueError``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: unreadable image ({err.__class__.__name__})") from None


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A WAV file as ``(waveform (t,) float32 in [-1, 1], sample_rate)``; bad files raise ``ValueError``."""
    from scipy.io import wavfile

    try:
        rate, data = wavfile.read(path)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: unreadable WAV ({err.__class__.__name__}: {err})") from None
    x = np.asarray(data)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.size == 0:
        raise ValueError(f"{path}: empty WAV file")
    return x, int(rate)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def read_frames(folder: Path, max_frames: int) -> np.ndarray:
    """Up to ``max_frames`` frames of a folder of images, evenly spaced in name order.

    Returns (k, H, W, 3) uint8 (frames resized to the first frame's size).
    """
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no frame images ({', '.join(IMAGE_SUFFIXES)})")
    pick = np.unique(np.linspace(0, len(files) - 1, min(max_frames, len(files))).round().astype(int))
    frames = [read_image(files[i]) for i in pick]
    h, w = frames[0].shape[:2]
    frames = [f if f.shape[:2] == (h, w) else np.asarray(Image.fromarray(f).resize((w, h))) for f in frames]
    return np.stack(frames)


def check_root(dataset: str, root: Any, layout: str) -> Path:
    """The dataset folder as a Path; a missing one is a one-line error naming the expected layout."""
    if not isinstance(root, (str, os.PathLike)) or not str(root):
        raise MmalError(f"parameter 'root': give the folder holding the {dataset} files (expected layout: {layout})")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise MmalError(f"dataset '{dataset}': folder {path} does not exist or is not a folder (expected layout: {layout})")
    return path


def require_dir(dataset: str, path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise MmalError(f"dataset '{dataset}': expected the folder {path} (layout: {layout})")
    return path


def check_split_classes(dataset: str, labels: np.ndarray, split: np.ndarray, class_names: list[str]) -> None:
    """Both splits must be non-empty and contain at least two classes."""
    for value, name in ((0, "train"), (1, "test")):
        present = np.unique(labels[split == value])
        if present.size < 2:
            raise MmalError(f"dataset '{dataset}': the {name} split has {present.size} class(es), expected at least 2")
