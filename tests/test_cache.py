"""The HDF5 pool-feature cache: build once, read many times, never use a bad file."""

from __future__ import annotations

import errno
import multiprocessing
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import mmal_core
from mmal_core import Encoder, MmalError, RawDataset, RawSource, hookimpl
from mmal_core.cache import (
    CacheRequest,
    LazyFeatures,
    cache_dir,
    ensure_cache,
    list_caches,
    read_cache,
    read_info,
    verify_cache,
)
from mmal_core.plugins import PluginManager, reset_plugin_manager

N, N_TEST = 300, 100


class Scaled(Encoder):
    """A toy encoder: the item vector times ``factor``; counts its calls in a class list."""

    name = "toy-scaled"
    version = "1"
    batch_size = 64
    calls: list[int] = []

    def __init__(self, factor: float = 2.0, delay: float = 0.0):
        self.factor = factor
        self.delay = delay

    def encode(self, items):
        Scaled.calls.append(len(items))
        if self.delay:
            time.sleep(self.delay)
        return np.stack([np.asarray(x, np.float32) * self.factor for x in items])

    def weights_fingerprint(self) -> str:
        return f"factor={self.factor}"


def toy_source(n: int = N, n_test: int = N_TEST, missing_every: int = 7) -> RawSource:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n)
    a = [rng.normal(size=5).astype(np.float32) + labels[i] for i in range(n)]
    b = [None if i % missing_every == 0 else rng.normal(size=3).astype(np.float32) for i in range(n)]
    split = np.zeros(n, np.uint8)
    split[rng.permutation(n)[:n_test]] = 1
    return RawSource(np.arange(100, 100 + n), labels, split, {"a": a, "b": b}, ["x", "y", "z"], "toy-hash")


class ToyRaw(RawDataset):
    """A raw dataset of random vectors, encoded by the toy encoder."""

    name = "toy-raw"
    version = "1"
    modalities = {"a": "toy-scaled", "b": {"name": "toy-scaled", "params": {"factor": 3.0}}}
    built: list[int] = []

    def __init__(self, size: int = N, encoders=None, cache_dir=None, lazy=False):
        self.size = size
        super().__init__(encoders, cache_dir, lazy)

    def read_source(self):
        ToyRaw.built.append(1)
        return toy_source(self.size)


class _Plugin:
    @hookimpl
    def mmal_register_encoders(self):
        return [Scaled]

    @hookimpl
    def mmal_register_datasets(self):
        return [ToyRaw]


@pytest.fixture
def toy_plugins():
    pm = PluginManager(load_entry_points=False)
    pm.register(_Plugin(), name="toy")
    previous = reset_plugin_manager(pm)
    Scaled.calls.clear()
    ToyRaw.built.clear()
    yield pm
    reset_plugin_manager(previous)


def toy_request(factor: float = 2.0) -> tuple[CacheRequest, dict]:
    encoders = {"a": Scaled(factor), "b": Scaled(3.0)}
    request = CacheRequest("toy", "1", {"size": N}, "src", ["a", "b"], {m: e.describe() for m, e in encoders.items()})
    return request, encoders


def build(tmp_path: Path, factor: float = 2.0) -> Path:
    request, encoders = toy_request(factor)
    path, built = ensure_cache(request, toy_source, encoders, tmp_path, show_progress=False)
    assert built
    return path


# -- location -------------------------------------------------------------------------------
def test_cache_dir_follows_env_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MMAL_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "mmal"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "mmal"
    monkeypatch.setenv("MMAL_CACHE_DIR", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "cli") == tmp_path / "cli"


# -- build and read ---------------------------------------------------------------------------
def test_build_writes_features_ids_split_mask_and_provenance(tmp_path):
    path = build(tmp_path)
    src = toy_source()
    with h5py.File(path) as h5:
        split = h5["split"][:]
        assert (np.diff(split.astype(int)) >= 0).all(), "train rows come first"
        ids = h5["ids"][:]
        a = h5["features/a"]
        assert a.dtype == np.float32 and a.chunks is not None and a.compression == "gzip" and a.fletcher32
        rows = ids - 100
        np.testing.assert_allclose(a[:], np.stack(src.items["a"])[rows] * 2.0)
        mask = h5["mask"][:]
        np.testing.assert_array_equal(mask[:, 1], rows % 7 != 0)
        assert (h5["features/b"][:][~mask[:, 1]] == 0).all()
        assert h5.attrs["complete"] and h5.attrs["source_hash"] == "toy-hash"
        assert '"fingerprint": "factor=2.0"' in h5.attrs["encoders"]
        assert h5.attrs["mmal_version"] == mmal_core.__version__ and h5.attrs["created"]
    cached = read_cache(path, toy_request()[0])
    assert len(cached.train) == N - N_TEST and len(cached.test) == N_TEST
    assert cached.class_names == ["x", "y", "z"]


def test_load_dataset_builds_once_then_reads_without_encoding(toy_plugins, tmp_path):
    first = mmal_core.load_dataset("toy-raw", seed=0, cache_dir=str(tmp_path))
    calls = len(Scaled.calls)
    assert calls > 0 and ToyRaw.built == [1]
    second = mmal_core.load_dataset("toy-raw", seed=1, cache_dir=str(tmp_path))
    assert len(Scaled.calls) == calls and ToyRaw.built == [1], "a valid cache must not be re-encoded"
    assert [m.dim for m in second.modalities] == [5, 3]
    for m in ("a", "b"):
        np.testing.assert_array_equal(first.train.features[m], second.train.features[m])
    assert second.info["cache"].startswith(str(tmp_path)) and second.info["built_now"] is False


def test_encoder_override_from_params_makes_another_cache(toy_plugins, tmp_path):
    base = mmal_core.load_dataset("toy-raw", cache_dir=str(tmp_path))
    other = mmal_core.load_dataset("toy-raw", cache_dir=str(tmp_path), encoders={"a": {"name": "toy-scaled", "params": {"factor": 5.0}}})
    assert base.info["cache"] != other.info["cache"]
    np.testing.assert_allclose(other.train.features["a"], base.train.features["a"] * 2.5, rtol=1e-6)
    with pytest.raises(MmalError, match="has no modality 'c'"):
        mmal_core.load_dataset("toy-raw", cache_dir=str(tmp_path), encoders={"c": "toy-scaled"})
    with pytest.raises(MmalError, match="unknown encoder 'nope'"):
        mmal_core.load_dataset("toy-raw", cache_dir=str(tmp_path), encoders={"a": "nope"})


# -- concurrency ----------------------------------------------------------------------------
def _builder(folder: str, log: str, barrier) -> None:
    request, _ = toy_request()
    encoders = {"a": Scaled(2.0, delay=0.05), "b": Scaled(3.0, delay=0.05)}

    def source():
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return toy_source()

    barrier.wait()
    path, _ = ensure_cache(request, source, encoders, folder, show_progress=False)
    read_cache(path, request)


def test_two_concurrent_builders_produce_one_good_file(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    log = tmp_path / "builds.log"
    procs = [ctx.Process(target=_builder, args=(str(tmp_path / "c"), str(log), barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(log.read_text().split()) == 1, "exactly one process encoded"
    files = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert [f for f in files if f.endswith(".h5")] == [toy_request()[0].filename()]
    assert not [f for f in files if f.endswith(".tmp")]
    assert verify_cache(tmp_path / "c" / toy_request()[0].filename()).ok


# -- bad files ------------------------------------------------------------------------------
def test_truncated_cache_is_detected_with_a_rebuild_hint(tmp_path):
    path = build(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MmalError, match=r"truncated or corrupt.*mmal cache rm"):
        read_cache(path, toy_request()[0])
    info = verify_cache(path)
    assert not info.ok and "mmal cache build" in info.problem
    assert "\n" not in info.problem


def test_flipped_bytes_in_a_chunk_fail_the_checksum(tmp_path):
    path = build(tmp_path)
    with h5py.File(path) as h5:
        chunk = h5["features/a"].id.get_chunk_info(0)
    raw = bytearray(path.read_bytes())
    for k in range(chunk.byte_offset + 10, chunk.byte_offset + 30):
        raw[k] ^= 0xFF
    path.write_bytes(bytes(raw))
    info = verify_cache(path)
    assert not info.ok and "corrupt" in info.problem
    with pytest.raises(MmalError, match="corrupt"):
        read_cache(path, toy_request()[0])


def test_unfinished_cache_is_refused(tmp_path):
    path = build(tmp_path)
    with h5py.File(path, "a") as h5:
        del h5.attrs["complete"]
    with pytest.raises(MmalError, match="incomplete"):
        read_cache(path, toy_request()[0])
    assert not read_info(path).ok


def test_cache_built_with_another_encoder_is_refused(tmp_path):
    path = build(tmp_path, factor=2.0)
    other, _ = toy_request(factor=4.0)
    with pytest.raises(MmalError, match=r"built with other encoders \(a: cache has toy-scaled v1 weights factor=2.0.*factor=4.0"):
        read_cache(path, other)


def test_load_refuses_a_mismatching_file_at_the_expected_path(toy_plugins, tmp_path):
    ds = mmal_core.load_dataset("toy-raw", cache_dir=str(tmp_path))
    with h5py.File(ds.info["cache"], "a") as h5:
        h5.attrs["dataset_version"] = "0"
    with pytest.raises(MmalError, match=r"dataset_version.*mmal cache rm"):
        mmal_core.load_dataset("toy-raw", cache_dir=str(tmp_path))


def test_disk_full_mid_write_leaves_nothing_behind(tmp_path, monkeypatch):
    writes = {"n": 0}
    original = h5py.Dataset.__setitem__

    def failing(self, key, value):
        writes["n"] += 1
        if writes["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", failing)
    request, encoders = toy_request()
    with pytest.raises(MmalError, match="disk is full.*nothing was kept"):
        ensure_cache(request, toy_source, encoders, tmp_path, show_progress=False)
    assert writes["n"] == 3
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_interrupted_build_leaves_no_temporary_file(tmp_path):
    request, encoders = toy_request()

    class Boom(Scaled):
        def encode(self, items):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensure_cache(request, toy_source, {"a": encoders["a"], "b": Boom(3.0)}, tmp_path, show_progress=False)
    assert [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


# -- lazy reads ------------------------------------------------------------------------------
def test_lazy_features_index_like_arrays(tmp_path):
    path = build(tmp_path)
    eager = read_cache(path, toy_request()[0])
    lazy = read_cache(path, toy_request()[0], lazy=True)
    try:
        x, lx = eager.train.features["a"], lazy.train.features["a"]
        assert isinstance(lx, LazyFeatures) and lx.shape == x.shape and len(lx) == len(x)
        rng = np.random.default_rng(1)
        idx = rng.integers(0, len(x), 50)  # unsorted, with repeats
        np.testing.assert_array_equal(lx[idx], x[idx])
        np.testing.assert_array_equal(lx[3:40], x[3:40])
        np.testing.assert_array_equal(lx[::7], x[::7])
        np.testing.assert_array_equal(lx[5], x[5])
        sel = rng.random(len(x)) < 0.3
        np.testing.assert_array_equal(lx[sel], x[sel])
        np.testing.assert_array_equal(np.asarray(lazy.test.features["b"]), eager.test.features["b"])
        assert lazy.train.fingerprint() == eager.train.fingerprint()
    finally:
        lazy.handle.close()


def test_model_predictions_stream_from_a_lazy_pool(tmp_path):
    import torch

    from mmal_core import ModalitySpec, MultimodalDataset
    from mmal_core.builtin.fusion import FusionMLP

    torch.set_num_threads(1)
    path = build(tmp_path)
    eager = read_cache(path, toy_request()[0])
    lazy = read_cache(path, toy_request()[0], lazy=True)
    specs = [ModalitySpec("a", 5), ModalitySpec("b", 3)]
    MultimodalDataset("toy", specs, 3, lazy.train, lazy.test).validate()
    model = FusionMLP(hidden=8, epochs=3, min_steps=0, eval_batch_size=32)
    model.setup(specs, 3)
    model.fit(eager.train, np.arange(40), seed=0)
    unlabeled = np.arange(40, len(eager.train))
    want = {"probs", "modality_embeddings"}
    a = model.predict(eager.train, unlabeled, want=want)
    b = model.predict(lazy.train, unlabeled, want=want)
    np.testing.assert_allclose(a["probs"], b["probs"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a["modality_embeddings"]["b"], b["modality_embeddings"]["b"], rtol=1e-5, atol=1e-6)
    trained_on_lazy = FusionMLP(hidden=8, epochs=3, min_steps=0, eval_batch_size=32)
    trained_on_lazy.setup(specs, 3)
    trained_on_lazy.fit(lazy.train, np.arange(40), seed=0)  # the normaliser reads the lazy pool
    c = trained_on_lazy.predict(lazy.test, want={"probs"})
    np.testing.assert_allclose(model.predict(eager.test, want={"probs"})["probs"], c["probs"], rtol=1e-5, atol=1e-6)
    lazy.handle.close()


def test_list_caches_reports_good_and_bad_files(tmp_path):
    good = build(tmp_path)
    (tmp_path / "junk-0000.h5").write_bytes(b"not hdf5 at all")
    infos = {i.path.name: i for i in list_caches(tmp_path)}
    assert infos[good.name].ok and infos[good.name].n == N and infos[good.name].dims == {"a": 5, "b": 3}
    assert not infos["junk-0000.h5"].ok and "corrupt" in infos["junk-0000.h5"].problem


def test_a_killed_builders_temporary_file_is_cleared_by_the_next_build(tmp_path):
    request, encoders = toy_request()
    stale = tmp_path / f".{request.filename()}.killed.tmp"
    stale.write_bytes(b"half a cache")
    path, built = ensure_cache(request, toy_source, encoders, tmp_path, show_progress=False)
    assert built and not stale.exists() and verify_cache(path).ok


def test_long_provenance_notes_fit_in_the_cache(tmp_path):
    import json

    request, encoders = toy_request()

    def source():
        src = toy_source()
        src.info["files"] = [f"category/drawing_{i:06d}_with_a_long_name.svg" for i in range(5000)]  # > 64 KiB
        return src

    path, _ = ensure_cache(request, source, encoders, tmp_path, show_progress=False)
    with h5py.File(path) as h5:
        assert len(json.loads(h5["info"][()])["files"]) == 5000


def test_lazy_parameter_keeps_features_on_disk(toy_plugins, tmp_path):
    eager = mmal_core.load_dataset("toy-raw", cache_dir=str(tmp_path))
    lazy = mmal_core.load_dataset("toy-raw", cache_dir=str(tmp_path), lazy=True)
    assert isinstance(lazy.train.features["a"], LazyFeatures)
    np.testing.assert_array_equal(np.asarray(lazy.test.features["b"]), eager.test.features["b"])
    assert lazy.train.fingerprint() == eager.train.fingerprint()
    with pytest.raises(MmalError, match="parameter 'lazy'"):
        mmal_core.load_dataset("toy-raw", cache_dir=str(tmp_path), lazy="yes")
