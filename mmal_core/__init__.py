"""mmal: a platform for benchmarking multimodal active learning.

The public API a plugin author relies on::

    from mmal_core import hookimpl, Strategy, ScoreStrategy, PoolView, Dataset
    from mmal_core import MultimodalDataset, Split, ModalitySpec, MmalError, load_dataset
    from mmal_core import Metric, MetricContext, Benchmark

Importing this package does not import torch; the model does, when it is first trained.
"""

from __future__ import annotations


from .benchmark import Benchmark
from .cache import Encoder, RawDataset, RawSource
from .data import Dataset, ModalitySpec, MultimodalDataset, Split
from .errors import ConfigError, MmalError, UnknownNameError
from .hookspecs import hookimpl
from .metrics import Metric, MetricContext
from .plugins import get_plugin_manager, load_dataset
from .strategy import ScoreStrategy, Strategy, top_k
from .version import __version__
from .view import REQUIREMENTS, PoolView


__all__ = [
    "__version__",
    "Benchmark",
    "ConfigError",
    "Dataset",
    "Encoder",
    "Metric",
    "MetricContext",
    "MmalError",
    "ModalitySpec",
    "MultimodalDataset",
    "PoolView",
    "RawDataset",
    "RawSource",
    "REQUIREMENTS",
    "ScoreStrategy",
    "Split",
    "Strategy",
    "UnknownNameError",
    "get_plugin_manager",
    "hookimpl",
    "load_dataset",
    "top_k",
]
