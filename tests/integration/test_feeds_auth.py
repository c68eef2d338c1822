"""Tenant isolation: every route with every role, in token mode (and none)."""

from __future__ import annotations

import pytest

from tests.feeds_support import SAMPLE_INSTANCE

pytestmark = pytest.mark.integration

ROLES = {
    "anonymous": {},
    "bad": {"X-Auth-Token": "guess"},
    "admin": {"X-Auth-Token": "admin-token"},
    "alpha": {"X-Auth-Token": "alpha-token"},
    "beta": {"X-Auth-Token": "beta-token"},
}


def routes(owned: dict[str, str]) -> dict[str, str]:
    return {
        "global": "/events",
        "type": "/event_types/instance.create.end/events",
        "alpha feed": "/tenants/alpha/events",
        "beta feed": "/tenants/beta/events",
        "alpha resource": f"/tenants/alpha/resources/{SAMPLE_INSTANCE}/events",
        "beta resource": f"/tenants/beta/resources/{SAMPLE_INSTANCE}/events",
        "alpha entry": f"/events/{owned['alpha']}",
        "beta entry": f"/events/{owned['beta']}",
        "health": "/health",
        "metrics": "/metrics",
    }


EXPECTED = {
    # route:           anonymous, bad, admin, alpha, beta
    "global": (401, 401, 200, 403, 403),
    "type": (401, 401, 200, 403, 403),
    "alpha feed": (401, 401, 200, 200, 403),
    "beta feed": (401, 401, 200, 403, 200),
    "alpha resource": (401, 401, 200, 200, 403),
    "beta resource": (401, 401, 200, 403, 200),
    "alpha entry": (401, 401, 200, 200, 404),
    "beta entry": (401, 401, 200, 404, 200),
    "health": (200, 200, 200, 200, 200),
    "metrics": (200, 200, 200, 200, 200),
}


@pytest.mark.parametrize("route", list(EXPECTED))
@pytest.mark.parametrize("role", list(ROLES))
def test_each_route_with_each_role(token_client, owned, route, role):
    url = routes(owned)[route]
    response = token_client.get(url, headers=ROLES[role])
    expected = EXPECTED[route][list(ROLES).index(role)]
    assert response.status_code == expected, (url, role, response.data)
    if expected != 200 and route not in ("health", "metrics"):
        # A refusal carries a one-line reason, never an event.
        assert response.headers["Content-Type"].startswith("text/plain")
        assert b"<" not in response.data and b"payload" not in response.data
        assert response.data.count(b"\n") == 1


def test_refused_tenant_cannot_learn_anything_from_a_conditional_request(token_client, owned):
    beta = token_client.get("/tenants/beta/events", headers=ROLES["beta"])
    again = token_client.get(
        "/tenants/beta/events", headers={**ROLES["alpha"], "If-None-Match": beta.headers["ETag"]}
    )
    assert again.status_code == 403
    entry = token_client.get(f"/events/{owned['beta']}", headers=ROLES["beta"])
    guess = token_client.get(
        f"/events/{owned['beta']}", headers={**ROLES["alpha"], "If-None-Match": entry.headers["ETag"]}
    )
    assert guess.status_code == 404


def test_401_names_the_header(token_client, owned):
    response = token_client.get("/tenants/alpha/events")
    assert response.data == b"missing X-Auth-Token header\n"
    assert "X-Auth-Token" in response.headers["WWW-Authenticate"]


def test_tenant_gets_its_own_feed_before_its_first_event_but_admin_gets_404(token_client, owned):
    assert token_client.get("/tenants/gamma/events", headers=ROLES["admin"]).status_code == 404
    config_tokens = token_client.application.extensions["yagi_meter"].authenticate
    assert config_tokens("alpha-token").tenant_id == "alpha"


def test_feeds_are_private_to_shared_caches_when_auth_is_on(token_client, client, owned):
    response = token_client.get("/tenants/alpha/events", headers=ROLES["alpha"])
    assert response.headers["Cache-Control"] == "private, no-cache"
    assert "X-Auth-Token" in response.headers["Vary"]
    assert client.get("/tenants/alpha/events").headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize("route", [r for r in EXPECTED if r not in ("health", "metrics")])
def test_mode_none_lets_everyone_read_everything(client, owned, route):
    assert client.get(routes(owned)[route]).status_code == 200


def test_own_empty_feed_with_a_marker_is_an_unknown_marker(token_client):
    response = token_client.get("/tenants/beta/events?marker=x&direction=forward", headers=ROLES["beta"])
    assert response.status_code == 400 and b"unknown marker" in response.data
    assert token_client.get("/tenants/beta/events", headers=ROLES["beta"]).status_code == 200
