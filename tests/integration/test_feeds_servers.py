"""The feed app under gunicorn with conf/gunicorn.conf.py, and under `yagi-meter serve`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import ROOT, TEST_REDIS_URL
from tests.feeds_support import tenant_message
from tests.processes import spawn

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(key_prefix: str, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        YAGI_CONFIG=os.devnull,
        YAGI_REDIS_URL=TEST_REDIS_URL,
        YAGI_REDIS_KEY_PREFIX=key_prefix,
        YAGI_FEEDS_PORT=str(port),
        YAGI_FEEDS_WORKERS="2",
    )
    return env


def wait_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited"
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "gunicorn", "-c", "conf/gunicorn.conf.py", "feeds.wsgi:app"],
        [sys.executable, "-m", "yagi_meter", "serve"],
    ],
    ids=["gunicorn", "serve"],
)
def test_server_serves_feeds_and_stops_on_sigterm(key_prefix, ingestor, command):
    message_id, message = tenant_message("alpha", 0)
    ingestor.ingest([message])
    port = free_port()
    process = spawn(
        command, cwd=ROOT, env=environment(key_prefix, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        feed = requests.get(url + "/tenants/alpha/events", timeout=5)
        assert feed.status_code == 200 and message_id in feed.text
        assert requests.get(url + "/events?limit=0", timeout=5).status_code == 400
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    if "gunicorn" in command:
        assert '"GET /tenants/alpha/events HTTP/1.1" 200' in output  # the access log
    else:
        assert "serve" in output and "starting" in output  # the one start-up line
