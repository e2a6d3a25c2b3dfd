"""Entry point of the mmal-strategies distribution."""

from mmal_core import hookimpl

from .uncertainty import Entropy, LeastConfidence, Margin, RandomSampling


@hookimpl
def mmal_register_strategies():
    return [RandomSampling, LeastConfidence, Margin, Entropy]
