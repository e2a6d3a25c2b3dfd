"""The models that ship with mmal_core, registered through the same hook a third party uses."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def mmal_register_models():
    from .model import FusionMLP

    return [FusionMLP]
