"""mmal entry point of the ``mmal-synthetic`` distribution."""

from __future__ import annotations

from mmal_core import hookimpl

from . import SyntheticDifficulty, SyntheticInteraction, SyntheticMissing


@hookimpl
def mmal_register_datasets():
    return [SyntheticMissing, SyntheticDifficulty, SyntheticInteraction]
