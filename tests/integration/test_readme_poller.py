"""The README's feedparser poller, run as printed against a live `yagi-meter serve`."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.integration.test_feeds_servers import environment, free_port, wait_healthy
from yagi_meter.ingest.ingestor import Ingestor, Message

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIXTURES = ROOT / "tests" / "fixtures" / "notifications"
TENANT = "b1a0f1d4e2c34e5c9a8b7c6d5e4f3a21"  # the tenant of most bundled samples


def readme_poller() -> str:
    """The Python block under "3. Poll a feed" in README.md."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index("**3. Poll a feed") :]
    return re.search(r"```python\n(.*?)```", after, re.DOTALL).group(1)


def wait_for_lines(process: subprocess.Popen, count: int, timeout: float) -> list[str]:
    """Up to ``count`` lines of the process's output, waiting at most ``timeout`` seconds in all."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([process.stdout], [], [], remaining)[0]:
            break
        line = process.stdout.readline()  # the poller prints whole lines, unbuffered
        if not line:
            break
        lines.append(line.decode().rstrip("\n"))
    return lines


def test_the_readme_poller_reads_every_tenant_event_once_in_order_then_new_ones(
    key_prefix, ingestor: Ingestor, tmp_path
) -> None:
    files = sorted(FIXTURES.glob("*.json"))
    ingestor.ingest([Message(path.read_bytes(), f"file:{path}") for path in files])
    mine = [json.loads(path.read_text()) for path in files]
    mine = [m for m in mine if TENANT in json.dumps(m)]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "yagi_meter", "serve"],
        cwd=ROOT,
        env=environment(key_prefix, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    script = tmp_path / "poll.py"
    script.write_text(readme_poller().replace("http://127.0.0.1:8080", f"http://127.0.0.1:{port}"))
    poller = None
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        # Unbuffered on our side too, so select() sees every line not yet read.
        poller = subprocess.Popen([sys.executable, "-u", str(script)], stdout=subprocess.PIPE, bufsize=0)
        first = wait_for_lines(poller, 10, 30)
        assert len(first) == 10, first
        stored_order = [m["message_id"] for m in mine]
        assert [line.split()[-1] for line in first] == [f"urn:uuid:{i}" for i in stored_order][: len(first)]
        # The poller read each notification from the Base64 content, as feedparser decoded it.
        assert [line.split()[2] for line in first] == [m["publisher_id"] for m in mine][: len(first)]

        time.sleep(1)  # the poller reaches the empty page and waits, then asks with its ETag
        new = dict(mine[0], message_id="6f1c1f3e-2d7a-4c55-9a53-0b9c3a1e2f40")
        ingestor.ingest([Message(json.dumps(new).encode(), "test")])
        [line] = wait_for_lines(poller, 1, 30)
        assert line.endswith("urn:uuid:6f1c1f3e-2d7a-4c55-9a53-0b9c3a1e2f40")
    finally:
        for process in (poller, server):
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
        if poller is not None:
            poller.stdout.close()
