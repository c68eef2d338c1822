"""The boundary to Keystone v3: get a token with a password, and validate others' tokens.

Used by the forwarder (a token to post to the archive) and by the feeds
(``[auth] mode = keystone``: who is asking).  Tokens are cached until shortly
before they expire; validations are cached for a short, configured time.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from yagi_meter.errors import YagiError

log = logging.getLogger(__name__)

RENEW_BEFORE_SECONDS = 60


class KeystoneError(YagiError):
    """Keystone could not be reached or refused the credentials."""


@dataclass(frozen=True)
class TokenInfo:
    """What Keystone says of a valid token."""

    user_id: str
    project_id: str | None
    roles: frozenset[str]
    expires_at: datetime


@dataclass(frozen=True)
class Credentials:
    """Password credentials scoped to a project."""

    auth_url: str  # e.g. http://keystone:5000/v3
    username: str
    password: str
    project_name: str
    user_domain: str = "Default"
    project_domain: str = "Default"


class KeystoneClient:
    """Thread-safe: several worker threads share one client and its cached token."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        timeout: float = 10,
        validate_cache_seconds: float = 60,
        session: requests.Session | None = None,
    ) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self.validate_cache_seconds = validate_cache_seconds
        self.session = session or requests.Session()
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0
        self._validated: dict[str, tuple[float, TokenInfo | None]] = {}

    @property
    def _tokens_url(self) -> str:
        return self.credentials.auth_url.rstrip("/") + "/auth/tokens"

    def token(self) -> str:
        """A valid token of our own, obtained or renewed when needed."""
        with self._lock:
            if self._token is None or time.time() >= self._token_expires - RENEW_BEFORE_SECONDS:
                self._token, self._token_expires = self._authenticate()
            return self._token

    def invalidate(self, token: str | None = None) -> None:
        """Forget our token (after a 401), so the next ``token()`` gets a new one."""
        with self._lock:
            if token is None or token == self._token:
                self._token = None

    def _authenticate(self) -> tuple[str, float]:
        c = self.credentials
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": c.username,
                            "domain": {"name": c.user_domain},
                            "password": c.password,
                        }
                    },
                },
                "scope": {"project": {"name": c.project_name, "domain": {"name": c.project_domain}}},
            }
        }
        try:
            response = self.session.post(self._tokens_url, json=body, timeout=self.timeout)
        except requests.RequestException as e:
            raise KeystoneError(f"Keystone at {c.auth_url} unreachable: {e}") from None
        if response.status_code != 201 or "X-Subject-Token" not in response.headers:
            raise KeystoneError(
                f"Keystone refused {c.username}@{c.project_name}: "
                f"HTTP {response.status_code} {response.text[:200]}"
            )
        info = _token_info(response.json())
        log.info("obtained a Keystone token for %s, expires %s", c.username, info.expires_at.isoformat())
        return response.headers["X-Subject-Token"], info.expires_at.timestamp()

    def validate(self, subject_token: str) -> TokenInfo | None:
        """The token's user, project and roles, or None when Keystone says it is not valid."""
        now = time.time()
        cached = self._validated.get(subject_token)
        if cached and cached[0] > now:
            return cached[1]
        info = self._validate(subject_token, retry=True)
        expires = now + self.validate_cache_seconds
        if info is not None:
            expires = min(expires, info.expires_at.timestamp())
        with self._lock:
            if len(self._validated) > 10_000:  # bounded: drop everything, it refills
                self._validated.clear()
            self._validated[subject_token] = (expires, info)
        return info

    def _validate(self, subject_token: str, retry: bool) -> TokenInfo | None:
        own = self.token()
        try:
            response = self.session.get(
                self._tokens_url,
                timeout=self.timeout,
                headers={"X-Auth-Token": own, "X-Subject-Token": subject_token},
            )
        except requests.RequestException as e:
            raise KeystoneError(f"Keystone unreachable: {e}") from None
        if response.status_code == 200:
            return _token_info(response.json())
        if response.status_code == 401 and retry:  # our own token was revoked
            self.invalidate(own)
            return self._validate(subject_token, retry=False)
        if response.status_code in (401, 403, 404):
            return None
        raise KeystoneError(f"Keystone token check failed: HTTP {response.status_code}")


def _token_info(body: dict[str, Any]) -> TokenInfo:
    try:
        token = body["token"]
        expires = datetime.fromisoformat(token["expires_at"])
        return TokenInfo(
            user_id=token["user"]["id"],
            project_id=(token.get("project") or {}).get("id"),
            roles=frozenset(role["name"] for role in token.get("roles", [])),
            expires_at=expires if expires.tzinfo else expires.replace(tzinfo=UTC),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise KeystoneError(f"unexpected Keystone token body: {e!r}") from None
