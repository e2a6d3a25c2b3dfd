"""Query strategies shipped with mmal, registered through the ``mmal`` entry-point group."""

from .bayesian import BALD, BatchBALD
from .diversity import Badge, CoreSet, KMeansSampling, TypiClust
from .multimodal import (
    BMMAL,
    MissingAwareCoreset,
    ModalityDisagreement,
    ModalityUncertainty,
    StratifiedUncertainty,
    WeakModality,
)
from .uncertainty import Entropy, LeastConfidence, Margin, RandomSampling

__all__ = [
    "Entropy", "LeastConfidence", "Margin", "RandomSampling",
    "BALD", "BatchBALD", "Badge", "CoreSet", "KMeansSampling", "TypiClust",
    "BMMAL", "MissingAwareCoreset", "ModalityDisagreement", "ModalityUncertainty", "StratifiedUncertainty", "WeakModality",
]
