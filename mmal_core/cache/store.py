"""The cache file: its format, location and name, writing, reading and verifying."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MmalError
from ..files import honour_umask
from .encoders import Encoder


#: 2: every array is Fletcher-32 checksummed and the attributes carry a checksum. A format
#: change changes every cache key, so caches of another format are rebuilt, never read.
FORMAT_VERSION = 2
ENV_CACHE_DIR = "MMAL_CACHE_DIR"
SUFFIX = ".h5"
#: Rows per HDF5 chunk are chosen so that one chunk holds about this many bytes.
CHUNK_BYTES = 1 << 20


# -- location -------------------------------------------------------------------------------
def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``override``, else ``$MMAL_CACHE_DIR``, ``$XDG_CACHE_HOME/mmal``, ``~/.cache/mmal``."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mmal"


def _rebuild_hint(path: Path, dataset: str | None = None) -> str:
    what = dataset or "DATASET"
    return f"delete it with `mmal cache rm {path}` and rebuild with `mmal cache build {what}`"


# -- encoders ---------------------------------------------------------------------------------
# -- raw sources --------------------------------------------------------------------------------
@dataclass
class RawSource:
    """Everything a raw dataset hands to the cache builder.

    ids: (n,) int64 sample ids (unique, stable across builds).
    labels: (n,) int64 class indices.
    split: (n,) uint8, 0 = train (the pool), 1 = test.
    items: dict modality -> sequence of n raw items (``None`` where the modality is missing).
        Items are fetched one at a time, in order, so a sequence may load them lazily.
    class_names: the names of the classes, index = label.
    source_hash: a hash of the raw content (recorded in the cache for provenance).
    """

    ids: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    items: dict[str, Sequence[Any]]
    class_names: list[str]
    source_hash: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class CacheRequest:
    """What a cache file must have been built for. ``key`` names the file."""

    dataset: str
    dataset_version: str
    params: dict[str, Any]
    source_key: str
    modalities: list[str]
    encoders: dict[str, dict[str, Any]]

    @property
    def key(self) -> str:
        return _request_key(FORMAT_VERSION, self.dataset, self.dataset_version, self.params, self.source_key,
                            self.modalities, self.encoders)

    def filename(self) -> str:
        return _cache_name(self.dataset, self.key)


def _request_key(fmt, dataset, dataset_version, params, source_key, modalities, encoders) -> str:
    text = json.dumps(
        [fmt, dataset, dataset_version, params, source_key, modalities, encoders],
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: ``<dataset>-<16 hex digits>.h5``: the name of a cache file (see ``CacheRequest.filename``).
_NAME_KEY_LEN = 16


def is_cache_name(name: str, dataset: str | None = None) -> bool:
    """Whether ``name`` has the form of a cache file name (of ``dataset`` when given)."""
    if not name.endswith(SUFFIX):
        return False
    stem = name[: -len(SUFFIX)]
    head, sep, key = stem.rpartition("-")
    if not sep or not head or len(key) != _NAME_KEY_LEN or any(c not in "0123456789abcdef" for c in key):
        return False
    if dataset is None:
        return True
    return head == _safe_name(dataset)


def _safe_name(dataset: str) -> str:
    """The dataset's name as it appears in cache file names (only letters, digits, '-', '_')."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset)


def _cache_name(dataset: str, key: str) -> str:
    return f"{_safe_name(dataset)}-{key}{SUFFIX}"


def _attrs_checksum(attrs: dict[str, Any], info_text: str | None) -> str:
    """SHA-256 of the attributes (all but ``checksum`` and ``complete``) and of ``/info``."""
    plain = {k: v for k, v in attrs.items() if k not in ("checksum", "complete")}
    text = json.dumps([plain, info_text], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain_attr(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    return v


# -- writing ----------------------------------------------------------------------------------
def _chunk_rows(dim: int, n: int) -> int:
    return int(max(1, min(n, CHUNK_BYTES // max(1, 4 * dim))))


@contextlib.contextmanager
def atomic_h5(path: Path) -> Iterator[Any]:
    """Open a temporary HDF5 file next to ``path``; rename it to ``path`` only on success.

    On any error (a full disk included) the temporary file is removed and nothing is left at
    ``path``; an ``OSError`` becomes a one-line :class:`MmalError`.
    """
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with h5py.File(tmp, "w") as h5:
            yield h5
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        honour_umask(tmp)  # mkstemp made it private; a cache is an ordinary file
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and not isinstance(err, MmalError):
            reason = "the disk is full" if getattr(err, "errno", None) == errno.ENOSPC else f"{type(err).__name__}: {err}"
            raise MmalError(f"cache {path}: writing failed ({reason}); nothing was kept, free space or set {ENV_CACHE_DIR} and retry") from None
        raise


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _small(h5, name: str, data: np.ndarray) -> None:
    """An array of ids, labels, split or mask: chunked so that it carries a Fletcher-32 checksum."""
    data = np.asarray(data)
    if not data.size:
        h5.create_dataset(name, data=data)
        return
    row_bytes = max(1, data.itemsize * int(np.prod(data.shape[1:], dtype=np.int64)))
    rows = int(max(1, min(data.shape[0], CHUNK_BYTES // row_bytes)))
    h5.create_dataset(name, data=data, chunks=(rows,) + data.shape[1:], fletcher32=True)


def write_cache(
    path: Path,
    request: CacheRequest,
    source: RawSource,
    encoders: dict[str, Encoder],
    progress: Callable[[str, int], None] | None = None,
    compression: str | None = "gzip",
) -> Path:
    """Encode every modality of ``source`` and write the cache file ``path`` atomically.

    progress: called as ``progress(modality, n_items_done_in_this_call)`` after each batch.
    Items that are ``None`` are stored as missing (mask False) and counted in the ``missing``
    attribute; items whose loading raises ``ValueError``/``OSError`` (an unreadable file) are
    stored as missing too and counted in ``skipped``, their messages kept in ``/info``.
    """
    n = len(source.labels)
    order = np.argsort(np.asarray(source.split, dtype=np.uint8), kind="stable")  # train rows first
    mods = request.modalities
    mask = np.zeros((n, len(mods)), dtype=bool)
    skipped: dict[str, int] = {}
    missing: dict[str, int] = {}
    with atomic_h5(path) as h5:
        _small(h5, "ids", np.asarray(source.ids, dtype=np.int64)[order])
        _small(h5, "labels", np.asarray(source.labels, dtype=np.int64)[order])
        _small(h5, "split", np.asarray(source.split, dtype=np.uint8)[order])
        group = h5.create_group("features")
        for j, m in enumerate(mods):
            encoder, items = encoders[m], source.items[m]
            dset = None
            skipped[m] = missing[m] = 0
            for start in range(0, n, max(1, int(encoder.batch_size))):
                rows = order[start : start + int(encoder.batch_size)]
                batch, where = [], []
                for k, row in enumerate(rows):
                    try:
                        item = items[int(row)]
                    except (OSError, ValueError) as err:  # unreadable file: count it, keep going
                        skipped[m] += 1
                        source.info.setdefault("unreadable", []).append(f"{m}[{int(row)}]: {err}")
                        continue
                    if item is None:
                        missing[m] += 1
                        continue
                    batch.append(item)
                    where.append(k)
                vectors = _encode_batch(encoder, batch, m) if batch else None
                if dset is None:
                    if vectors is None:
                        vectors = _probe_dim(encoder, items, order, m)
                        batch, where = [], []
                    dim = int(vectors.shape[1])
                    dset = group.create_dataset(
                        m, shape=(n, dim), dtype="float32", chunks=(_chunk_rows(dim, n), dim),
                        compression=compression, shuffle=compression is not None, fletcher32=True,
                        fillvalue=0.0,
                    )
                block = np.zeros((len(rows), dset.shape[1]), dtype=np.float32)
                if where and vectors.shape[1] != dset.shape[1]:
                    raise MmalError(
                        f"encoder '{encoder.name}' (modality '{m}') returned {vectors.shape[1]} values per item "
                        f"after {dset.shape[1]} in an earlier batch"
                    )
                if where:
                    block[where] = vectors
                    mask[start + np.asarray(where), j] = True
                dset[start : start + len(rows)] = block
                if progress is not None:
                    progress(m, len(rows))
        _small(h5, "mask", mask)
        attrs = h5.attrs
        attrs["format"] = FORMAT_VERSION
        attrs["key"] = request.key
        attrs["dataset"] = request.dataset
        attrs["dataset_version"] = request.dataset_version
        attrs["params"] = json.dumps(request.params, sort_keys=True, default=str)
        attrs["source_key"] = request.source_key
        attrs["source_hash"] = source.source_hash
        attrs["modalities"] = json.dumps(mods)
        attrs["encoders"] = json.dumps(request.encoders, sort_keys=True, default=str)
        attrs["class_names"] = json.dumps(list(source.class_names))
        attrs["skipped"] = json.dumps(skipped)
        attrs["missing"] = json.dumps(missing)
        # Free-form provenance can be long (file lists): a dataset, not an attribute (64 KiB limit).
        info_text = json.dumps(source.info, sort_keys=True, default=str)
        h5.create_dataset("info", data=info_text)
        from ..version import __version__

        attrs["mmal_version"] = __version__
        attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        attrs["checksum"] = _attrs_checksum({k: _plain_attr(v) for k, v in attrs.items()}, info_text)
        attrs["complete"] = True  # written last: a file without it was never finished
    return path


def _encode_batch(encoder: Encoder, batch: list, modality: str) -> np.ndarray:
    out = np.asarray(encoder.encode(batch), dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != len(batch):
        raise MmalError(
            f"encoder '{encoder.name}' (modality '{modality}') returned shape {out.shape} for {len(batch)} items, "
            f"expected ({len(batch)}, d)"
        )
    if not np.isfinite(out).all():
        raise MmalError(f"encoder '{encoder.name}' (modality '{modality}') returned NaN or inf features")
    return out


def _probe_dim(encoder: Encoder, items: Sequence[Any], order: np.ndarray, modality: str) -> np.ndarray:
    # The first batch had no present item: find one anywhere to learn the output size.
    for row in order:
        try:
            item = items[int(row)]
        except (OSError, ValueError):
            continue
        if item is not None:
            return _encode_batch(encoder, [item], modality)
    raise MmalError(f"modality '{modality}': every item is missing or unreadable; nothing to encode")


# -- reading ----------------------------------------------------------------------------------
@dataclass
class CacheInfo:
    """The attributes of one cache file, as :func:`read_info` finds them."""

    path: Path
    ok: bool
    problem: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    n: int = 0
    dims: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0


def _decoded_attrs(h5) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in h5.attrs.items():
        v = _plain_attr(v)
        if k in ("params", "modalities", "encoders", "class_names", "skipped", "missing") and isinstance(v, str):
            with contextlib.suppress(ValueError):
                v = json.loads(v)
        out[k] = v
    return out


def _check_structure(h5, path: Path, request: CacheRequest | None = None) -> tuple[dict[str, Any], int, dict[str, int]]:
    try:
        attrs = _decoded_attrs(h5)
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as err:  # a corrupt attribute header
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MmalError(f"cache {path}: its attributes cannot be read, the file is corrupt ({first}); {_rebuild_hint(path)}") from None
    hint = _rebuild_hint(path, attrs.get("dataset"))
    if not attrs.get("complete"):
        raise MmalError(f"cache {path}: incomplete (its build never finished); {hint}")
    if attrs.get("format") != FORMAT_VERSION:
        raise MmalError(f"cache {path}: format {attrs.get('format')!r}, this mmal reads format {FORMAT_VERSION}; {hint}")
    if request is not None:  # the most telling message first: which attribute differs from the request
        _check_request(path, attrs, request)
    try:
        # The attributes: their checksum first (a flipped or edited byte), then the key they make.
        info = h5["info"][()]
        info_text = info.decode() if isinstance(info, bytes) else str(info)
        raw = {k: _plain_attr(v) for k, v in h5.attrs.items()}
        if "checksum" not in raw:
            raise KeyError("checksum")
        if _attrs_checksum(raw, info_text) != raw["checksum"]:
            raise MmalError(f"cache {path}: its attributes or /info do not match their checksum (edited or corrupt); {hint}")
        key = _request_key(FORMAT_VERSION, attrs["dataset"], attrs["dataset_version"], attrs["params"], attrs["source_key"],
                           attrs["modalities"], attrs["encoders"])
        if key != attrs["key"]:
            raise MmalError(f"cache {path}: attribute 'key' is {attrs['key']!r} but its attributes make {key!r}; {hint}")
        classes = attrs["class_names"]
        if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
            raise MmalError(f"cache {path}: attribute 'class_names' is {classes!r}, expected a list of at least 2 names; {hint}")
        mods = attrs["modalities"]
        if not (isinstance(mods, list) and mods and all(isinstance(m, str) for m in mods)):
            raise MmalError(f"cache {path}: attribute 'modalities' is {mods!r}, expected a list of modality names; {hint}")
        n = int(h5["labels"].shape[0])
        for name, shape in (("labels", (n,)), ("ids", (n,)), ("split", (n,)), ("mask", (n, len(mods)))):
            if h5[name].shape != shape:
                raise MmalError(f"cache {path}: '/{name}' has shape {h5[name].shape}, expected {shape}; {hint}")
            if n and not h5[name].fletcher32:
                raise MmalError(f"cache {path}: '/{name}' has no checksum; {hint}")
        dims = {}
        for m in mods:
            d = h5["features"][m]
            if d.ndim != 2 or d.shape[0] != n or d.dtype != np.float32:
                raise MmalError(f"cache {path}: '/features/{m}' has shape {d.shape} {d.dtype}, expected ({n}, d) float32; {hint}")
            if n and not d.fletcher32:
                raise MmalError(f"cache {path}: '/features/{m}' has no checksum; {hint}")
            dims[m] = int(d.shape[1])
    except KeyError as err:
        what = err.args[0] if err.args else err
        if isinstance(what, str) and "doesn't exist" in what:  # h5py's message for a missing object
            what = what.split("object '")[-1].split("'")[0] if "object '" in what else what
        raise MmalError(f"cache {path}: missing dataset or attribute '{what}'; {hint}") from None
    except (OSError, RuntimeError, ValueError, TypeError) as err:  # unreadable metadata
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MmalError(f"cache {path}: its metadata is corrupt ({first}); {hint}") from None
    return attrs, n, dims


@contextlib.contextmanager
def _open(path: Path, dataset: str | None = None):
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except FileNotFoundError:
        raise MmalError(f"cache {path}: no such file") from None
    except OSError as err:
        reason = str(err).split("(")[0].strip() or type(err).__name__
        raise MmalError(
            f"cache {path}: cannot be read as HDF5, it is truncated or corrupt ({reason}); {_rebuild_hint(path, dataset)}"
        ) from None
    try:
        yield h5
    finally:
        h5.close()


def read_info(path: str | os.PathLike) -> CacheInfo:
    """Open ``path`` and check its structure (not its checksums: see :func:`verify_cache`)."""
    path = Path(path)
    try:
        with _open(path) as h5:
            attrs, n, dims = _check_structure(h5, path)
        if is_cache_name(path.name) and path.name != _expected_name(attrs):  # renamed: found for the wrong request
            raise MmalError(
                f"cache {path}: named like a cache of another request (its attributes make {_expected_name(attrs)}); "
                f"{_rebuild_hint(path, attrs.get('dataset'))}"
            )
    except MmalError as err:
        return CacheInfo(path, False, str(err))
    return CacheInfo(path, True, "", attrs, n, dims)


def verify_cache(path: str | os.PathLike) -> CacheInfo:
    """Read every chunk of ``path`` (Fletcher-32 checksums) and check ids, labels and features.

    Returns a :class:`CacheInfo` with ``ok`` False and ``problem`` set when anything is wrong.
    """
    path = Path(path)
    info = read_info(path)
    if not info.ok:
        return info
    hint = _rebuild_hint(path, info.attrs.get("dataset"))
    try:
        with _open(path) as h5:
            _check_values(path, hint, h5["ids"][:], h5["labels"][:], h5["split"][:], len(info.attrs["class_names"]))
            h5["mask"][:]
            for m in info.dims:
                d = h5["features"][m]
                step = d.chunks[0] * 16 if d.chunks else 65536
                for start in range(0, info.n, step):
                    block = d[start : start + step]
                    if not np.isfinite(block).all():
                        raise MmalError(f"cache {path}: '/features/{m}' holds NaN or inf values; {hint}")
    except MmalError as err:
        return CacheInfo(path, False, str(err), info.attrs, info.n, info.dims)
    except (OSError, RuntimeError, ValueError) as err:  # checksum mismatch, unreadable chunk
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return CacheInfo(path, False, f"cache {path}: a data chunk is corrupt ({first}); {hint}", info.attrs, info.n, info.dims)
    return info


def _expected_name(attrs: dict[str, Any]) -> str:
    return _cache_name(str(attrs.get("dataset")), str(attrs.get("key")))


def list_caches(directory: str | os.PathLike | None = None) -> list[CacheInfo]:
    """Every ``*.h5`` file of the cache folder with its (structural) status."""
    folder = cache_dir(directory)
    if not folder.is_dir():
        return []
    return [read_info(p) for p in sorted(folder.glob(f"*{SUFFIX}"))]


class LazyFeatures:
    """Rows ``[start, stop)`` of an HDF5 feature array, read on demand.

    Behaves like a read-only (stop - start, d) float32 array for what the model and the
    PoolView need: ``shape``, ``dtype``, ``len`` and row indexing with a slice, an integer
    array or a boolean mask. Only the chunks covering the requested rows are read, so a
    pool larger than memory can be streamed batch by batch.
    """

    lazy = True

    def __init__(self, dset, start: int = 0, stop: int | None = None, path: Path | None = None):
        self._dset = dset
        self.start = int(start)
        self.stop = int(dset.shape[0] if stop is None else stop)
        self.path = path
        self.shape = (self.stop - self.start, int(dset.shape[1]))
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, where):
        try:
            return self._dset[where]
        except (OSError, RuntimeError) as err:  # a chunk fails its checksum (or the file went away)
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise MmalError(f"cache {self.path}: a data chunk is corrupt ({first}); {_rebuild_hint(self.path)}") from None

    def __array__(self, dtype=None, copy=None):
        out = self[: len(self)]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, index):
        if isinstance(index, tuple):
            rows, cols = index[0], index[1:]
            return self[rows][(slice(None),) + cols]
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            block = self._read(slice(self.start + lo, self.start + max(lo, hi))) if step > 0 else None
            if block is None:
                return np.asarray(self)[index]
            return block[::step] if step != 1 else block
        if isinstance(index, (int, np.integer)):
            i = int(index) + (len(self) if index < 0 else 0)
            return self._read(self.start + i)
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise IndexError(f"boolean index of shape {index.shape} for {len(self)} rows")
            index = np.flatnonzero(index)
        index = index.astype(np.int64).reshape(-1)
        if index.size == 0:
            return np.empty((0, self.shape[1]), np.float32)
        index = np.where(index < 0, index + len(self), index)
        # Read only the chunks that hold wanted rows, whole (HDF5 decompresses whole chunks
        # anyway), and gather the rows: much faster than HDF5 point selection, and the memory
        # used beyond the output is one run of chunks.
        out = np.empty((index.size, self.shape[1]), np.float32)
        order = np.argsort(index, kind="stable")
        rows = index[order] + self.start
        chunk = int(self._dset.chunks[0]) if self._dset.chunks else 4096
        first_chunk = rows // chunk
        bounds = np.flatnonzero(np.diff(first_chunk)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [rows.size]])
        k = 0
        while k < len(starts):
            # merge consecutive chunks into one read of at most 16 chunks
            j = k
            while j + 1 < len(starts) and first_chunk[starts[j + 1]] == first_chunk[starts[j]] + 1 and j - k < 15:
                j += 1
            lo = int(first_chunk[starts[k]]) * chunk
            hi = min((int(first_chunk[starts[j]]) + 1) * chunk, self._dset.shape[0])
            block = self._read(slice(lo, hi))
            sel = slice(int(starts[k]), int(ends[j]))
            out[order[sel]] = block[rows[sel] - lo]
            k = j + 1
        return out


@dataclass
class CachedArrays:
    """The content of a cache file, split into train (pool) and test rows."""

    path: Path
    attrs: dict[str, Any]
    modalities: list[str]
    class_names: list[str]
    train: Any
    test: Any
    handle: Any = None


def read_cache(path: Path, request: CacheRequest | None = None, lazy: bool = False) -> CachedArrays:
    """Open a cache, check it against ``request`` and return its train and test splits.

    lazy: False reads every feature into memory; True keeps the file open and returns
    :class:`LazyFeatures` for each modality.
    """
    import h5py

    from ..data import Split

    attrs, n, _ = check_cache(path, request)
    hint = _rebuild_hint(path, attrs.get("dataset"))
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise MmalError(f"cache {path}: cannot be read ({err}); {hint}") from None
    try:
        split = h5["split"][:]
        n_train = int((split == 0).sum())
        if not (split[:n_train] == 0).all():
            raise MmalError(f"cache {path}: train rows are not stored first; {hint}")
        ids, labels, mask = h5["ids"][:], h5["labels"][:], h5["mask"][:]
        _check_values(path, hint, ids, labels, split, len(attrs["class_names"]))
        mods = list(attrs["modalities"])
        splits = []
        for lo, hi in ((0, n_train), (n_train, n)):
            if lazy:
                feats = {m: LazyFeatures(h5["features"][m], lo, hi, path) for m in mods}
            else:
                feats = {m: h5["features"][m][lo:hi] for m in mods}
            splits.append(Split(feats, mask[lo:hi], labels[lo:hi], ids[lo:hi]))
    except MmalError:
        h5.close()
        raise
    except (OSError, RuntimeError, ValueError) as err:
        h5.close()
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MmalError(f"cache {path}: a data chunk is corrupt ({first}); {hint}") from None
    if not lazy:
        h5.close()
        h5 = None
    return CachedArrays(path, attrs, mods, list(attrs.get("class_names") or []), splits[0], splits[1], h5)


def check_cache(path: Path, request: CacheRequest | None = None) -> tuple[dict[str, Any], int, dict[str, int]]:
    """Open ``path``, check its structure and attributes (and that it was built for ``request``).

    Reads no features (see :func:`verify_cache` for the checksums of every chunk). Returns
    ``(attrs, n, dims)``; raises :class:`MmalError` with a rebuild hint when anything is off.
    """
    with _open(path, request.dataset if request is not None else None) as h5:
        return _check_structure(h5, path, request)


def _check_request(path: Path, attrs: dict[str, Any], request: CacheRequest) -> None:
    """Refuse a file built for another request, naming the first attribute that differs."""
    hint = _rebuild_hint(path, request.dataset)
    wanted = {  # the most telling differences first; the key covers everything else
        "dataset": request.dataset,
        "dataset_version": request.dataset_version,
        "modalities": request.modalities,
        "encoders": json.loads(json.dumps(request.encoders, sort_keys=True, default=str)),
        "params": json.loads(json.dumps(request.params, sort_keys=True, default=str)),
        "source_key": request.source_key,
        "key": request.key,
    }
    for key, value in wanted.items():
        if attrs.get(key) != value:
            got = attrs.get(key)
            if key == "encoders" and isinstance(got, dict):
                diff = [m for m in value if got.get(m) != value[m]]
                said = ", ".join(
                    f"{m}: cache has {_enc_label(got.get(m))}, request is {_enc_label(value[m])}" for m in diff
                )
                raise MmalError(f"cache {path}: built with other encoders ({said}); {hint}")
            raise MmalError(f"cache {path}: attribute '{key}' is {got!r}, the request needs {value!r}; {hint}")


def _check_values(path: Path, hint: str, ids: np.ndarray, labels: np.ndarray, split: np.ndarray, n_classes: int) -> None:
    """Ids unique, labels in [0, n_classes), split 0/1: what the checksums cannot vouch for."""
    if len(np.unique(ids)) != len(ids):
        raise MmalError(f"cache {path}: sample ids are not unique; {hint}")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise MmalError(f"cache {path}: labels outside [0, {n_classes}); {hint}")
    if len(split) and split.max() > 1:
        raise MmalError(f"cache {path}: '/split' holds values other than 0 (pool) and 1 (test); {hint}")


def _enc_label(desc: Any) -> str:
    if not isinstance(desc, dict):
        return "none"
    return f"{desc.get('name')} v{desc.get('version')} weights {desc.get('fingerprint')}"


