"""Frozen encoders: the base class a plugin subclasses, and how a dataset names one."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import MmalError


class Encoder:
    """Base class of frozen encoders (registered with the ``mmal_register_encoders`` hook).

    An encoder turns a batch of raw items of one kind into fixed-size vectors. Subclasses set
    ``name``, ``version``, ``summary`` and ``kind`` (the raw items they accept: ``"vector"``,
    ``"image"``, ``"audio"``, ``"text"``), take their parameters as keyword arguments of
    ``__init__`` (stored unchanged), import heavy packages only inside :meth:`encode` or
    :meth:`weights_fingerprint`, and implement :meth:`encode`.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    kind: ClassVar[str] = "vector"
    #: Items per call to :meth:`encode` when the cache builds.
    batch_size: ClassVar[int] = 64

    def encode(self, items: Sequence[Any]) -> np.ndarray:
        """Encode ``items`` (a list of raw items, none of them ``None``) -> (len(items), d) float32."""
        raise NotImplementedError

    def weights_fingerprint(self) -> str:
        """A short hash of the weights (or of whatever fixes the output); ``"none"`` if nothing."""
        return "none"

    def get_params(self) -> dict[str, Any]:
        from ..params import get_params

        return get_params(self)

    def describe(self) -> dict[str, Any]:
        """What identifies the vectors this encoder produces: name, version, params, fingerprint."""
        return {
            "name": self.name,
            "version": str(self.version),
            "params": {k: v for k, v in sorted(self.get_params().items())},
            "fingerprint": self.weights_fingerprint(),
        }


def file_fingerprint(*paths: str | os.PathLike) -> str:
    """SHA-256 (first 16 hex digits) of the bytes of ``paths``, memoised per (path, size, mtime)."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        digest = _FILE_HASHES.get(key)
        if digest is None:
            fh = hashlib.sha256()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    fh.update(block)
            digest = _FILE_HASHES[key] = fh.hexdigest()
        h.update(digest.encode())
    return h.hexdigest()[:16]


_FILE_HASHES: dict[tuple, str] = {}


def parse_encoder_spec(value: Any, where: str) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``{"name": ..., "params": {...}}`` -> (name, params)."""
    if isinstance(value, str) and value:
        return value, {}
    if isinstance(value, dict) and isinstance(value.get("name"), str) and set(value) <= {"name", "params"}:
        params = value.get("params") or {}
        if not isinstance(params, dict):
            raise MmalError(f"{where}: encoder params must be a mapping, got {params!r}")
        return value["name"], dict(params)
    raise MmalError(f"{where}: expected an encoder name or {{name: ..., params: {{...}}}}, got {value!r}")


def make_encoder(name: str, params: dict[str, Any] | None = None, where: str = "encoder") -> Encoder:
    """Instantiate the registered encoder ``name`` with ``params``."""
    from ..params import construct
    from ..plugins import get_plugin_manager

    cls = get_plugin_manager().get("encoder", name)
    return construct(cls, dict(params or {}), f"{where} '{name}'")


