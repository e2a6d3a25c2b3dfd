"""mmal: a platform for benchmarking multimodal active learning.

The public API a plugin author relies on::

    from mmal_core import hookimpl, Strategy, ScoreStrategy, PoolView, Dataset
    from mmal_core import MultimodalDataset, Split, ModalitySpec, MmalError, load_dataset
    from mmal_core import Metric, MetricContext

Importing this package does not import torch; the model does, when it is first trained.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .cache import Encoder, RawDataset, RawSource
from .data import Dataset, ModalitySpec, MultimodalDataset, Split
from .errors import ConfigError, MmalError, UnknownNameError
from .hookspecs import hookimpl
from .metrics import Metric, MetricContext
from .plugins import get_plugin_manager
from .strategy import ScoreStrategy, Strategy, top_k
from .view import REQUIREMENTS, PoolView


def load_dataset(name: str, seed: int = 0, **params) -> MultimodalDataset:
    """Build the registered dataset ``name`` for ``seed`` and validate it.

    Returns a :class:`MultimodalDataset` whose ``train`` (the pool) and ``test`` splits
    expose ``features`` (dict modality -> (n, d_m) float32), ``mask`` (n, M) bool and
    ``labels`` (n,) int64. Unknown names and bad parameters raise :class:`MmalError`.
    """
    from .params import construct

    cls = get_plugin_manager().get("dataset", name)
    builder = construct(cls, params, f"dataset '{name}'")
    try:
        dataset = builder.load(int(seed))
    except MmalError as err:
        raise MmalError(f"dataset '{name}': {err}") from None
    except MemoryError as err:  # sizes that cannot fit (n_train: 1e15): a bad parameter, not a bug
        raise MmalError(f"dataset '{name}': the parameters ask for more memory than there is ({err})") from None
    if not isinstance(dataset, MultimodalDataset):
        raise MmalError(f"dataset '{name}': load() returned {type(dataset).__name__}, expected MultimodalDataset")
    return dataset.validate()


__all__ = [
    "__version__",
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
