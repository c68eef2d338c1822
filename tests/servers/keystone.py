"""A real Keystone v3 look-alike on 127.0.0.1, for tests: password auth and token checks.

Only what yagi-meter uses: ``POST /v3/auth/tokens`` (password, project scope)
answers 201 with ``X-Subject-Token``; ``GET /v3/auth/tokens`` checks the
``X-Subject-Token`` with a valid ``X-Auth-Token`` (200, or 404 when unknown or
expired).  Tests add users, revoke tokens and read request counts.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class User:
    name: str
    password: str
    project_id: str
    project_name: str
    roles: tuple[str, ...] = ("member",)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class Issued:
    user: User
    expires: float


class FakeKeystone:
    """Start with ``with FakeKeystone() as keystone:``; ``keystone.auth_url`` ends in /v3."""

    def __init__(self, token_lifetime: float = 3600) -> None:
        self.token_lifetime = token_lifetime
        self.users: dict[str, User] = {}
        self.tokens: dict[str, Issued] = {}
        self.issued_count = 0
        self.validated_count = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v3"

    def __enter__(self) -> FakeKeystone:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_user(
        self,
        name: str,
        password: str,
        project_name: str,
        project_id: str | None = None,
        roles: tuple[str, ...] = ("member",),
    ) -> User:
        user = User(name, password, project_id or uuid.uuid4().hex, project_name, roles)
        self.users[name] = user
        return user

    def issue(self, name: str) -> str:
        """A token for a user, as if it had logged in itself."""
        with self._lock:
            token = uuid.uuid4().hex
            self.tokens[token] = Issued(self.users[name], time.time() + self.token_lifetime)
            self.issued_count += 1
            return token

    def revoke(self, token: str) -> None:
        with self._lock:
            self.tokens.pop(token, None)

    def revoke_all(self) -> None:
        with self._lock:
            self.tokens.clear()

    def _valid(self, token: str | None) -> Issued | None:
        issued = self.tokens.get(token or "")
        return issued if issued and issued.expires > time.time() else None

    def _body(self, issued: Issued) -> dict:
        user = issued.user
        expires = datetime.fromtimestamp(issued.expires, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "token": {
                "expires_at": expires,
                "user": {"id": user.id, "name": user.name, "domain": {"id": "default", "name": "Default"}},
                "project": {"id": user.project_id, "name": user.project_name, "domain": {"id": "default"}},
                "roles": [{"id": uuid.uuid5(uuid.NAMESPACE_DNS, r).hex, "name": r} for r in user.roles],
                "methods": ["password"],
            }
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        keystone = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _reply(self, status: int, body: dict | None = None, token: str | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if token:
                    self.send_header("X-Subject-Token", token)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v3/auth/tokens":
                    return self._reply(404, {"error": {"code": 404}})
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    auth = json.loads(self.rfile.read(length))["auth"]
                    password = auth["identity"]["password"]["user"]
                    user = keystone.users.get(password["name"])
                    scope = auth.get("scope", {}).get("project", {}).get("name")
                except (ValueError, KeyError, TypeError):
                    return self._reply(400, {"error": {"code": 400}})
                if user is None or user.password != password.get("password") or scope != user.project_name:
                    return self._reply(401, {"error": {"code": 401, "title": "Unauthorized"}})
                token = keystone.issue(user.name)
                return self._reply(201, keystone._body(keystone.tokens[token]), token=token)

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/v3/auth/tokens":
                    return self._reply(404, {"error": {"code": 404}})
                with keystone._lock:
                    keystone.validated_count += 1
                if keystone._valid(self.headers.get("X-Auth-Token")) is None:
                    return self._reply(401, {"error": {"code": 401}})
                subject = keystone._valid(self.headers.get("X-Subject-Token"))
                if subject is None:
                    return self._reply(404, {"error": {"code": 404, "title": "Not Found"}})
                return self._reply(200, keystone._body(subject))

        return Handler
