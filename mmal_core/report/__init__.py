"""``mmal report``: the statistics and plots of one experiment of a results database.

:func:`build_report` turns the stored runs into one JSON-able dict (every number of the
report); :mod:`.render` turns it into a self-contained HTML page, Markdown with PNG files
beside it, or JSON. The tests and intervals come from :mod:`mmal_core.stats`.
"""

from .build import build_report, load_cells

__all__ = ["build_report", "load_cells"]
