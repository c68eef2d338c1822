"""The HTTP boundary to WebSub subscribers and to an external hub.

Only this module talks HTTP to them (through ``urllib3``).  Every request to
a subscriber first parses its callback strictly (``parse_callback``: what
``urllib.parse`` and ``urllib3`` could read differently is refused), resolves
its host once, checks every address (public ones, or ``[hub]
allowed_callback_networks``; an IPv6 address that embeds an IPv4 one is judged
by both) and then connects to the checked address itself, keeping the host
name for the Host header and TLS: a name that resolves differently the second
time (DNS rebinding) cannot move the connection.  Redirects are never followed
(WebSub counts a redirect as a failure) and every request has a timeout.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import urllib3
from urllib3.util import parse_url

from yagi_meter import __version__
from yagi_meter.errors import CallbackRefused

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# resolver(host, port) -> the host's addresses as text: socket.getaddrinfo by default.
Resolver = Callable[[str, int], Sequence[str]]
USER_AGENT = f"yagi-meter/{__version__} (WebSub hub)"
# Read at most this much of a peer's answer: a challenge is short, the rest is ignored.
MAX_REPLY_BYTES = 65536
# A DNS name: ASCII labels only (an internationalised name must come IDNA-encoded).
HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?")
# IPv6 prefixes that carry an IPv4 address in their last 32 bits: IPv4-compatible
# (::/96), IPv4-translated (::ffff:0:0:0/96, RFC 2765) and NAT64 (64:ff9b::/96).
# IPv4-mapped (::ffff:0:0/96), 6to4 and Teredo have ipaddress properties.
LAST_32_BITS_IPV4 = tuple(ipaddress.IPv6Network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96"))
# Local-use NAT64 (RFC 8215): the IPv4 address may sit at several places; refused whole.
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def system_resolver(host: str, port: int) -> list[str]:
    """Every address of ``host`` for a TCP connection, as text (getaddrinfo; zone ids dropped)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


@dataclass(frozen=True)
class Callback:
    """A callback URL as it will be requested: ``host`` is a name or a bare IP address."""

    scheme: str
    host: str
    port: int
    target: str  # path and query, as on the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True)
class Pinned:
    """A checked callback and the checked address the request must go to."""

    callback: Callback
    address: str


def parse_callback(url: str) -> Callback:
    """The parts of an http(s) ``url``, or CallbackRefused when it is anything
    ``urllib.parse`` and ``urllib3`` (which connects) might read differently:
    non-ASCII, control characters or spaces, backslashes, user info, an odd
    host, or any disagreement between the two on scheme, host or port."""
    if not url.isascii():
        raise CallbackRefused("callback must be ASCII (IDNA host, percent-encoded path)")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise CallbackRefused("callback must not contain spaces or control characters")
    if "\\" in url:
        raise CallbackRefused("callback must not contain a backslash")
    try:
        ours, theirs = urlsplit(url), parse_url(url)
        port = ours.port
    except ValueError as e:
        raise CallbackRefused(f"callback is not a valid URL: {e}") from None
    scheme = ours.scheme.lower()
    if scheme not in ("http", "https") or theirs.scheme != scheme:
        raise CallbackRefused("callback must be an http or https URL")
    if "@" in ours.netloc or theirs.auth is not None:
        raise CallbackRefused("callback must not contain user info (@)")
    host = (ours.hostname or "").lower()
    if not host:
        raise CallbackRefused("callback has no host")
    if (theirs.host or "").strip("[]").lower() != host or theirs.port != port:
        raise CallbackRefused("callback host or port is ambiguous")
    _check_host(host)
    default = 443 if scheme == "https" else 80
    return Callback(scheme, host, port or default, theirs.request_uri)


def _check_host(host: str) -> None:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)  # a zone id ("%eth0") fails here: refused
        except ValueError:
            raise CallbackRefused("callback has an invalid IPv6 address") from None
    elif len(host) > 253 or not HOST_NAME.fullmatch(host):
        raise CallbackRefused(f"callback host {host!r} is not a valid host name")


def embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if address.version == 4:
        return []
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if any(address in network for network in LAST_32_BITS_IPV4):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def address_allowed(address: Address, allowed_networks: Sequence[Network]) -> bool:
    """True when ``address`` is in ``allowed_networks``, or is global unicast and so
    is every IPv4 address it embeds (``::ffff:127.0.0.1`` is loopback, not public)."""
    if any(address.version == n.version and address in n for n in allowed_networks):
        return True
    if not address.is_global or address.is_multicast or address in LOCAL_NAT64:
        return False
    return all(address_allowed(inner, allowed_networks) for inner in embedded_ipv4(address))


def check_callback(
    url: str, allowed_networks: Sequence[Network], resolver: Resolver = system_resolver
) -> Pinned:
    """Parse ``url`` (``parse_callback``), resolve its host once and check every
    address; the first is the one to connect to.  Raises CallbackRefused."""
    callback = parse_callback(url)
    try:
        texts = list(resolver(callback.host, callback.port))
        addresses = [ipaddress.ip_address(text) for text in texts]
    except (OSError, UnicodeError, ValueError) as e:
        raise CallbackRefused(f"callback host {callback.host} does not resolve: {e}") from None
    if not addresses:
        raise CallbackRefused(f"callback host {callback.host} does not resolve")
    for address in addresses:
        if not address_allowed(address, allowed_networks):
            raise CallbackRefused(f"callback host {callback.host} resolves to non-public address {address}")
    return Pinned(callback, str(addresses[0]))


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

    def __init__(
        self,
        allowed_networks: Sequence[Network],
        timeout: float,
        connections: int = 32,
        resolver: Resolver = system_resolver,
        verify_timeout: float | None = None,
        ca_certs: str | None = None,
    ) -> None:
        self.allowed_networks = tuple(allowed_networks)
        self.resolver = resolver
        # Verification gets its own, usually shorter, timeout: a callback that
        # never answers holds a verification thread this long at most.
        self.verify_timeout = urllib3.Timeout(
            connect=verify_timeout or timeout, read=verify_timeout or timeout
        )
        # urllib3 rather than requests: thread-safe keep-alive pools, half the
        # work per request, and no proxy from the environment (through a proxy
        # the address check would be moot: the proxy picks the address).
        self._http = urllib3.PoolManager(
            num_pools=256,
            maxsize=connections,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            headers={"User-Agent": USER_AGENT},
            ca_certs=ca_certs,  # None: the system's CAs
        )

    def _request(
        self,
        method: str,
        url: str,
        *,
        check: bool = True,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: urllib3.Timeout | None = None,
    ) -> tuple[Reply, bytes]:
        headers = {"User-Agent": USER_AGENT, **(headers or {})}
        try:
            if check:
                response = self._pinned(
                    method, check_callback(url, self.allowed_networks, self.resolver), body, headers, timeout
                )
            else:  # the operator's own external hub: no address check, no pinning
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

    def _pinned(
        self,
        method: str,
        pinned: Pinned,
        body: bytes | None,
        headers: dict[str, str],
        timeout: urllib3.Timeout | None,
    ) -> urllib3.BaseHTTPResponse:
        """Send the request to the checked address; the host name stays in the
        Host header and, for https, in SNI and the certificate check."""
        callback = pinned.callback
        pool = self._http.connection_from_host(
            pinned.address,
            callback.port,
            callback.scheme,
            pool_kwargs={"server_hostname": callback.host, "assert_hostname": callback.host},
        )
        return pool.urlopen(
            method,
            callback.target,
            body=body,
            headers={**headers, "Host": callback.host_header},
            redirect=False,
            retries=False,
            assert_same_host=False,
            preload_content=False,
            timeout=timeout or pool.timeout,
        )

    def verify(
        self, callback: str, mode: str, topic: str, challenge: str, lease_seconds: int | None
    ) -> Reply:
        """Verification of intent (WebSub 5.3): ok only on 2xx with the challenge echoed exactly."""
        params = {"hub.mode": mode, "hub.topic": topic, "hub.challenge": challenge}
        if lease_seconds is not None:
            params["hub.lease_seconds"] = str(lease_seconds)
        reply, body = self._request("GET", with_query(callback, params), timeout=self.verify_timeout)
        if reply.ok and body != challenge.encode():
            return Reply(None, f"{reply.detail} without the challenge in the body")
        return reply

    def deny(self, callback: str, topic: str, reason: str) -> Reply:
        """Tell a subscriber its subscription is denied (WebSub 5.2); the answer is ignored."""
        params = {"hub.mode": "denied", "hub.topic": topic, "hub.reason": reason}
        return self._request("GET", with_query(callback, params), timeout=self.verify_timeout)[0]

    def deliver(self, callback: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """Content distribution (WebSub 7): POST ``body`` to the callback."""
        return self._request("POST", callback, body=body, headers=headers)[0]

    def announce_update(self, hub_url: str, topic: str) -> Reply:
        """Tell an external hub that ``topic`` has new content (hub.mode=publish)."""
        form = urlencode({"hub.mode": "publish", "hub.url": topic, "hub.topic": topic}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return self._request("POST", hub_url, check=False, body=form, headers=headers)[0]
