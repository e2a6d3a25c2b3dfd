"""What makes two submissions "the same" on a leaderboard.

* :func:`label_key`: the form of a strategy label used for uniqueness checks, so that labels
  a reader cannot tell apart (``margin``, ``MARGIN``, ``margіn`` with a Cyrillic ``і``,
  ``ｍａｒｇｉｎ`` in full-width letters) count as one label.
* :func:`result_key`: a fingerprint of a result: benchmark, strategy, its parameters and the
  ids it picked in every round of every seed. Verification replays the strategy and requires
  it to pick exactly these ids, and the metrics are recomputed from them deterministically,
  so two submissions with one key have the same replayed numbers: the first one verified
  owns the row, a later copy (under any label, from any token) is refused.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=4096)
def _prototype(ch: str) -> str:
    """The Latin/common character ``ch`` can be mistaken for (itself when none), from the
    Unicode confusables data that ``confusable_homoglyphs`` ships."""
    if ch.isascii():
        return ch
    try:
        from confusable_homoglyphs import confusables
    except ImportError:  # the server extra installs it; without it only NFKC and case apply
        return ch
    found = confusables.is_confusable(ch, greedy=True)
    for entry in found or ():
        ascii_like = sorted(g["c"] for g in entry["homoglyphs"] if g["c"].isascii())
        if ascii_like:
            return ascii_like[0]
    return ch


def label_key(label: str) -> str:
    """``label`` normalised for comparison: Unicode NFKC, confusable characters replaced by the
    Latin ones they imitate, case folded (then NFKC again, as casefolding may denormalise)."""
    text = unicodedata.normalize("NFKC", label)
    text = "".join(_prototype(ch) for ch in text)
    return unicodedata.normalize("NFKC", text.casefold())


def result_key(doc: dict[str, Any]) -> str:
    """SHA-256 (hex) of what a result is: benchmark hash, strategy name and parameters, and
    the ids picked in every round of every seed (order within a round ignored)."""
    runs = sorted(doc["runs"], key=lambda run: run["seed"])
    picks = [[run["seed"], sorted(run["initial_ids"]), [sorted(r["queried_ids"]) for r in run["rounds"]]]
             for run in runs]
    what = [doc["benchmark"]["hash"], doc["strategy"]["name"], doc["strategy"].get("params", {}), picks]
    return hashlib.sha256(json.dumps(what, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
