"""Synthetic multimodal datasets for mmal.

Three generators, registered with mmal through the ``mmal`` entry point
(:mod:`mmal_synthetic.plugin`):

* ``synthetic-difficulty`` (:class:`SyntheticDifficulty`): every modality carries the label,
  but some are harder (lower signal-to-noise, nonlinear feature map);
* ``synthetic-interaction`` (:class:`SyntheticInteraction`): redundant, unique or
  synergistic information across modalities, or a per-sample mixture of the three;
* ``synthetic-missing`` (:class:`SyntheticMissing`): informative modalities with missing
  entries, completely at random or depending on the class.

They reproduce, in a controlled way, the pitfalls studied in "Mind the Gap: A Framework for
Assessing Pitfalls in Multimodal Active Learning" (arXiv:2603.29677).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .difficulty import SyntheticDifficulty
from .interaction import SyntheticInteraction, sample_types
from .missing import SyntheticMissing

__all__ = ["SyntheticDifficulty", "SyntheticInteraction", "SyntheticMissing", "sample_types", "__version__"]
