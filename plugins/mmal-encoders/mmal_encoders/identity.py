"""The identity encoder: items that already are vectors (or small arrays) are flattened."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmal_core import Encoder, MmalError


class IdentityEncoder(Encoder):
    """Flatten each item to a float32 vector; every item must have the same number of values.

    scale: multiply the values by this factor (e.g. ``1/255`` for uint8 pixels).
    """

    name = "identity"
    summary = "items that already are vectors, flattened to float32"
    version = "1"
    kind = "vector"
    batch_size = 4096

    def __init__(self, scale: float = 1.0):
        from mmal_core.params import check_float

        self.scale = check_float("scale", scale)

    def encode(self, items: Sequence[Any]) -> np.ndarray:
        """items: n array-likes with d values each -> (n, d) float32."""
        rows = [np.asarray(x, dtype=np.float32).reshape(-1) for x in items]
        sizes = {r.size for r in rows}
        if len(sizes) > 1:
            raise MmalError(f"encoder 'identity': items have different sizes {sorted(sizes)[:5]}; use an encoder that maps them to one size")
        return np.stack(rows) * np.float32(self.scale)

    def weights_fingerprint(self) -> str:
        return "none"
