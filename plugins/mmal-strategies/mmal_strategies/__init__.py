"""Query strategies shipped with mmal, registered through the ``mmal`` entry-point group."""

from .uncertainty import Entropy, LeastConfidence, Margin, RandomSampling

__all__ = ["Entropy", "LeastConfidence", "Margin", "RandomSampling"]
