"""RawDataset: the base class of datasets whose items are encoded into the cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..data import Dataset
from ..errors import MmalError
from .build import ensure_cache
from .encoders import Encoder, make_encoder, parse_encoder_spec
from .store import CacheRequest, RawSource, read_cache


# -- raw datasets ---------------------------------------------------------------------------------
class RawDataset(Dataset):
    """Base class of datasets whose items must be encoded (images, sounds, texts).

    Subclasses set ``name``, ``summary``, ``version`` and ``modalities`` (modality -> name of
    the encoder used by default, or ``{"name": ..., "params": {...}}``), implement
    :meth:`read_source` and, when the source lives in files, :meth:`source_key`. Their
    ``__init__`` takes the dataset's own parameters plus ``encoders``, ``cache_dir`` and
    ``lazy``, and passes the last three to ``RawDataset.__init__``.

    ``load(seed)`` builds the HDF5 cache when it is missing (encoding every item once, with a
    progress bar) and reads the features from it. The train/test split is fixed by the
    dataset (stored in the cache); ``seed`` drives the rest of the run (initial labels,
    model weights), as for any dataset.

    encoders: per-modality overrides of the default encoders, e.g. ``{"image": "identity"}``.
    cache_dir: where caches live (default: :func:`cache_dir`).
    lazy: keep features on disk and read them batch by batch (pools larger than memory).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    modalities: ClassVar[dict[str, Any]] = {}
    #: Parameters that do not change the cached content.
    cache_exclude: ClassVar[tuple[str, ...]] = ("encoders", "cache_dir", "lazy")

    def __init__(self, encoders: dict[str, Any] | None = None, cache_dir: str | None = None, lazy: bool = False):
        if encoders is not None and not isinstance(encoders, dict):
            raise MmalError(f"parameter 'encoders': expected a mapping modality -> encoder name, got {encoders!r}")
        for m in encoders or {}:
            if m not in self.modalities:
                from ..errors import did_you_mean

                raise MmalError(
                    f"parameter 'encoders': dataset '{self.name}' has no modality '{m}'{did_you_mean(m, self.modalities)}; "
                    f"modalities: {', '.join(self.modalities)}"
                )
        if not isinstance(lazy, bool):
            raise MmalError(f"parameter 'lazy': expected true or false, got {lazy!r}")
        self.encoders = encoders
        self.cache_dir = cache_dir
        self.lazy = lazy

    # -- what subclasses provide --------------------------------------------------------------
    def read_source(self) -> RawSource:
        """Collect ids, labels, split and the raw items (lazily loaded) of every modality."""
        raise NotImplementedError

    def source_key(self) -> str:
        """A cheap identity of the raw source (e.g. a hash of file names and sizes); part of the cache key."""
        return ""

    # -- the machinery -----------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        from ..params import get_params

        return get_params(self)

    def cache_params(self) -> dict[str, Any]:
        """The parameters that change the cached content (all but ``cache_exclude``)."""
        return {k: v for k, v in sorted(self.get_params().items()) if k not in self.cache_exclude}

    def encoder_specs(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Modality -> (encoder name, encoder params): the defaults with ``encoders`` applied."""
        out = {}
        for m, default in self.modalities.items():
            value = (self.encoders or {}).get(m, default)
            out[m] = parse_encoder_spec(value, f"dataset '{self.name}', encoders.{m}")
        return out

    def make_encoders(self) -> dict[str, Encoder]:
        return {m: make_encoder(n, p, f"dataset '{self.name}', encoders.{m}") for m, (n, p) in self.encoder_specs().items()}

    def cache_request(self, encoders: dict[str, Encoder]) -> CacheRequest:
        return CacheRequest(
            dataset=self.name,
            dataset_version=str(self.version),
            params=self.cache_params(),
            source_key=self.source_key(),
            modalities=list(self.modalities),
            encoders={m: encoders[m].describe() for m in self.modalities},
        )

    def build_cache(self, *, rebuild: bool = False, show_progress: bool = True) -> tuple[Path, bool]:
        """Make sure the cache exists; returns ``(path, built_now)``."""
        encoders = self.make_encoders()
        request = self.cache_request(encoders)
        return ensure_cache(request, self.read_source, encoders, self.cache_dir, rebuild=rebuild, show_progress=show_progress)

    def load(self, seed: int):
        """The dataset's train (pool) and test splits, read from its cache (built when missing)."""
        from ..data import ModalitySpec, MultimodalDataset

        encoders = self.make_encoders()
        request = self.cache_request(encoders)
        path, built = ensure_cache(request, self.read_source, encoders, self.cache_dir)
        arrays = read_cache(path, request, lazy=self.lazy)
        specs = [ModalitySpec(m, int(arrays.train.features[m].shape[1]), encoders[m].name) for m in arrays.modalities]
        info = {
            "cache": str(path),
            "cache_key": request.key,
            "built_now": built,
            "encoders": request.encoders,
            "class_names": arrays.class_names,
            "skipped": arrays.attrs.get("skipped"),
            "missing": arrays.attrs.get("missing"),
            "source_hash": arrays.attrs.get("source_hash"),
            "seed": int(seed),
        }
        return MultimodalDataset(self.name, specs, len(arrays.class_names), arrays.train, arrays.test, info)
