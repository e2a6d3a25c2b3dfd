"""The leaderboard page in a real (headless Chromium) browser: the ranked table and the
learning-curve plot are there, and a strategy named ``<script>...`` shows as text."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from mmal_core.plugins import PluginManager, reset_plugin_manager  # noqa: E402
from mmal_core.leaderboard.server import create_app  # noqa: E402
from mmal_core.leaderboard.server.storage import ServerStore  # noqa: E402
from serverkit import ServerProcess, plugin_env, tiny_results  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
)

EVIL = '<script>document.title="pwned"</script>'


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server whose database holds a verified submission by a strategy named EVIL."""
    results = tiny_results(tmp_path_factory.getbasetemp() / "mmal-tiny-results")
    folder = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{folder / 'server.db'}"
    store = ServerStore(url)
    token = store.create_token("mallory")
    store.close()
    evil = copy.deepcopy(results["docs"]["margin"])
    evil["strategy"]["label"] = EVIL
    sys.path.insert(0, str(results["site"]))
    previous = reset_plugin_manager(PluginManager())
    try:
        # verify in this process (the replays are shared with the other test files), then serve
        with TestClient(create_app(url, rate_limit=0)) as client:
            ids = [client.post("/api/submissions", json=doc, headers={"Authorization": f"Bearer {token}"}).json()["id"]
                   for doc in (evil, results["docs"]["random"])]
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                states = [client.get(f"/api/submissions/{i}", headers={"Authorization": f"Bearer {token}"})
                          .json()["status"] for i in ids]
                if all(s == "verified" for s in states):
                    break
                assert "rejected" not in states
                time.sleep(0.2)
    finally:
        reset_plugin_manager(previous)
        sys.path.remove(str(results["site"]))
        sys.modules.pop("mmal_test_benchmarks", None)
    with ServerProcess(url, env=plugin_env(results["site"]), log_path=folder / "serve.log") as proc:
        yield proc


def test_page_shows_table_plot_and_script_names_as_text(server, tmp_path):
    result = _chromium(tmp_path, "--dump-dom", f"{server.url}/")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert '<table class="leaderboard">' in dom
    assert dom.count('<td class="s strategy">') == 2
    assert '<img class="learning-curve"' in dom and 'src="data:image/png;base64,' in dom
    # the name is text inside the table cell, not an element: no script element anywhere
    assert "<script" not in dom
    assert "&lt;script&gt;document.title=\"pwned\"&lt;/script&gt;" in dom
    assert "<title>mmal leaderboard</title>" in dom  # the injected code did not run


def test_screenshot_shows_the_plot(server, tmp_path):
    shot = tmp_path / "page.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1400", "--hide-scrollbars",
                       f"{server.url}/")
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    pixels = imread(str(shot))[..., :3]
    # matplotlib's first two line colours (#1f77b4 blue, #ff7f0e orange) only appear if the plot rendered
    for rgb in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
        close = np.all(np.abs(pixels * 255 - np.array(rgb)) < 24, axis=-1)
        assert close.sum() > 50, f"no plot line of colour {rgb} in the screenshot"


def test_submission_page_escapes_the_name(server, tmp_path):
    result = _chromium(tmp_path, "--dump-dom", f"{server.url}/submissions/1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "<script" not in result.stdout and "&lt;script&gt;" in result.stdout
    assert "verified" in result.stdout
