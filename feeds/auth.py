"""Who is asking: the X-Auth-Token of a request as a tenant or an administrator.

``[auth] mode``: ``none`` lets everyone read everything; ``token`` looks the
token up in ``[auth] tokens``; ``keystone`` validates it against Keystone.
Views ask ``may_read_tenant`` and ``require_admin``; nothing else decides.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass

from werkzeug.exceptions import Forbidden, Unauthorized

from yagi_meter.config import Config

TOKEN_HEADER = "X-Auth-Token"


@dataclass(frozen=True)
class Principal:
    """The caller: an administrator, or one tenant."""

    tenant_id: str | None
    admin: bool

    def may_read_tenant(self, tenant_id: str | None) -> bool:
        return self.admin or (tenant_id is not None and tenant_id == self.tenant_id)


ANYONE = Principal(tenant_id=None, admin=True)

Authenticator = Callable[[str | None], Principal]


def authenticator(config: Config) -> Authenticator:
    """The function turning a request's token (or None) into a Principal, for ``[auth] mode``."""
    mode = config.auth.mode
    if mode == "none":
        return lambda token: ANYONE
    if mode == "token":
        return TokenTable(config.auth.tokens)
    from feeds.keystone_auth import KeystoneAuthenticator

    return KeystoneAuthenticator(config)


class TokenTable:
    """``[auth] tokens``: each token stands for admin or for one tenant."""

    def __init__(self, tokens: tuple[tuple[str, str | None], ...]) -> None:
        self._tokens = tokens

    def __call__(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized(f"missing {TOKEN_HEADER} header")
        found = None
        # Compare every token in constant time: no timing hint which one is close.
        for known, tenant_id in self._tokens:
            if hmac.compare_digest(known.encode(), token.encode()):
                found = Principal(tenant_id=tenant_id, admin=tenant_id is None)
        if found is None:
            raise Unauthorized(f"invalid {TOKEN_HEADER}")
        return found


def require_admin(principal: Principal) -> None:
    if not principal.admin:
        raise Forbidden("this feed is for administrators")


def require_tenant(principal: Principal, tenant_id: str) -> None:
    if not principal.may_read_tenant(tenant_id):
        raise Forbidden("not your tenant")
