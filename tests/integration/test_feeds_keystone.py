"""auth.mode = keystone against a real (fake) Keystone on 127.0.0.1: each route with each role."""

from __future__ import annotations

import pytest

from feeds.app import create_app
from tests.conftest import TEST_REDIS_URL, make_config
from tests.integration.test_feeds_auth import EXPECTED, routes
from tests.servers.keystone import FakeKeystone
from yagi_meter.errors import ConfigError

pytestmark = pytest.mark.integration


@pytest.fixture
def keystone():
    with FakeKeystone() as server:
        server.add_user("yagi", "service-secret", "service", roles=("service",))
        server.add_user("root", "pw", "admin-project", roles=("admin", "member"))
        server.add_user("alice", "pw", "alpha-project", project_id="alpha")
        server.add_user("bob", "pw", "beta-project", project_id="beta")
        yield server


def keystone_config(key_prefix: str, auth_url: str, **extra: str):
    return make_config(
        redis_url=TEST_REDIS_URL,
        redis_key_prefix=key_prefix,
        auth_mode="keystone",
        auth_keystone_url=auth_url,
        auth_keystone_user="yagi",
        auth_keystone_password="service-secret",
        **extra,
    )


@pytest.fixture
def keystone_client(key_prefix, keystone, store):
    return create_app(keystone_config(key_prefix, keystone.auth_url), store).test_client()


def headers(keystone, role: str) -> dict[str, str]:
    users = {"admin": "root", "alpha": "alice", "beta": "bob"}
    if role == "anonymous":
        return {}
    if role == "bad":
        return {"X-Auth-Token": "not-a-token"}
    return {"X-Auth-Token": keystone.issue(users[role])}


@pytest.mark.parametrize("route", list(EXPECTED))
@pytest.mark.parametrize("role", ["anonymous", "bad", "admin", "alpha", "beta"])
def test_each_route_with_each_keystone_role(keystone_client, keystone, owned, route, role):
    response = keystone_client.get(routes(owned)[route], headers=headers(keystone, role))
    expected = EXPECTED[route][["anonymous", "bad", "admin", "alpha", "beta"].index(role)]
    assert response.status_code == expected, (route, role, response.data)


def test_validations_are_cached(keystone_client, keystone, owned):
    token = headers(keystone, "alpha")
    for _ in range(5):
        assert keystone_client.get("/tenants/alpha/events", headers=token).status_code == 200
    assert keystone.validated_count == 1


def test_revoked_token_is_refused_once_the_cache_lets_go(key_prefix, keystone, store, owned):
    client = create_app(
        keystone_config(key_prefix, keystone.auth_url, auth_cache_seconds="0"), store
    ).test_client()
    token = headers(keystone, "alpha")
    assert client.get("/tenants/alpha/events", headers=token).status_code == 200
    keystone.revoke(token["X-Auth-Token"])
    assert client.get("/tenants/alpha/events", headers=token).status_code == 401


def test_keystone_down_is_503_not_500(key_prefix, store, owned):
    with FakeKeystone() as gone:
        url = gone.auth_url
    client = create_app(keystone_config(key_prefix, url, auth_keystone_timeout="0.5"), store).test_client()
    response = client.get("/tenants/alpha/events", headers={"X-Auth-Token": "anything"})
    assert response.status_code == 503 and response.data == b"Keystone unavailable, try again\n"


def test_keystone_mode_needs_its_url_and_credentials():
    with pytest.raises(ConfigError, match=r"\[auth\] keystone_url"):
        make_config(auth_mode="keystone")


def test_service_password_is_masked_in_the_start_line(key_prefix, keystone):
    assert "service-secret" not in keystone_config(key_prefix, keystone.auth_url).describe()
