"""The diagnose service (``mmal diagnose``): the pitfall profile of a dataset and the advice the
shipped study supports for it. The measurements, their sources and their outputs on the real
datasets are described in docs/diagnose.md; the code is in :mod:`.profile`.
Needs the ``diagnose`` extra (scipy, scikit-learn).
"""

from __future__ import annotations

from .profile import (
    ALPHA,
    FORMATS,
    advise,
    decompose,
    diagnose,
    load_study,
    missing_profile,
    profile_vector,
    render,
    sections,
)

__all__ = ["ALPHA", "FORMATS", "advise", "decompose", "diagnose", "load_study", "missing_profile", "profile_vector",
           "render", "sections"]
