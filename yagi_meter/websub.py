"""The HTTP boundary to WebSub subscribers and to an external hub.

Only this module talks HTTP to them (through ``urllib3``).  Every request
first checks that the callback resolves to allowed addresses only (public
ones, or ``[hub] allowed_callback_networks``), never follows redirects (WebSub
counts a redirect as a failure) and has a timeout.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import urllib3

from yagi_meter import __version__
from yagi_meter.errors import CallbackRefused

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
USER_AGENT = f"yagi-meter/{__version__} (WebSub hub)"
# Read at most this much of a peer's answer: a challenge is short, the rest is ignored.
MAX_REPLY_BYTES = 65536


def check_callback(url: str, allowed_networks: Sequence[Network]) -> None:
    """Raise CallbackRefused unless ``url`` is http(s) and every address of its host is allowed.

    An address is allowed when it is in ``allowed_networks`` or is a global
    unicast address (not loopback, private, link-local, reserved, multicast...).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise CallbackRefused("callback must be an http or https URL")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise CallbackRefused("callback has an invalid port") from None
    if not host:
        raise CallbackRefused("callback has no host")
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as e:
        raise CallbackRefused(f"callback host {host} does not resolve: {e}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if any(address in network for network in allowed_networks):
            continue
        if not address.is_global or address.is_multicast:
            raise CallbackRefused(f"callback host {host} resolves to non-public address {address}")


def with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` appended, keeping its own query string (WebSub 5.1.1)."""
    joiner = "&" if urlsplit(url).query else ("" if url.endswith("?") else "?")
    return url + joiner + urlencode(params)


def _read_some(response: urllib3.BaseHTTPResponse) -> bytes:
    body = b""
    for chunk in response.stream(8192):
        body += chunk
        if len(body) > MAX_REPLY_BYTES:
            break
    return body


@dataclass(frozen=True)
class Reply:
    """What a peer answered: ``status`` None when no HTTP answer came (refused, timeout...)."""

    status: int | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Peers:
    """Requests to subscribers and to an external hub; safe to use from many threads."""

    def __init__(self, allowed_networks: Sequence[Network], timeout: float, connections: int = 32) -> None:
        self.allowed_networks = tuple(allowed_networks)
        # urllib3 rather than requests: thread-safe keep-alive pools, half the
        # work per request, and no proxy from the environment (through a proxy
        # the address check would be moot: the proxy picks the address).
        self._http = urllib3.PoolManager(
            num_pools=256,
            maxsize=connections,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            headers={"User-Agent": USER_AGENT},
        )

    def _request(
        self, method: str, url: str, *, check: bool = True, body: bytes | None = None, headers=None
    ) -> tuple[Reply, bytes]:
        try:
            if check:
                check_callback(url, self.allowed_networks)
            response = self._http.request(
                method, url, body=body, headers=headers, redirect=False, preload_content=False
            )
            try:
                content = _read_some(response)
                if len(content) > MAX_REPLY_BYTES:
                    response.close()  # the rest is unread: this connection cannot be reused
            finally:
                response.release_conn()
        except CallbackRefused as e:
            return Reply(None, str(e)), b""
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return Reply(None, f"{type(e).__name__}: {e}"), b""
        return Reply(response.status, f"HTTP {response.status}"), content

    def verify(
        self, callback: str, mode: str, topic: str, challenge: str, lease_seconds: int | None
    ) -> Reply:
        """Verification of intent (WebSub 5.3): ok only on 2xx with the challenge echoed exactly."""
        params = {"hub.mode": mode, "hub.topic": topic, "hub.challenge": challenge}
        if lease_seconds is not None:
            params["hub.lease_seconds"] = str(lease_seconds)
        reply, body = self._request("GET", with_query(callback, params))
        if reply.ok and body != challenge.encode():
            return Reply(None, f"{reply.detail} without the challenge in the body")
        return reply

    def deny(self, callback: str, topic: str, reason: str) -> Reply:
        """Tell a subscriber its subscription is denied (WebSub 5.2); the answer is ignored."""
        params = {"hub.mode": "denied", "hub.topic": topic, "hub.reason": reason}
        return self._request("GET", with_query(callback, params))[0]

    def deliver(self, callback: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """Content distribution (WebSub 7): POST ``body`` to the callback."""
        return self._request("POST", callback, body=body, headers={**self._http.headers, **headers})[0]

    def ping(self, hub_url: str, topic: str) -> Reply:
        """Tell an external hub that ``topic`` has new content (hub.mode=publish)."""
        form = urlencode({"hub.mode": "publish", "hub.url": topic, "hub.topic": topic}).encode()
        headers = {**self._http.headers, "Content-Type": "application/x-www-form-urlencoded"}
        return self._request("POST", hub_url, check=False, body=form, headers=headers)[0]
