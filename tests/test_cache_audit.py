"""The HDF5 cache under attack: killed builders, flipped bits, edited attributes, unwritable
folders, renamed files and `mmal cache rm` aimed at the wrong file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from filelock import FileLock

from _support import cli_in_process, one_line_error
from mmal_core import Encoder, MmalError, RawSource
from mmal_core.cache import (
    CacheRequest,
    ensure_cache,
    list_caches,
    read_cache,
    read_info,
    remove_temporaries,
    temporaries,
    verify_cache,
)

N, N_TEST = 200, 60


class Doubler(Encoder):
    """A toy encoder: the item vector times ``factor``."""

    name = "toy-doubler"
    version = "1"
    batch_size = 50

    def __init__(self, factor: float = 2.0):
        self.factor = factor

    def encode(self, items):
        return np.stack([np.asarray(x, np.float32) * self.factor for x in items])


def source() -> RawSource:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, N)
    a = [rng.normal(size=4).astype(np.float32) + labels[i] for i in range(N)]
    b = [None if i % 5 == 0 else rng.normal(size=3).astype(np.float32) for i in range(N)]
    split = np.zeros(N, np.uint8)
    split[rng.permutation(N)[:N_TEST]] = 1
    return RawSource(np.arange(N), labels, split, {"a": a, "b": b}, ["x", "y", "z"], "toy", {"note": "toy"})


def request(factor: float = 2.0, dataset: str = "toy") -> tuple[CacheRequest, dict]:
    encoders = {"a": Doubler(factor), "b": Doubler(3.0)}
    req = CacheRequest(dataset, "1", {"n": N}, "src", ["a", "b"], {m: e.describe() for m, e in encoders.items()})
    return req, encoders


def build(folder: Path, factor: float = 2.0, dataset: str = "toy") -> Path:
    req, encoders = request(factor, dataset)
    path, built = ensure_cache(req, source, encoders, folder, show_progress=False)
    assert built
    return path


def snapshot(path: Path) -> tuple:
    c = read_cache(path)
    return (
        json.dumps(c.attrs, sort_keys=True, default=str),
        [(s.ids.tobytes(), s.labels.tobytes(), s.mask.tobytes(), *(s.features[m].tobytes() for m in c.modalities))
         for s in (c.train, c.test)],
    )


def flip(path: Path, offset: int, bits: int = 0xFF) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= bits
    path.write_bytes(bytes(raw))


# -- bit flips outside the feature chunks --------------------------------------------------------
@pytest.mark.parametrize("name", ["labels", "ids", "mask", "split"])
def test_a_flipped_bit_in_labels_ids_mask_or_split_is_refused(tmp_path, name):
    """Format 1 checksummed only the features: a flipped label or mask bit was read silently."""
    path = build(tmp_path)
    with h5py.File(path) as h5:
        assert h5[name].fletcher32
        offset = h5[name].id.get_chunk_info(0).byte_offset
    flip(path, offset + 3, 0x01)
    with pytest.raises(MmalError, match=r"corrupt.*mmal cache rm"):
        read_cache(path, request()[0])
    info = verify_cache(path)
    assert not info.ok and "corrupt" in info.problem and "\n" not in info.problem


def test_no_flipped_byte_near_the_attributes_is_read_silently_or_crashes(tmp_path):
    path = build(tmp_path)
    good = path.read_bytes()
    want = snapshot(path)
    spots = [good.find(b"class_names"), good.find(b"encoders"), good.find(b'["x", "y", "z"]')]
    assert min(spots) > 0
    offsets = sorted({o for s in spots for o in range(s - 48, s + 48, 3)})
    for offset in offsets:
        path.write_bytes(good)
        flip(path, offset, 0x04)
        try:
            got = snapshot(path)
        except MmalError as err:
            assert "\n" not in str(err) and "mmal cache rm" in str(err), str(err)
            assert not read_info(path).ok
            continue
        assert got == want, f"byte {offset} flipped: the cache was read with other content"


# -- edited attributes -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "edit",
    [
        ("del", "class_names"), ("set", "class_names", '["x"]'), ("set", "skipped", "oops"),
        ("del", "checksum"), ("set", "source_hash", "other"), ("info", "", '{"note": "edited"}'),
    ],
)
def test_an_edited_or_removed_attribute_is_refused_with_a_rebuild_hint(tmp_path, edit):
    """Attributes outside the request (class names, counts, provenance) were not checked."""
    path = build(tmp_path)
    with h5py.File(path, "a") as h5:
        if edit[0] == "del":
            del h5.attrs[edit[1]]
        elif edit[0] == "set":
            h5.attrs[edit[1]] = edit[2]
        else:
            del h5["info"]
            h5.create_dataset("info", data=edit[2])
    with pytest.raises(MmalError, match=r"cache .*mmal cache rm .*mmal cache build toy"):
        read_cache(path, request()[0])
    info = read_info(path)
    assert not info.ok and "\n" not in info.problem


def test_verify_refuses_attributes_edited_consistently_but_not_matching_the_key(tmp_path):
    """Without a request (verify, list) an edited encoder or params attribute went unnoticed."""
    from mmal_core.cache.store import _attrs_checksum, _plain_attr

    path = build(tmp_path)
    with h5py.File(path, "a") as h5:
        h5.attrs["params"] = json.dumps({"n": N + 1})
        raw = {k: _plain_attr(v) for k, v in h5.attrs.items()}
        h5.attrs["checksum"] = _attrs_checksum(raw, h5["info"][()].decode())
    info = verify_cache(path)
    assert not info.ok and "attribute 'key'" in info.problem
    with pytest.raises(MmalError, match=r"attribute 'params' is \{'n': 201\}, the request needs \{'n': 200\}"):
        read_cache(path, request()[0])


def test_a_file_renamed_to_another_caches_name_is_flagged_by_list_and_verify(tmp_path):
    path = build(tmp_path)
    other = request(dataset="other")[0]
    renamed = tmp_path / other.filename()
    path.rename(renamed)
    assert not verify_cache(renamed).ok and "named like a cache of another request" in verify_cache(renamed).problem
    (info,) = list_caches(tmp_path)
    assert not info.ok and path.name in info.problem
    with pytest.raises(MmalError, match=r"attribute 'dataset' is 'toy', the request needs 'other'.*mmal cache build other"):
        ensure_cache(other, source, request()[1], tmp_path, show_progress=False)


def test_an_array_without_checksum_is_refused(tmp_path):
    """A file written without checksums (as format 1 wrote labels) is not trusted."""
    path = build(tmp_path)
    with h5py.File(path, "a") as h5:
        labels = h5["labels"][:]
        del h5["labels"]
        h5.create_dataset("labels", data=labels)
    with pytest.raises(MmalError, match=r"'/labels' has no checksum"):
        read_cache(path, request()[0])


def test_a_corrupt_chunk_read_lazily_is_a_one_line_error(tmp_path):
    path = build(tmp_path)
    with h5py.File(path) as h5:
        offset = h5["features/a"].id.get_chunk_info(0).byte_offset
    flip(path, offset + 20)
    cached = read_cache(path, request()[0], lazy=True)
    try:
        with pytest.raises(MmalError, match=r"a data chunk is corrupt.*mmal cache rm"):
            cached.train.features["a"][:10]
        with pytest.raises(MmalError, match="corrupt"):
            cached.train.features["a"][np.array([3, 1])]
    finally:
        cached.handle.close()


# -- an existing bad file is not "already cached" --------------------------------------------------------
def test_ensure_cache_refuses_a_bad_file_instead_of_returning_it(tmp_path):
    path = build(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    req, encoders = request()
    with pytest.raises(MmalError, match="truncated or corrupt"):
        ensure_cache(req, source, encoders, tmp_path, show_progress=False)
    path2, built = ensure_cache(req, source, encoders, tmp_path, show_progress=False, rebuild=True)
    assert built and path2 == path and verify_cache(path).ok


def test_cache_build_does_not_report_a_corrupt_file_as_cached(tmp_path, capsys):
    from mmal_datasets import AvDigits

    ds = AvDigits(cache_dir=str(tmp_path))
    path = tmp_path / ds.cache_request(ds.make_encoders()).filename()
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # a truncated HDF5 header
    result = cli_in_process(capsys, "cache", "build", "av-digits", "--cache-dir", str(tmp_path), raw=True)
    one_line_error(result, "truncated or corrupt", "mmal cache rm")
    assert "already cached" not in result[1]


# -- temporary files of killed builders -----------------------------------------------------------------
def killed_builders_file(path: Path, tag: str = "killed") -> Path:
    tmp = path.parent / f".{path.name}.{tag}.tmp"
    tmp.write_bytes(b"\0" * 4096)
    return tmp


def test_a_killed_rebuilds_temporary_file_is_listed_then_removed(tmp_path, capsys):
    """A killed `--rebuild` left its temporary file next to a good cache: invisible to `list`,
    never removed (the next build returned early, `rm --all` ignored it)."""
    path = build(tmp_path)
    stale = killed_builders_file(path)
    code, out, _ = cli_in_process(capsys, "cache", "list", "--cache-dir", str(tmp_path))
    assert code == 0 and "1 temporary file(s)" in out
    req, encoders = request()
    assert ensure_cache(req, source, encoders, tmp_path, show_progress=False) == (path, False)
    assert not stale.exists() and temporaries(tmp_path) == []
    stale = killed_builders_file(path)
    code, out, _ = cli_in_process(capsys, "cache", "rm", "--all", "--cache-dir", str(tmp_path))
    assert code == 0 and "left by a killed build" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_temporary_files_of_other_caches_go_with_the_next_build(tmp_path):
    path = build(tmp_path)
    other = tmp_path / request(factor=5.0)[0].filename()
    stale = killed_builders_file(other)
    build(tmp_path, factor=7.0)
    assert not stale.exists() and verify_cache(path).ok


def test_a_live_builders_temporary_file_is_never_removed(tmp_path, capsys):
    path = build(tmp_path)
    live = tmp_path / request(factor=5.0)[0].filename()
    tmp = killed_builders_file(live, "live")
    with FileLock(str(live) + ".lock"):  # a builder at work holds its lock
        assert remove_temporaries(tmp_path) == []
        build(tmp_path, factor=7.0)
        code, _, _ = cli_in_process(capsys, "cache", "rm", "--all", "--cache-dir", str(tmp_path))
        assert code == 0 and tmp.exists()
        assert Path(str(live) + ".lock").exists()
    assert remove_temporaries(tmp_path) == [tmp] and not path.exists()


def test_rm_keeps_the_lock_file_a_builder_holds(tmp_path, capsys):
    path = build(tmp_path)
    lock = Path(str(path) + ".lock")
    with FileLock(str(lock)):
        code, out, _ = cli_in_process(capsys, "cache", "rm", str(path))
        assert code == 0 and "removed" in out and lock.exists()
    code, _, _ = cli_in_process(capsys, "cache", "rm", "--all", "--cache-dir", str(tmp_path))
    build(tmp_path)
    code, _, _ = cli_in_process(capsys, "cache", "rm", str(path))
    assert code == 0 and not lock.exists()


# -- unwritable folders -------------------------------------------------------------------------------
def test_an_unwritable_cache_folder_is_a_one_line_error_not_a_hang(tmp_path):
    """/proc exists but takes no new files (even for root): filelock retried forever."""
    req, encoders = request()
    with pytest.raises(MmalError, match=r"cache folder /proc: cannot write there .*MMAL_CACHE_DIR"):
        ensure_cache(req, source, encoders, "/proc", show_progress=False, lock_timeout=10)


def test_an_unwritable_folder_still_serves_its_good_cache(tmp_path, monkeypatch):
    path = build(tmp_path)
    (tmp_path / f"{path.name}.lock").unlink()
    real_open = os.open

    def read_only(file, flags, *args, **kwargs):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(30, "Read-only file system", str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    req, encoders = request()
    assert ensure_cache(req, source, encoders, tmp_path, show_progress=False) == (path, False)
    with pytest.raises(MmalError, match="cannot write there"):
        ensure_cache(req, source, encoders, tmp_path, show_progress=False, rebuild=True)
    monkeypatch.undo()
    assert verify_cache(path).ok


# -- `mmal cache rm` aimed at the wrong file ------------------------------------------------------------
def test_rm_refuses_an_hdf5_file_that_is_not_a_cache(tmp_path, capsys):
    """`mmal cache rm data.h5` deleted any file ending in .h5."""
    mine = tmp_path / "measurements.h5"
    with h5py.File(mine, "w") as h5:
        h5.create_dataset("x", data=np.arange(3))
    one_line_error(cli_in_process(capsys, "cache", "rm", str(mine), raw=True), "not an mmal cache", "not removed")
    assert mine.exists()
    broken = tmp_path / "toy-0123456789abcdef.h5"  # a broken cache is still removable by its name
    broken.write_bytes(b"garbage")
    code, out, _ = cli_in_process(capsys, "cache", "rm", str(broken))
    assert code == 0 and not broken.exists()


def test_rm_by_dataset_name_does_not_match_a_prefix(tmp_path, capsys):
    """`mmal cache rm av` removed the broken caches of av-digits."""
    broken = tmp_path / "av-digits-0123456789abcdef.h5"
    broken.write_bytes(b"garbage")
    one_line_error(cli_in_process(capsys, "cache", "rm", "av", "--cache-dir", str(tmp_path), raw=True), "no cache of dataset 'av'")
    assert broken.exists()
    code, _, _ = cli_in_process(capsys, "cache", "rm", "av-digits", "--cache-dir", str(tmp_path))
    assert code == 0 and not broken.exists()


# -- determinism --------------------------------------------------------------------------------------
def test_two_builds_give_identical_arrays(tmp_path):
    a, b = build(tmp_path / "one"), build(tmp_path / "two")
    assert a.name == b.name
    with h5py.File(a) as ha, h5py.File(b) as hb:
        for name in ("ids", "labels", "split", "mask", "features/a", "features/b", "info"):
            assert np.array_equal(ha[name][()], hb[name][()]), name
        assert {k for k in ha.attrs if str(ha.attrs[k]) != str(hb.attrs[k])} <= {"created", "checksum"}


def test_rm_refuses_an_hdf5_file_named_like_a_cache_without_cache_attributes(tmp_path, capsys):
    mine = tmp_path / "results-0123456789abcdef.h5"
    with h5py.File(mine, "w") as h5:
        h5.attrs["experiment"] = "mine"
    one_line_error(cli_in_process(capsys, "cache", "rm", str(mine), raw=True), "not an mmal cache")
    assert mine.exists()
    path = build(tmp_path)
    with h5py.File(path, "a") as h5:
        del h5.attrs["key"]  # a tampered cache is still recognisably one, and removable
    code, _, _ = cli_in_process(capsys, "cache", "rm", str(path))
    assert code == 0 and not path.exists()
