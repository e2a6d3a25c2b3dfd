"""A cheap text baseline: hashed bag of words (no model, no download)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmal_core import Encoder, MmalError

_WORD = re.compile(r"[a-z0-9]+")


class TextHashEncoder(Encoder):
    """Hashed bag of lower-cased words (the "hashing trick", Weinberger et al. 2009).

    Each word adds +-1 to one of ``dim`` buckets (bucket and sign from its BLAKE2 hash); the
    vector is then scaled to unit length (all zeros for a text without words).
    """

    name = "text-hash"
    summary = "hashed bag of words (a cheap text baseline, no model)"
    version = "1"
    kind = "text"
    batch_size = 4096

    def __init__(self, dim: int = 256):
        from mmal_core.params import check_int

        self.dim = check_int("dim", dim, 2, 1 << 20)

    def encode(self, items: Sequence[Any]) -> np.ndarray:
        """items: n strings -> (n, dim) float32."""
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise MmalError(f"encoder 'text-hash': expected text items (str), got {type(text).__name__}")
            for word in _WORD.findall(text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=out, where=norms > 0)
