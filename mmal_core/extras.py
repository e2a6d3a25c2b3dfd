"""Optional dependencies: each service's heavy packages come with a named extra of mmal.

The core (``pip install mmal``) runs experiments, lists plugins and shows and exports
results. The services need more, installed as extras::

    mmal[report]    mmal report, mmal leaderboard (scipy, matplotlib, statsmodels, scikit-posthocs)
    mmal[diagnose]  mmal diagnose (scipy, scikit-learn)
    mmal[server]    mmal serve and its worker (fastapi, uvicorn, sqlalchemy, ...; psycopg for PostgreSQL)
    mmal[ray]       mmal run --executor ray
    mmal[docker]    mmal docker build / run
    mmal[all]       every one of them

A command whose extra is missing stops before doing anything with one line naming the extra.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from .errors import MmalError

#: extra -> the import names a command of that extra needs (what ``find_spec`` looks for).
EXTRAS: dict[str, tuple[str, ...]] = {
    "report": ("scipy", "matplotlib", "statsmodels", "scikit_posthocs"),
    "diagnose": ("scipy", "sklearn"),
    "server": ("fastapi", "uvicorn", "sqlalchemy", "scipy", "matplotlib"),
    "ray": ("ray",),
    "docker": ("docker",),
}


def missing_modules(modules: Iterable[str]) -> list[str]:
    """The names among ``modules`` that cannot be imported here."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require_extra(extra: str, what: str, modules: Iterable[str] | None = None) -> None:
    """Raise :class:`MmalError` naming ``mmal[extra]`` when a package ``what`` needs is missing.

    modules: the import names to look for; by default every one of the extra's.
    """
    missing = missing_modules(EXTRAS[extra] if modules is None else modules)
    if missing:
        raise MmalError(f"{what} needs mmal[{extra}] (missing: {', '.join(missing)}): pip install 'mmal[{extra}]'")
