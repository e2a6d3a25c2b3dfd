"""``clipart``: public-domain clip art (image + text), label = top-level category.

Source: Debian's ``openclipart-svg`` package (Open Clip Art Library, public domain), by
default under ``/usr/share/openclipart/svg/<category>/.../*.svg``. How the dataset is made:

* classes: the top-level folders that hold pictures of things (``OBJECT_CATEGORIES``);
  ``buttons``, ``decorations``, ``logos``, ``shapes``, ``signs_and_symbols``, ``special``,
  ``unsorted`` (not object classes) and ``geography`` (maps) are left out, and so is any
  category with fewer than ``min_per_class`` distinct files;
* files: symbolic links are skipped; a drawing (same bytes) found in two categories is
  dropped, a drawing found twice in one category is kept once; then at most ``per_class``
  files per class, drawn with ``numpy.random.default_rng(selection_seed)``;
* image: the SVG rasterised with cairosvg to ``image_size`` pixels wide, composited on white
  and fitted (aspect kept) into an ``image_size`` x ``image_size`` square;
* text: the drawing's title (first ``<dc:title>``, else ``<title>``), with the words of the
  category's own name removed (e.g. "animal", "animals" from titles in ``animals``) so the
  text alone is not a giveaway; an empty result makes the text missing for that sample;
* split: ``test_fraction`` of each class, drawn with the same generator.

An SVG that cairosvg cannot render is stored with its image missing and counted in the
cache's ``skipped`` attribute.
"""

from __future__ import annotations

import hashlib
import html
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from mmal_core import MmalError, RawDataset, RawSource
from mmal_core.params import check_float, check_int

from ._common import LazyItems, listing_hash

DEFAULT_ROOT = "/usr/share/openclipart/svg"
INSTALL = "apt-get install openclipart-svg (Debian/Ubuntu)"
CAIRO_PIP = "pip install cairosvg (and the system library libcairo2)"

#: Top-level categories that depict things; the others are symbols, maps or unsorted.
OBJECT_CATEGORIES = (
    "animals", "buildings", "computer", "containers", "education", "electronics", "food",
    "office", "people", "plants", "recreation", "science", "tools", "transportation",
)
#: Extra forms of category words removed from titles (besides the folder name's own words).
CATEGORY_WORDS = {
    "animals": ["animal"], "buildings": ["building"], "containers": ["container"], "plants": ["plant"],
    "tools": ["tool"], "people": ["person", "persons"], "computer": ["computers"], "electronics": ["electronic"],
    "transportation": ["transport"], "recreation": ["recreational"], "science": ["scientific"],
    "office": ["offices"], "education": ["educational"], "food": ["foods"],
}

_TITLE = (re.compile(r"<dc:title>(.*?)</dc:title>", re.S | re.I), re.compile(r"<title[^>]*>(.*?)</title>", re.S | re.I))


def svg_title(path: Path) -> str:
    """The drawing's title: first ``<dc:title>``, else ``<title>``, else ""."""
    try:
        head = path.read_bytes()[:200_000].decode("utf-8", errors="replace")
    except OSError:
        return ""
    for pattern in _TITLE:
        m = pattern.search(head)
        if m and m.group(1).strip() and "<" not in m.group(1):
            return " ".join(html.unescape(m.group(1)).split())
    return ""


def strip_category(title: str, category: str) -> str:
    """Remove the category's own words from ``title`` (case-insensitive, whole words)."""
    words = set(category.lower().split("_")) | set(CATEGORY_WORDS.get(category, []))
    words -= {"and", "of"}
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(words)) + r")\b", re.I)
    return " ".join(pattern.sub(" ", title.replace("_", " ")).split())


def rasterise(path: Path, size: int) -> np.ndarray:
    """An SVG as (size, size, 3) uint8 on white; unrenderable files raise ``ValueError``."""
    try:
        import cairosvg
    except (ImportError, OSError) as err:
        raise MmalError(f"dataset 'clipart' needs cairosvg ({err.__class__.__name__}: {err}); install it with: {CAIRO_PIP}") from None
    from PIL import Image

    try:
        png = cairosvg.svg2png(url=str(path), output_width=size)
        with Image.open(io.BytesIO(png)) as img:
            rgba = img.convert("RGBA")
    except MmalError:
        raise
    except Exception as err:  # cairosvg raises many kinds of errors on odd SVGs
        raise ValueError(f"{path}: cannot be rasterised ({err.__class__.__name__})") from None
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    picture = Image.alpha_composite(white, rgba).convert("RGB")
    picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(picture, ((size - picture.width) // 2, (size - picture.height) // 2))
    return np.asarray(canvas)


class Clipart(RawDataset):
    """Open Clip Art (public domain): rasterised drawing + title text, label = category.

    root: the ``openclipart-svg`` folder (one sub-folder per category).
    per_class: at most this many drawings per class.
    min_per_class: categories with fewer distinct drawings are left out.
    image_size: raster side in pixels.
    test_fraction: share of each class in the test split.
    selection_seed: seed of the per-class selection and of the split.
    Default encoders: image -> efficientnet-lite0 (input 128 px), text -> minilm.
    """

    name = "clipart"
    summary = "Open Clip Art drawings + titles (Debian openclipart-svg), label = category"
    version = "1"
    modalities = {"image": {"name": "efficientnet-lite0", "params": {"input_size": 128}}, "text": "minilm"}

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        per_class: int = 100,
        min_per_class: int = 40,
        image_size: int = 128,
        test_fraction: float = 0.25,
        selection_seed: int = 0,
        encoders: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        lazy: bool = False,
    ):
        self.root = str(root)
        self.per_class = check_int("per_class", per_class, 2)
        self.min_per_class = check_int("min_per_class", min_per_class, 2)
        self.image_size = check_int("image_size", image_size, 16, 1024)
        self.test_fraction = check_float("test_fraction", test_fraction, 0.05, 0.9)
        self.selection_seed = check_int("selection_seed", selection_seed, 0)
        super().__init__(encoders, cache_dir, lazy)

    def _root(self) -> Path:
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise MmalError(f"dataset 'clipart': folder {root} does not exist; install the clip art with: {INSTALL}, or set 'root'")
        return root

    def _files(self) -> dict[str, list[Path]]:
        root = self._root()
        out = {}
        for category in OBJECT_CATEGORIES:
            folder = root / category
            if not folder.is_dir():
                continue
            files = []
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames.sort()
                for f in sorted(filenames):
                    p = Path(dirpath) / f
                    if f.lower().endswith(".svg") and not p.is_symlink():
                        files.append(p)
            out[category] = files
        if not out:
            raise MmalError(f"dataset 'clipart': {root} has none of the category folders {', '.join(OBJECT_CATEGORIES)}")
        return out

    def source_key(self) -> str:
        files = self._files()
        return listing_hash([p for ps in files.values() for p in ps], self._root())

    def read_source(self) -> RawSource:
        root = self._root()
        files = self._files()
        digests: dict[str, set[str]] = {}
        first: dict[tuple[str, str], Path] = {}
        for category, paths in files.items():
            for p in paths:
                try:
                    d = hashlib.sha1(p.read_bytes()).hexdigest()
                except OSError:
                    continue
                digests.setdefault(d, set()).add(category)
                first.setdefault((category, d), p)
        per_category: dict[str, list[Path]] = {}
        for (category, d), p in first.items():
            if len(digests[d]) == 1:
                per_category.setdefault(category, []).append(p)
        classes = sorted(c for c, ps in per_category.items() if len(ps) >= self.min_per_class)
        if len(classes) < 2:
            raise MmalError(
                f"dataset 'clipart': only {len(classes)} categories under {root} have at least {self.min_per_class} drawings; "
                f"lower 'min_per_class' or check the folder"
            )
        rng = np.random.default_rng(self.selection_seed)
        paths, labels, split, texts = [], [], [], []
        for label, category in enumerate(classes):
            candidates = sorted(per_category[category])
            chosen = [candidates[i] for i in sorted(rng.permutation(len(candidates))[: self.per_class])]
            test = np.zeros(len(chosen), dtype=np.uint8)
            test[rng.permutation(len(chosen))[: int(round(self.test_fraction * len(chosen)))]] = 1
            for p, t in zip(chosen, test):
                text = strip_category(svg_title(p), category)
                paths.append(p)
                labels.append(label)
                split.append(t)
                texts.append(text or None)
        size = self.image_size
        return RawSource(
            ids=np.arange(len(paths), dtype=np.int64),
            labels=np.asarray(labels, dtype=np.int64),
            split=np.asarray(split, dtype=np.uint8),
            items={"image": LazyItems(paths, lambda p: rasterise(p, size)), "text": texts},
            class_names=classes,
            source_hash=listing_hash(paths, root),
            info={"files": [str(p.relative_to(root)) for p in paths], "n_per_class": np.bincount(labels).tolist()},
        )
