"""The models, metrics and canonical benchmarks that ship with mmal_core, registered through the same
hooks a third party uses."""

from __future__ import annotations

from ..hookspecs import hookimpl


@hookimpl
def mmal_register_models():
    from .fusion import FusionMLP

    return [FusionMLP]


@hookimpl
def mmal_register_metrics():
    from ..metrics import Accuracy, LogLikelihood, MacroF1, ModalityAccuracy
    from ..utilization import UTILIZATION_METRICS

    return [Accuracy, MacroF1, LogLikelihood, ModalityAccuracy, *UTILIZATION_METRICS]


@hookimpl
def mmal_register_benchmarks():
    from .benchmarks import canonical_suite

    return canonical_suite()
