"""The `mmal report` page in headless Chromium: it renders without any script, every plot loads,
and strategy labels ``<script>...`` and ``$x$`` show as text."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("statsmodels")
pytest.importorskip("scikit_posthocs")

from test_browser import CHROMIUM, EVIL, _chromium  # noqa: E402
from test_report import handmade_db  # noqa: E402

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from mmal_core.cli import main

    folder = tmp_path_factory.mktemp("report-page")
    db = handmade_db(folder / "h.db", labels={"A": EVIL, "C": "$x$"})
    with pytest.raises(SystemExit) as info:
        main(["report", "--db", str(db), "-o", str(folder / "report.html")])
    assert info.value.code == 0
    return folder / "report.html"


def test_page_renders_and_labels_are_text(page, tmp_path):
    # the page has no scripts at all, so it reads the same with scripts off (headless Chromium
    # cannot dump or screenshot with scripts disabled: it drives the page through script)
    assert "<script" not in page.read_text() and "<noscript" not in page.read_text()
    result = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "<title>mmal report: handmade</title>" in dom
    assert "<script" not in dom and "&lt;script&gt;document.title=\"pwned\"&lt;/script&gt;" in dom
    assert "<td class=\"s\">$x$</td>" in dom  # literal dollars, no maths typesetting
    for section in ("Findings", "Across cells", "Pairwise penalty matrix", "Severity curves"):
        assert section in dom


def test_every_plot_loads(page, tmp_path):
    n_plots = page.read_text().count('<img class="plot"')
    assert n_plots >= 5
    # a wrapper page (scripts on, file access allowed) counts the report's decoded images
    wrapper = tmp_path / "wrapper.html"
    wrapper.write_text(
        f'<!DOCTYPE html><title>waiting</title><iframe id="f" src="{page.as_uri()}"></iframe><script>'
        'window.addEventListener("load", () => { const imgs = [...document.getElementById("f").contentDocument.images];'
        ' document.title = "loaded " + imgs.filter(i => i.complete && i.naturalWidth > 0).length + " of " + imgs.length;'
        "});</script>")
    result = _chromium(tmp_path, "--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
                       wrapper.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"<title>loaded (\d+) of (\d+)</title>", result.stdout).groups() == (str(n_plots), str(n_plots))


def test_screenshot_shows_the_plots(page, tmp_path):
    shot = tmp_path / "page.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,4000", "--hide-scrollbars", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))[..., :3]
    for rgb in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):  # matplotlib's first two line colours
        close = np.all(np.abs(pixels * 255 - np.array(rgb)) < 24, axis=-1)
        assert close.sum() > 50, f"no plot line of colour {rgb} in the screenshot"
