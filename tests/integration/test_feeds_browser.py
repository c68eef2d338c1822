"""A person opening a feed in a browser sees a readable page: headless Chromium renders it.

Skips when no chromium is installed (``apt-get install chromium``).
``scripts/feed-screenshot`` makes the README's screenshot the same way.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import ROOT
from tests.feeds_support import tenant_message
from tests.integration.test_feeds_servers import environment, free_port, wait_healthy
from tests.processes import spawn

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium with a fresh profile and nothing talking to the network but the page."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            timeout=90,
        )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_shows_a_feed_as_a_readable_page(key_prefix, ingestor, tmp_path):
    for number in range(8):
        ingestor.ingest([tenant_message("alpha", number)[1]])
    port = free_port()
    server = spawn(
        [sys.executable, "-m", "yagi_meter", "serve"],
        cwd=ROOT,
        env=environment(key_prefix, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/tenants/alpha/events?limit=5"
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        dom = chromium("--dump-dom", url)
        shot = tmp_path / "feed.png"
        chromium("--window-size=1280,900", f"--screenshot={shot}", url)
    finally:
        server.terminate()
        server.wait(timeout=30)
    html = dom.stdout.decode()
    assert "<table>" in html, dom.stderr.decode()[-2000:]
    assert "events of tenant alpha" in html
    assert html.count('class="type"') == 5
    assert "Older →" in html and "Oldest" in html
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
