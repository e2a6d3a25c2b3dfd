"""Entry point of the ``mmal-encoders`` distribution (group ``mmal``)."""

from __future__ import annotations

from mmal_core import hookimpl


@hookimpl
def mmal_register_encoders():
    from . import EfficientNetLite0Encoder, IdentityEncoder, MfccStatsEncoder, MiniLMEncoder, TextHashEncoder

    return [IdentityEncoder, MfccStatsEncoder, EfficientNetLite0Encoder, MiniLMEncoder, TextHashEncoder]
