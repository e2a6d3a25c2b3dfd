"""Shared helpers: optional imports with an exact install command, and the device to use."""

from __future__ import annotations

import importlib
from types import ModuleType

from mmal_core import MmalError


def require(module: str, encoder: str, pip: str) -> ModuleType:
    """Import ``module`` or raise a one-line :class:`MmalError` with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MmalError(
            f"encoder '{encoder}' needs the Python package '{module.split('.')[0]}' ({err.__class__.__name__}: {err}); "
            f"install it with: {pip}"
        ) from None


def device():
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
