"""Loaders for standard multimodal benchmarks from a folder the user already has.

Nothing is downloaded: point ``root`` at a folder laid out as documented below (and in
docs/real-data.md). A missing folder is a one-line error naming the path and the expected
layout; an unreadable image, sound or frame folder makes that modality missing for that
sample and is counted in the cache's ``skipped`` attribute (``mmal cache list`` shows it).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from mmal_core import MmalError, RawDataset, RawSource
from mmal_core.params import check_int

from ._common import (
    IMAGE_SUFFIXES,
    LazyItems,
    check_root,
    check_split_classes,
    listing_hash,
    read_frames,
    read_image,
    read_wav,
    require_dir,
)

SPLITS = ("train", "test")


class _FolderDataset(RawDataset):
    layout: str = ""

    def _root(self) -> Path:
        return check_root(self.name, self.root, self.layout)

    def _all_files(self) -> list[Path]:
        return [p for p in self._root().rglob("*") if p.is_file()]

    def source_key(self) -> str:
        root = self._root()
        return f"{root.resolve()}:{listing_hash(self._all_files(), root)}"


class UpmcFood101(_FolderDataset):
    """UPMC Food-101 (Wang et al. 2015): recipe web-page image + page title text, 101 classes.

    Layout under ``root``::

        images/train/<class>/<file>.jpg     images/test/<class>/<file>.jpg
        texts/train_titles.csv              texts/test_titles.csv

    Each CSV row is ``file,text,class`` (file = the image's file name; a header row whose
    first cell is ``file`` or ``image`` is skipped). An image without a row gets its text
    missing; a row without an image is ignored. Classes = sub-folders of ``images/train``.
    Default encoders: image -> efficientnet-lite0, text -> minilm.
    """

    name = "upmc-food101"
    summary = "UPMC Food-101 from a local folder (image + text, 101 classes)"
    version = "1"
    modalities = {"image": "efficientnet-lite0", "text": "minilm"}
    layout = "images/{train,test}/<class>/<file>.jpg and texts/{train,test}_titles.csv with rows file,text,class"

    def __init__(self, root: str = "", encoders: dict[str, Any] | None = None, cache_dir: str | None = None, lazy: bool = False):
        self.root = root
        super().__init__(encoders, cache_dir, lazy)

    def _texts(self, path: Path) -> dict[str, str]:
        if not path.is_file():
            raise MmalError(f"dataset '{self.name}': expected the file {path} (layout: {self.layout})")
        texts = {}
        try:
            with open(path, newline="", encoding="utf-8", errors="replace") as f:
                for k, row in enumerate(csv.reader(f)):
                    if not row:
                        continue
                    if len(row) < 2:
                        raise MmalError(f"dataset '{self.name}': {path} line {k + 1}: expected file,text,class, got {len(row)} field(s)")
                    if k == 0 and row[0].strip().lower() in ("file", "image", "filename", "image_path"):
                        continue
                    texts[Path(row[0].strip()).name] = row[1]
        except OSError as err:
            raise MmalError(f"dataset '{self.name}': cannot read {path} ({err.strerror or err})") from None
        return texts

    def read_source(self) -> RawSource:
        root = self._root()
        images_root = require_dir(self.name, root / "images", self.layout)
        classes = sorted(p.name for p in require_dir(self.name, images_root / "train", self.layout).iterdir() if p.is_dir())
        if len(classes) < 2:
            raise MmalError(f"dataset '{self.name}': {images_root / 'train'} has {len(classes)} class folder(s), expected at least 2")
        index = {c: i for i, c in enumerate(classes)}
        paths, labels, split, texts = [], [], [], []
        for s, split_name in enumerate(SPLITS):
            folder = require_dir(self.name, images_root / split_name, self.layout)
            titles = self._texts(root / "texts" / f"{split_name}_titles.csv")
            for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                if class_dir.name not in index:
                    raise MmalError(f"dataset '{self.name}': class folder {class_dir} is not among the train classes")
                for f in sorted(class_dir.iterdir()):
                    if f.suffix.lower() in IMAGE_SUFFIXES:
                        paths.append(f)
                        labels.append(index[class_dir.name])
                        split.append(s)
                        texts.append(titles.get(f.name) or None)
        labels_a, split_a = np.asarray(labels, dtype=np.int64), np.asarray(split, dtype=np.uint8)
        check_split_classes(self.name, labels_a, split_a, classes)
        return RawSource(
            ids=np.arange(len(paths), dtype=np.int64), labels=labels_a, split=split_a,
            items={"image": LazyItems(paths, read_image), "text": texts},
            class_names=classes, source_hash=listing_hash(paths, root),
        )


class _AudioVideoFolder(_FolderDataset):
    """Shared part of the audio + video-frame datasets."""

    modalities = {"audio": "mfcc-stats", "video": "efficientnet-lite0"}

    def __init__(self, root: str = "", max_frames: int = 4, encoders: dict[str, Any] | None = None,
                 cache_dir: str | None = None, lazy: bool = False):
        self.root = root
        self.max_frames = check_int("max_frames", max_frames, 1, 256)
        super().__init__(encoders, cache_dir, lazy)

    def _items(self, wavs: list[Path | None], frame_dirs: list[Path | None]) -> dict[str, LazyItems]:
        k = self.max_frames
        return {"audio": LazyItems(wavs, read_wav), "video": LazyItems(frame_dirs, lambda d: read_frames(d, k))}


class CremaD(_AudioVideoFolder):
    """CREMA-D (Cao et al. 2014): acted emotional speech, audio + video frames, 6 emotions.

    Layout under ``root``::

        AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav     e.g. 1001_DFA_ANG_XX.wav
        frames/<same stem>/*.jpg                              frames extracted beforehand

    Label = the emotion code (ANG, DIS, FEA, HAP, NEU, SAD). Split by actor, so no actor is
    in both: actors sorted by id, every fourth (positions 3, 7, 11, ...) goes to test. A clip
    without a frame folder gets its video missing. At most ``max_frames`` evenly spaced
    frames per clip are encoded and averaged.
    Default encoders: audio -> mfcc-stats, video -> efficientnet-lite0.
    """

    name = "crema-d"
    summary = "CREMA-D from a local folder (audio + video frames, 6 emotions)"
    version = "1"
    layout = "AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav and frames/<clip>/*.jpg"
    EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")

    def read_source(self) -> RawSource:
        root = self._root()
        audio_dir = require_dir(self.name, root / "AudioWAV", self.layout)
        frames_dir = root / "frames"
        clips = []
        for wav in sorted(audio_dir.glob("*.wav")):
            parts = wav.stem.split("_")
            if len(parts) != 4 or parts[2] not in self.EMOTIONS:
                raise MmalError(
                    f"dataset '{self.name}': {wav} does not match <actor>_<sentence>_<emotion>_<level>.wav "
                    f"with emotion in {', '.join(self.EMOTIONS)}"
                )
            clips.append((parts[0], wav, self.EMOTIONS.index(parts[2])))
        if not clips:
            raise MmalError(f"dataset '{self.name}': no .wav files in {audio_dir} (layout: {self.layout})")
        actors = sorted({a for a, _, _ in clips})
        test_actors = {a for i, a in enumerate(actors) if i % 4 == 3}
        if not test_actors:
            raise MmalError(f"dataset '{self.name}': {len(actors)} actor(s) found, need at least 4 to split by actor")
        wavs = [w for _, w, _ in clips]
        frame_dirs = [frames_dir / w.stem if (frames_dir / w.stem).is_dir() else None for w in wavs]
        labels = np.asarray([lab for _, _, lab in clips], dtype=np.int64)
        split = np.asarray([a in test_actors for a, _, _ in clips], dtype=np.uint8)
        check_split_classes(self.name, labels, split, list(self.EMOTIONS))
        return RawSource(
            ids=np.arange(len(clips), dtype=np.int64), labels=labels, split=split,
            items=self._items(wavs, frame_dirs), class_names=list(self.EMOTIONS),
            source_hash=listing_hash(wavs, root),
        )


class KineticsSounds(_AudioVideoFolder):
    """Kinetics-Sounds (Arandjelovic & Zisserman 2017): YouTube clips, audio + video frames.

    Layout under ``root`` (one folder per class, clip = a WAV file and/or a frame folder of
    the same name)::

        train/<class>/<clip>.wav      train/<class>/<clip>/*.jpg
        test/<class>/<clip>.wav       test/<class>/<clip>/*.jpg

    Classes = sub-folders of ``train``. A clip with only one of the two gets the other
    missing. At most ``max_frames`` evenly spaced frames per clip are encoded and averaged.
    Default encoders: audio -> mfcc-stats, video -> efficientnet-lite0.
    """

    name = "kinetics-sounds"
    summary = "Kinetics-Sounds from a local folder (audio + video frames)"
    version = "1"
    layout = "{train,test}/<class>/<clip>.wav and {train,test}/<class>/<clip>/*.jpg"

    def read_source(self) -> RawSource:
        root = self._root()
        classes = sorted(p.name for p in require_dir(self.name, root / "train", self.layout).iterdir() if p.is_dir())
        if len(classes) < 2:
            raise MmalError(f"dataset '{self.name}': {root / 'train'} has {len(classes)} class folder(s), expected at least 2")
        index = {c: i for i, c in enumerate(classes)}
        wavs, frame_dirs, labels, split = [], [], [], []
        for s, split_name in enumerate(SPLITS):
            folder = require_dir(self.name, root / split_name, self.layout)
            for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                if class_dir.name not in index:
                    raise MmalError(f"dataset '{self.name}': class folder {class_dir} is not among the train classes")
                stems = sorted({p.stem for p in class_dir.glob("*.wav")} | {p.name for p in class_dir.iterdir() if p.is_dir()})
                for stem in stems:
                    wav, frames = class_dir / f"{stem}.wav", class_dir / stem
                    wavs.append(wav if wav.is_file() else None)
                    frame_dirs.append(frames if frames.is_dir() else None)
                    labels.append(index[class_dir.name])
                    split.append(s)
        if not labels:
            raise MmalError(f"dataset '{self.name}': no clips under {root} (layout: {self.layout})")
        labels_a, split_a = np.asarray(labels, dtype=np.int64), np.asarray(split, dtype=np.uint8)
        check_split_classes(self.name, labels_a, split_a, classes)
        return RawSource(
            ids=np.arange(len(labels), dtype=np.int64), labels=labels_a, split=split_a,
            items=self._items(wavs, frame_dirs), class_names=classes,
            source_hash=listing_hash([p for p in wavs + frame_dirs if p is not None], root),
        )
