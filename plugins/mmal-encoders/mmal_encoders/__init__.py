"""Frozen encoders for mmal, registered through the ``mmal_register_encoders`` hook.

* ``identity`` (:class:`IdentityEncoder`): items that are already vectors, flattened;
* ``mfcc-stats`` (:class:`MfccStatsEncoder`): per-coefficient mean and std of MFCCs and of
  their deltas (``4 * n_mfcc`` values, 52 by default), from a waveform or precomputed MFCCs;
* ``efficientnet-lite0`` (:class:`EfficientNetLite0Encoder`): ImageNet EfficientNet-Lite0,
  global-average-pooled last feature map (1280 values); video = mean over frames;
* ``text-hash`` (:class:`TextHashEncoder`): hashed bag of words, a cheap text baseline;
* ``minilm`` (:class:`MiniLMEncoder`): all-MiniLM-L6-v2 sentence embeddings (384 values).

Heavy packages (torch, sentence-transformers) are imported only when an encoder encodes.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .audio import MfccStatsEncoder, mfcc
from .hashing import TextHashEncoder
from .identity import IdentityEncoder
from .image import EfficientNetLite0Encoder
from .text import MiniLMEncoder

__all__ = ["EfficientNetLite0Encoder", "IdentityEncoder", "MfccStatsEncoder", "MiniLMEncoder", "TextHashEncoder", "mfcc", "__version__"]
