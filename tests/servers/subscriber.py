"""A real WebSub subscriber on 127.0.0.1, for tests: answers verification and records deliveries.

Any path on the server is a callback.  ``GET`` with ``hub.challenge`` echoes
it (unless ``refuse_verification``); ``hub.mode=denied`` is recorded.
``POST`` is recorded with its headers and body and answered with ``status``
after ``delay`` seconds.  ``down()`` closes the port (connections refused),
``up()`` opens it again on the same port.  Leaving the ``with`` block checks
that every delivery (Atom POST) received was valid Atom.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Subscriber:
    """Start with ``with Subscriber() as sub:``; ``sub.url("/cb1")`` is a callback URL."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.refuse_verification = False
        self.reply_body = b""  # what a POST is answered with
        self.verifications: list[dict[str, str]] = []
        self.denials: list[dict[str, str]] = []
        self.posts: list[Received] = []
        self.attempts = 0  # POSTs begun, failed ones included
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/callback") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Subscriber:
        self.up()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.down()
        if exc_type is None:
            self.assert_valid_deliveries()

    def assert_valid_deliveries(self) -> None:
        """Every Atom POST received (a delivery) is valid Atom (tests/atom_rules.py): checked on
        leaving ``with``.  Other POSTs (external hub pings, tests' own) are not Atom."""
        from tests.atom_rules import assert_valid_atom  # not needed when run for benchmarks

        with self._lock:
            posts = list(self.posts)
        for post in posts:
            if post.headers.get("Content-Type", "").startswith("application/atom+xml"):
                assert_valid_atom(post.body)

    def up(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        server.request_queue_size = 1024
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        # Keep-alive connections outlive the listening socket: cut them too.
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def posts_to(self, path: str) -> list[Received]:
        with self._lock:
            return [p for p in self.posts if p.path == path]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.02)
        return condition()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with subscriber._lock:
                    subscriber._connections.add(self.connection)

            def finish(self) -> None:
                with subscriber._lock:
                    subscriber._connections.discard(self.connection)
                super().finish()

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _reply(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                query["path"] = parts.path
                with subscriber._lock:
                    if query.get("hub.mode") == "denied":
                        subscriber.denials.append(query)
                        self._reply(200)
                        return
                    subscriber.verifications.append(query)
                if subscriber.refuse_verification or "hub.challenge" not in query:
                    self._reply(404)
                else:
                    self._reply(200, query["hub.challenge"].encode())

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with subscriber._lock:
                    subscriber.attempts += 1
                if subscriber.delay:
                    time.sleep(subscriber.delay)
                received = Received(urlsplit(self.path).path, dict(self.headers.items()), body, time.time())
                status = subscriber.status
                if 200 <= status < 300:  # a failed POST was not received, as far as the hub knows
                    with subscriber._lock:
                        subscriber.posts.append(received)
                self._reply(status, subscriber.reply_body)

        return Handler
