"""Slow clients against the production gunicorn configuration (conf/gunicorn.conf.py):
50 connections that trickle a header line and never finish it must not stop
/health from answering within a second."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.conftest import ROOT
from tests.integration.test_feeds_servers import environment, free_port, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLOW_CLIENTS = 50
TRICKLE_SECONDS = 2.0  # a byte of the unfinished header line this often
WATCH_SECONDS = 15.0  # /health is asked throughout, every 0.2 s


def stop(process: subprocess.Popen) -> str:
    """SIGTERM the server's process group (SIGKILL if it lingers); its output."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return process.communicate(timeout=30)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.communicate(timeout=10)[0].decode(errors="replace")


class SlowClients:
    """``count`` connections that send a partial request and then one more byte of
    an unfinished header line every ``TRICKLE_SECONDS``, never ending it.  A
    connection the server drops is replaced at once, so that ``count`` are
    open throughout; ``dropped`` counts them."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.sockets = [self._open() for _ in range(count)]
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _open(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sock.setblocking(False)
        return sock

    def _alive(self, sock: socket.socket) -> bool:
        try:
            return sock.recv(1) != b""  # the server answered: not the slow client we want
        except BlockingIOError:
            return True  # nothing to read: still open, still waiting for our headers
        except OSError:
            return False

    def _trickle(self) -> None:
        while not self._stop.wait(TRICKLE_SECONDS):
            for i, sock in enumerate(self.sockets):
                try:
                    if self._alive(sock):
                        sock.send(b"a")
                        continue
                except OSError:
                    pass
                sock.close()
                self.dropped += 1
                self.sockets[i] = self._open()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.sockets:
            sock.close()


def test_slow_clients_do_not_stop_health_from_answering(key_prefix):
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", "conf/gunicorn.conf.py", "feeds.wsgi:app"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment(key_prefix, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped whole whatever happens
    )
    url = f"http://127.0.0.1:{port}/health"
    slow = None
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
        slow = SlowClients(port, SLOW_CLIENTS)
        times, failures = [], []
        deadline = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                ok = requests.get(url, timeout=1).status_code == 200
            except requests.RequestException as e:
                ok = False
                failures.append(repr(e))
            times.append(time.monotonic() - started)
            if not ok and not failures:
                failures.append("not 200")
            time.sleep(0.2)
        print(
            f"\n/health under {SLOW_CLIENTS} slow clients: {len(times)} requests, "
            f"max {max(times) * 1000:.0f} ms, {len(failures)} failed; "
            f"slow connections dropped by the server and replaced: {slow.dropped}"
        )
        assert not failures, failures[:3]
        assert max(times) < 1.0
    finally:
        if slow is not None:
            slow.close()
        stop(process)
