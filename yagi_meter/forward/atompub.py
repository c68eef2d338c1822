"""The boundary to the AtomPub archive: POST one Atom entry document, say what came of it.

The only module that talks HTTP to the archive.  Each worker thread has its
own ``requests.Session`` (sessions are not thread-safe; each keeps its
connections alive).  Auth headers come from an ``ArchiveAuth``; a 401 makes it
re-authenticate once and the post is sent again.  Network failures and
timeouts become ``ArchiveError``; every HTTP answer becomes a ``Posted``.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from typing import Any

import requests
from lxml import etree

from yagi_meter import __version__
from yagi_meter.config import Config
from yagi_meter.errors import ArchiveError
from yagi_meter.keystone import Credentials, KeystoneClient, KeystoneError

ENTRY_TYPE = "application/atom+xml;type=entry"
ATOM = "{http://www.w3.org/2005/Atom}"
HEADERS = {
    "Content-Type": ENTRY_TYPE,
    "Accept": "application/atom+xml",
    "User-Agent": f"yagi-meter/{__version__}",
}
BODY_LIMIT = 4096  # characters of an answer kept (for dead letters and logs)


@dataclass(frozen=True)
class Posted:
    """The archive's answer: status, Location (if any), an error's body (truncated), Retry-After seconds."""

    status: int
    location: str
    body: str
    retry_after: float | None = None


class ArchiveAuth:
    """No auth: the base of the other modes."""

    name = "none"

    def headers(self) -> dict[str, str]:
        return {}

    def renew(self) -> None:
        """Called after a 401, before the one repeat of the post."""


class BasicAuth(ArchiveAuth):
    name = "basic"

    def __init__(self, username: str, password: str) -> None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}"}

    def headers(self) -> dict[str, str]:
        return self._headers


class KeystoneAuth(ArchiveAuth):
    """A Keystone v3 token in X-Auth-Token, cached by the (thread-safe) KeystoneClient."""

    name = "keystone"

    def __init__(self, client: KeystoneClient) -> None:
        self.client = client
        self._used = threading.local()  # the token this thread last sent

    def headers(self) -> dict[str, str]:
        try:
            token = self.client.token()
        except KeystoneError as e:
            raise ArchiveError(str(e)) from None
        self._used.token = token
        return {"X-Auth-Token": token}

    def renew(self) -> None:
        # Only the token that was refused: threads refused at the same time renew it once.
        self.client.invalidate(getattr(self._used, "token", None))


def auth_from_config(config: Config) -> ArchiveAuth:
    f = config.forward
    if f.auth == "basic":
        return BasicAuth(f.username, f.password)
    if f.auth == "keystone":
        credentials = Credentials(
            f.keystone_url, f.username, f.password, f.project_name, f.user_domain, f.project_domain
        )
        return KeystoneAuth(KeystoneClient(credentials, timeout=f.timeout))
    return ArchiveAuth()


class AtomPubClient:
    """Posts entry documents; safe to share between threads (a Session per thread)."""

    def __init__(self, auth: ArchiveAuth | None = None, timeout: float = 10) -> None:
        self.auth = auth or ArchiveAuth()
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self._settings: dict[str, dict[str, Any]] = {}

    @property
    def session(self) -> requests.Session:
        """This thread's session, made on first use."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # see _environment
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def post(self, url: str, document: bytes) -> Posted:
        """POST ``document`` to the collection ``url``; on 401 re-authenticate once and repeat."""
        posted = self._post(url, document)
        if posted.status == 401:
            self.auth.renew()
            posted = self._post(url, document)
        return posted

    def _post(self, url: str, document: bytes) -> Posted:
        # Prepared by hand: Session.post would merge cookies and settings on every
        # call, a fifth of its CPU time per post; the archive sets no cookies.
        request = requests.PreparedRequest()
        request.prepare(method="POST", url=url, headers={**HEADERS, **self.auth.headers()}, data=document)
        try:
            response = self.session.send(
                request, timeout=self.timeout, allow_redirects=False, **self._environment(url)
            )
        except requests.Timeout:
            raise ArchiveError(f"no answer from {url} within {self.timeout:g}s") from None
        except requests.RequestException as e:
            raise ArchiveError(f"cannot post to {url}: {_reason(e)}") from None
        return Posted(
            response.status_code,
            _location(response),
            _text(response),
            _seconds(response.headers.get("Retry-After")),
        )

    def _environment(self, url: str) -> dict[str, Any]:
        """Proxies and CA bundle from the environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE...)
        for ``url``, looked up once: requests would look again (and read ~/.netrc) on every
        request, a quarter of its CPU time per post."""
        settings = self._settings.get(url)
        if settings is None:
            with requests.Session() as lookup:
                found = lookup.merge_environment_settings(url, {}, None, None, None)
            settings = {key: found[key] for key in ("proxies", "verify", "cert")}
            if not url.lower().startswith("https:"):
                settings["verify"] = True  # no TLS: spare requests a stat() of the CA bundle per post
            self._settings[url] = settings
        return settings

    def close(self) -> None:
        """Close every thread's session (after the worker threads are done)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


def _reason(error: requests.RequestException) -> str:
    # urllib3 wraps the cause several times; keep the innermost "[Errno 111] Connection refused".
    text = str(error)
    start = text.rfind("[Errno")
    return text[start:].rstrip(")'\"") if start >= 0 else text


def _location(response: requests.Response) -> str:
    """Where the archive keeps the entry: its Location, else the stored entry's self link or id."""
    if response.headers.get("Location") or not response.ok or not response.content:
        return response.headers.get("Location", "")
    try:
        entry = etree.fromstring(response.content)
    except etree.XMLSyntaxError:
        return ""
    link = entry.find(f"{ATOM}link[@rel='self']")
    return link.get("href", "") if link is not None else entry.findtext(f"{ATOM}id", "")


def _text(response: requests.Response) -> str:
    """The start of an error answer; a success's body is not needed (and not decoded)."""
    if response.ok:
        return ""
    # Not response.text: without a charset it guesses the encoding, slowly.
    text = response.content[: BODY_LIMIT * 4].decode(response.encoding or "utf-8", errors="replace")
    return text[:BODY_LIMIT]


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:  # an HTTP date: rare from archives, and backoff covers it
        return None
