"""The version of mmal (one place; the package and the pyproject agree, checked by the tests)."""

__version__ = "0.1.0"
