"""SSRF through the hub, against real servers on 127.0.0.1: a callback that smuggles
a loopback address past the check, and DNS rebinding between check and connect."""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from flask import Flask

from feeds.hub import init_hub
from tests.conftest import TEST_REDIS_URL, make_config
from tests.hub_helpers import subscribe, tenant_topic, wait_until
from tests.servers.subscriber import Subscriber
from yagi_meter.store import open_store
from yagi_meter.websub.callbacks import Peers
from yagi_meter.websub.push import PushWorker

pytestmark = pytest.mark.integration


@pytest.fixture
def subscriber():
    with Subscriber() as server:
        yield server


def smuggling_callbacks(port: int) -> list[str]:
    """Callbacks that point at 127.0.0.1:port in a form a naive check takes for another
    address.  Only the first was ever connected to by the old code (at 127.0.0.1);
    the others are refused before any connection, so no traffic leaves loopback."""
    return [
        f"http://127.0.0.1:{port}\\@8.8.8.8/x",
        f"http://[::127.0.0.1]:{port}/x",
        f"http://[64:ff9b::7f00:1]:{port}/x",
        f"http://[2002:7f00:1::]:{port}/x",
        f"http://[::ffff:0:127.0.0.1]:{port}/x",
    ]


@pytest.mark.parametrize("networks", ["", "10.0.0.0/8"], ids=["default", "10/8"])
def test_smuggled_loopback_callbacks_are_refused_and_never_reached(key_prefix, subscriber, networks):
    config = make_config(
        redis_url=TEST_REDIS_URL,
        redis_key_prefix=key_prefix,
        hub_allowed_callback_networks=networks,
        hub_poll_interval_ms="10",
    )
    store = open_store(config)
    app = Flask(__name__)
    init_hub(app, config, store)
    worker = PushWorker(config, store)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        for callback in smuggling_callbacks(subscriber.port):
            response = subscribe(app.test_client(), callback, tenant_topic())
            assert response.status_code == 400, (callback, response.text)
            assert "hub.callback" in response.text
            # The push worker's own requests refuse them too (the check at delivery).
            assert not worker.peers.verify(callback, "subscribe", tenant_topic(), "c", 300).ok
            assert not worker.peers.deliver(callback, b"<feed/>", {}).ok
        # Give a worker that had accepted an intent time to verify it.
        assert not wait_until(lambda: subscriber.verifications or subscriber.attempts, timeout=1)
    finally:
        worker.stop()
        thread.join(10)


class Sentinel:
    """An HTTP server on 127.0.0.2 that only counts the requests it gets."""

    def __init__(self, port: int) -> None:
        sentinel = self
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                sentinel.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_dns_rebinding_cannot_move_the_connection_after_the_check(subscriber):
    """The name resolves to 127.0.0.1 (allowed) for the check, then to 127.0.0.2
    (standing for a forbidden address): the request must go to 127.0.0.1."""
    sentinel = Sentinel(subscriber.port)
    answers = [["127.0.0.1"], ["127.0.0.2"], ["127.0.0.2"]]
    asked = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    try:
        peers = Peers([ipaddress.ip_network("127.0.0.1/32")], 2, resolver=rebinding)
        callback = f"http://rebind.test:{subscriber.port}/cb"
        assert peers.verify(callback, "subscribe", tenant_topic(), "challenge-1", 300).ok
        assert asked == ["rebind.test"], "resolved once, for the check and the connection"
        [verification] = subscriber.verifications
        assert verification["hub.challenge"] == "challenge-1"
        assert sentinel.hits == 0
        # The next request resolves anew: 127.0.0.2 is not allowed, nothing is sent.
        assert not peers.deliver(callback, b"<feed/>", {}).ok
        assert sentinel.hits == 0 and subscriber.attempts == 0
    finally:
        sentinel.close()


def test_the_host_header_keeps_the_callback_name(subscriber):
    peers = Peers([ipaddress.ip_network("127.0.0.0/8")], 2, resolver=lambda host, port: ["127.0.0.1"])
    assert peers.deliver(f"http://Hooks.Test:{subscriber.port}/cb?x=1", b"<feed/>", {}).ok
    seen = [p.headers.get("Host") for p in subscriber.posts]
    assert seen == [f"hooks.test:{subscriber.port}"]


def self_signed(directory, name: str) -> tuple[str, str]:
    """A certificate for ``name`` and its key, made with the openssl command."""
    cert, key = str(directory / f"{name}.pem"), str(directory / f"{name}.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}"]
        + ["-addext", f"subjectAltName=DNS:{name}", "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
    )
    return cert, key


class TlsServer:
    """An HTTPS server on 127.0.0.1 that records the SNI names it is asked for."""

    def __init__(self, cert: str, key: str) -> None:
        self.server_names: list[str | None] = []
        self.requests: list[str] = []
        tls = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                tls.requests.append(self.headers["Host"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_to_the_pinned_address_keeps_the_name_for_sni_and_the_certificate(tmp_path):
    cert, key = self_signed(tmp_path, "hooks.test")
    server = TlsServer(cert, key)
    loopback = [ipaddress.ip_network("127.0.0.0/8")]
    try:
        peers = Peers(loopback, 2, resolver=lambda host, port: ["127.0.0.1"], ca_certs=cert)
        assert peers.deliver(f"https://hooks.test:{server.port}/cb", b"<feed/>", {}).ok
        assert server.server_names == ["hooks.test"]
        assert server.requests == [f"hooks.test:{server.port}"]
    finally:
        server.close()
    # A trusted certificate for another name is refused, though the address is checked.
    other_cert, other_key = self_signed(tmp_path, "other.test")
    other = TlsServer(other_cert, other_key)
    try:
        peers = Peers(loopback, 2, resolver=lambda host, port: ["127.0.0.1"], ca_certs=other_cert)
        reply = peers.deliver(f"https://hooks.test:{other.port}/cb", b"<feed/>", {})
        assert not reply.ok and "hooks.test" in reply.detail, reply.detail
        assert other.server_names == ["hooks.test"] and other.requests == []
    finally:
        other.close()
