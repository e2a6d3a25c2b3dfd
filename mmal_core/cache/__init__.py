"""The HDF5 pool-feature cache: raw items go through frozen encoders once, runs read vectors.

A *raw* dataset (:class:`RawDataset`) declares its modalities and a default encoder for
each; its items (images, sounds, texts) are encoded once and written to one HDF5 file per
(dataset, version, source, encoder fingerprints). Later runs open that file and never
re-encode. Layout of a cache file::

    /ids                (n,) int64      sample ids, stable across builds
    /labels             (n,) int64
    /split              (n,) uint8      0 = train (pool), 1 = test; train rows come first
    /mask               (n, M) bool     True where the modality is present
    /features/<m>       (n, d_m) float32, chunked, compressed
    attributes          format, key, dataset, dataset_version, params, source_key,
                        source_hash, modalities, encoders (name/version/fingerprint per
                        modality), class_names, skipped (unreadable items per modality),
                        missing (absent items per modality), mmal_version, created,
                        checksum, complete
    /info               JSON text: the dataset's provenance notes (file lists, unreadable files)

Every array (ids, labels, split, mask, features) is chunked and Fletcher-32 checksummed
(format 2; format 1 checksummed only the features, so a flipped label or mask bit went
unnoticed). The ``checksum`` attribute is the SHA-256 of every other attribute and of
``/info``; the ``key`` attribute is recomputed from the attributes it is made of. So a
changed, removed or bit-flipped attribute is refused too.

Writing is atomic (a temporary file in the same folder, renamed at the end) and guarded by a
file lock, so two processes asking for the same cache at once produce one good file. A file
that cannot be opened, lacks ``complete``, fails a checksum, or was built for another
request raises :class:`MmalError` with a rebuild hint; it is never silently used.

The cache folder is ``$MMAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmal``, else
``~/.cache/mmal``; the CLI's ``--cache-dir`` overrides both.

Modules: ``encoders`` (the Encoder base a plugin subclasses), ``store`` (the file format:
write, read, verify, list), ``build`` (one build at a time: locks, progress, leftovers of
killed builds), ``raw`` (RawDataset, the base of datasets whose items are encoded).
"""

from __future__ import annotations

from .build import ensure_cache, remove_lock_file, remove_temporaries, temporaries
from .encoders import Encoder, file_fingerprint, make_encoder, parse_encoder_spec
from .raw import RawDataset
from .store import (
    ENV_CACHE_DIR,
    FORMAT_VERSION,
    SUFFIX,
    CacheInfo,
    CacheRequest,
    CachedArrays,
    LazyFeatures,
    RawSource,
    cache_dir,
    check_cache,
    is_cache_name,
    list_caches,
    read_cache,
    read_info,
    verify_cache,
    write_cache,
)

__all__ = [
    "ENV_CACHE_DIR", "FORMAT_VERSION", "SUFFIX", "CacheInfo", "CacheRequest", "CachedArrays", "Encoder",
    "LazyFeatures", "RawDataset", "RawSource", "cache_dir", "check_cache", "ensure_cache", "file_fingerprint",
    "is_cache_name", "list_caches", "make_encoder", "parse_encoder_spec", "read_cache", "read_info",
    "remove_lock_file", "remove_temporaries", "temporaries", "verify_cache", "write_cache",
]
