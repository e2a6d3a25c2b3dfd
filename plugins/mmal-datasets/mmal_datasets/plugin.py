"""Entry point of the ``mmal-datasets`` distribution (group ``mmal``)."""

from __future__ import annotations

from mmal_core import hookimpl


@hookimpl
def mmal_register_datasets():
    from . import AvDigits, Clipart, CremaD, KineticsSounds, UpmcFood101

    return [AvDigits, Clipart, UpmcFood101, CremaD, KineticsSounds]
