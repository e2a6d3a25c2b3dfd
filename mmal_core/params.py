"""Small helpers for plugin parameters (scikit-learn style: stored unchanged in ``__init__``)."""

from __future__ import annotations

import inspect
import math
from typing import Any

from .errors import MmalError, PluginError


def get_params(obj: Any) -> dict[str, Any]:
    """Return the ``__init__`` keyword parameters of ``obj`` as stored on the instance."""
    sig = inspect.signature(type(obj).__init__)
    out: dict[str, Any] = {}
    for p in list(sig.parameters.values())[1:]:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if hasattr(obj, p.name):
            out[p.name] = getattr(obj, p.name)
    return out


def construct(cls: type, params: dict[str, Any], what: str) -> Any:
    """Instantiate a plugin class with ``params``; unknown parameters get a one-line error."""
    if cls.__init__ is object.__init__:  # a class without parameters
        accepted, takes_any = [], False
    else:
        sig = inspect.signature(cls.__init__)
        accepted = [p.name for p in list(sig.parameters.values())[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        takes_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    if not takes_any:
        for key in params:
            if key not in accepted:
                from .errors import did_you_mean

                raise MmalError(
                    f"{what}: unknown parameter '{key}'{did_you_mean(key, accepted)}; "
                    f"accepted: {', '.join(accepted) or 'none'}"
                )
    try:  # parameters that do not fit the signature (a required one left out) are the user's
        inspect.signature(cls).bind(**params)
    except TypeError as err:
        raise MmalError(f"{what}: {err}") from None
    try:
        obj = cls(**params)
    except MmalError as err:
        raise MmalError(f"{what}: {err}") from None
    except Exception as err:  # the plugin's own bug, not a bad parameter
        raise PluginError(f"plugin error in {what} ({_origin(cls)}): {type(err).__name__}: {err}") from err
    # get_params() records what a run used: a parameter __init__ did not store would be lost.
    for name in accepted:
        if not hasattr(obj, name):
            raise MmalError(
                f"{what}: {cls.__name__}.__init__ does not store its parameter '{name}' "
                f"(set self.{name} = {name}), so get_params() cannot record it"
            )
    return obj


def _origin(cls: type) -> str:
    """``package <distribution>`` that ships ``cls`` (or its module when no distribution does)."""
    from importlib.metadata import packages_distributions

    top = cls.__module__.split(".")[0]
    dists = packages_distributions().get(top)
    return f"package {dists[0]}" if dists else f"module {cls.__module__}"


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Validate an integer parameter and return it."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__") and not isinstance(value, float)
    ):
        raise MmalError(f"parameter '{name}': expected an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise MmalError(f"parameter '{name}': expected an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise MmalError(f"parameter '{name}': expected an integer <= {maximum}, got {value}")
    return value


def check_float(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    open_min: bool = False,
) -> float:
    """Validate a finite real parameter and return it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MmalError(f"parameter '{name}': expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise MmalError(f"parameter '{name}': expected a finite number, got {value}")
    if minimum is not None and (value < minimum or (open_min and value == minimum)):
        op = ">" if open_min else ">="
        raise MmalError(f"parameter '{name}': expected a number {op} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise MmalError(f"parameter '{name}': expected a number <= {maximum}, got {value}")
    return value


def check_choice(name: str, value: Any, choices: list[str] | tuple[str, ...]) -> str:
    """Validate a string parameter against a fixed set of choices."""
    if value not in choices:
        from .errors import did_you_mean

        hint = did_you_mean(str(value), choices)
        raise MmalError(f"parameter '{name}': expected one of {', '.join(choices)}, got {value!r}{hint}")
    return value
