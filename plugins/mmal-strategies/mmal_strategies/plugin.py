"""Entry point of the mmal-strategies distribution."""

from mmal_core import hookimpl

from .bayesian import BALD, BatchBALD
from .diversity import Badge, CoreSet, KMeansSampling, TypiClust
from .multimodal import MULTIMODAL_STRATEGIES
from .uncertainty import Entropy, LeastConfidence, Margin, RandomSampling


@hookimpl
def mmal_register_strategies():
    return ([RandomSampling, LeastConfidence, Margin, Entropy]
            + [BALD, BatchBALD, CoreSet, KMeansSampling, Badge, TypiClust]
            + MULTIMODAL_STRATEGIES)
