"""A real AtomPub archive on 127.0.0.1 that behaves as Atom Hopper does, for tests and benchmarks.

``POST <collection>`` with an Atom entry document stores it under its
``atom:id`` and answers 201 with the stored entry and a ``Location``; a
repeated id in the same collection answers 409.  Tests turn on trouble:
``fail_status`` (every post fails, e.g. 500) or ``fail_next`` (the next n),
``delay`` (slow answers; longer than the client's timeout is a timeout),
``refuse`` (a status for chosen entry ids, e.g. 400) and ``authorize`` (a
check of the request headers; False answers 401).  ``posts`` counts every
POST per entry id, ``created`` every 201, ``max_in_flight`` the most requests
handled at once, ``connections`` the client addresses seen (keep-alive).
With ``validate=True`` (the forwarder's tests), leaving the ``with`` block
checks that every stored entry was valid Atom.

Run alone for benchmarks: ``python -m tests.servers.atomhopper --port 8090``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

from lxml import etree

ATOM_ID = "{http://www.w3.org/2005/Atom}id"
ENTRY_TYPE = "application/atom+xml;type=entry"


class AtomHopper:
    """Start with ``with AtomHopper() as archive:``; ``archive.url(path)`` is a collection URL."""

    def __init__(self, port: int = 0, validate: bool = False) -> None:
        self.validate = validate  # check every stored entry on leaving ``with``
        self.entries: dict[str, dict[str, bytes]] = {}  # collection path -> entry id -> document
        self.posts: Counter[str] = Counter()
        self.created: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.fail_status: int | None = None
        self.fail_next = 0
        self.delay = 0.0
        self.refuse: dict[str, int] = {}
        self.authorize: Callable[[Mapping[str, str]], bool] | None = None
        self.send_location = True
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections: set[tuple[str, int]] = set()  # client addresses: one per kept-alive connection
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str = "/namespace/feed") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> AtomHopper:
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        if exc_type is None and self.validate:
            self.assert_valid_entries()

    def assert_valid_entries(self) -> None:
        """Every entry stored is valid Atom (tests/atom_rules.py): checked on leaving ``with``."""
        from tests.atom_rules import assert_valid_atom  # not needed when run for benchmarks

        with self._lock:
            documents = [body for stored in self.entries.values() for body in stored.values()]
        for document in documents:
            assert_valid_atom(document)

    def ids(self, path: str | None = None) -> set[str]:
        """Entry ids stored in one collection, or in all of them."""
        with self._lock:
            if path is not None:
                return set(self.entries.get(path, {}))
            return {entry_id for stored in self.entries.values() for entry_id in stored}

    def _answer(self, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes, str]:
        """Status, body and Location for one POST (the decisions, apart from the HTTP plumbing)."""
        if self.authorize is not None and not self.authorize(headers):
            return 401, b"<error>Unauthorized</error>", ""
        if headers.get("Content-Type", "").replace(" ", "") != ENTRY_TYPE:
            return 415, b"<error>expected an Atom entry document</error>", ""
        try:
            entry_id = etree.fromstring(body).findtext(ATOM_ID) or ""
        except etree.XMLSyntaxError as e:
            return 400, f"<error>{e}</error>".encode(), ""
        with self._lock:
            self.posts[entry_id] += 1
            if self.fail_next > 0 or self.fail_status:
                self.fail_next = max(0, self.fail_next - 1)
                return self.fail_status or 500, b"<error>Internal Server Error</error>", ""
            if entry_id in self.refuse:
                return self.refuse[entry_id], b"<error>entry refused: bad category</error>", ""
            stored = self.entries.setdefault(path, {})
            if entry_id in stored:
                return 409, b"<error>Conflict: entry already exists</error>", ""
            stored[entry_id] = body
            self.created[entry_id] += 1
        return 201, body, f"{self.url(path)}/entries/{quote(entry_id, safe='')}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        archive = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Atom Hopper behind Tomcat
            # Headers and body go out in two writes; without TCP_NODELAY (Tomcat's default)
            # every answer would wait ~40 ms for the client's delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with archive._lock:
                    archive.connections.add(self.client_address)
                    archive.in_flight += 1
                    archive.max_in_flight = max(archive.max_in_flight, archive.in_flight)
                status = 500
                try:
                    if archive.delay:
                        time.sleep(archive.delay)
                    status, data, location = archive._answer(self.path, self.headers, body)
                finally:
                    with archive._lock:
                        archive.in_flight -= 1
                        archive.statuses[status] += 1
                self.send_response(status)
                self.send_header(
                    "Content-Type", "application/atom+xml" if status == 201 else "application/xml"
                )
                self.send_header("Content-Length", str(len(data)))
                if location and archive.send_location:
                    self.send_header("Location", location)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # the client gave up waiting (a timeout test)
                    self.close_connection = True

        return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # socketserver's 5 resets clients that connect all at once

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients that gave up: expected here
            super().handle_error(request, client_address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0, help="seconds to wait before each answer")
    args = parser.parse_args()
    with AtomHopper(args.port) as archive:
        archive.delay = args.delay
        print(f"listening on {archive.url('')}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
