"""``python -m mmal_core`` is the same as the ``mmal`` command."""

from .cli import main

main()
