"""What the HTML pages and plots of mmal share: one page shell and literal plot labels.

Used by the leaderboard (``mmal leaderboard --format html`` and the server's pages) and by
``mmal report``.
"""

from __future__ import annotations

import html

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}
td.s,th.s{text-align:left}
caption{font-weight:bold;text-align:left;padding:0.3em 0}
code{background:#f3f3f3;padding:0 0.2em}
.muted{color:#777}
"""


def html_page(title: str, body: str) -> str:
    """A complete HTML document (``title`` is escaped; ``body`` must already be safe HTML)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def plot_text(text: str) -> str:
    """``text`` as matplotlib shows it literally: ``$`` would start mathtext (and a malformed
    formula fails the whole figure) and a leading ``_`` hides a legend entry."""
    text = str(text).replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text
