"""``[auth] mode = keystone``: X-Auth-Token validated against Keystone v3.

The feed server logs in with its own service credentials and asks Keystone
about each caller's token (``GET /v3/auth/tokens``), through the shared
client in yagi_meter.keystone, which caches answers for ``[auth]
cache_seconds`` (never past the token's expiry).  The token's project is the
tenant it may read; a role in ``[auth] admin_roles`` makes it an admin.
"""

from __future__ import annotations

import logging

from werkzeug.exceptions import ServiceUnavailable, Unauthorized

from feeds.auth import TOKEN_HEADER, Principal
from yagi_meter.config import Config
from yagi_meter.keystone import Credentials, KeystoneClient, KeystoneError

log = logging.getLogger(__name__)


class KeystoneAuthenticator:
    """Callable: token -> Principal; 401 for an invalid token, 503 when Keystone is down."""

    def __init__(self, config: Config, client: KeystoneClient | None = None) -> None:
        auth = config.auth
        self.admin_roles = frozenset(auth.admin_roles)
        self.client = client or KeystoneClient(
            Credentials(
                auth_url=auth.keystone_url,
                username=auth.keystone_user,
                password=auth.keystone_password,
                project_name=auth.keystone_project,
                user_domain=auth.keystone_user_domain,
                project_domain=auth.keystone_project_domain,
            ),
            timeout=auth.keystone_timeout,
            validate_cache_seconds=auth.cache_seconds,
        )

    def __call__(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized(f"missing {TOKEN_HEADER} header")
        try:
            info = self.client.validate(token)
        except KeystoneError as e:
            log.error("cannot validate a token: %s", e)
            raise ServiceUnavailable("Keystone unavailable, try again") from None
        if info is None:
            raise Unauthorized(f"invalid or expired {TOKEN_HEADER}")
        admin = bool(self.admin_roles & info.roles)
        if not admin and not info.project_id:
            raise Unauthorized("token is not scoped to a project")
        return Principal(tenant_id=info.project_id, admin=admin)
