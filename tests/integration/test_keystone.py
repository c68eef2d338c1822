import time

import pytest

from tests.servers.keystone import FakeKeystone
from yagi_meter.keystone import Credentials, KeystoneClient, KeystoneError

pytestmark = pytest.mark.integration


@pytest.fixture
def keystone():
    with FakeKeystone() as server:
        server.add_user("yagi", "secret", "service", roles=("admin",))
        server.add_user("alice", "pw", "tenant-a", project_id="tenant-a-id")
        yield server


def client_for(keystone, **kwargs):
    return KeystoneClient(Credentials(keystone.auth_url, "yagi", "secret", "service"), **kwargs)


def test_token_is_obtained_once_and_cached(keystone):
    client = client_for(keystone)
    assert client.token() == client.token()
    assert keystone.issued_count == 1


def test_invalidated_token_is_renewed(keystone):
    client = client_for(keystone)
    first = client.token()
    client.invalidate(first)
    assert client.token() != first
    assert keystone.issued_count == 2


def test_token_close_to_expiry_is_renewed(keystone):
    keystone.token_lifetime = 30  # below RENEW_BEFORE_SECONDS: every call renews
    client = client_for(keystone)
    client.token()
    client.token()
    assert keystone.issued_count == 2


def test_wrong_password_raises(keystone):
    client = KeystoneClient(Credentials(keystone.auth_url, "yagi", "wrong", "service"))
    with pytest.raises(KeystoneError, match="HTTP 401"):
        client.token()


def test_validate_returns_project_and_roles_and_caches(keystone):
    client = client_for(keystone, validate_cache_seconds=60)
    user_token = keystone.issue("alice")
    info = client.validate(user_token)
    assert info.project_id == "tenant-a-id"
    assert info.roles == frozenset({"member"})
    assert client.validate(user_token) == info
    assert keystone.validated_count == 1


def test_validate_unknown_or_revoked_token_is_none(keystone):
    client = client_for(keystone, validate_cache_seconds=0)
    user_token = keystone.issue("alice")
    assert client.validate(user_token) is not None
    keystone.revoke(user_token)
    time.sleep(0.01)
    assert client.validate(user_token) is None
    assert client.validate("no-such-token") is None


def test_validate_survives_our_own_token_being_revoked(keystone):
    client = client_for(keystone, validate_cache_seconds=0)
    client.token()
    keystone.revoke_all()
    user_token = keystone.issue("alice")
    assert client.validate(user_token).project_id == "tenant-a-id"
    assert keystone.issued_count == 3  # ours, alice's, ours again


def test_unreachable_keystone_raises():
    client = KeystoneClient(Credentials("http://127.0.0.1:9/v3", "u", "p", "x"), timeout=1)
    with pytest.raises(KeystoneError, match="unreachable"):
        client.token()
