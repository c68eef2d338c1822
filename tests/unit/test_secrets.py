"""Credentials never reach the store, on the fast path (top-level token) and the full walk."""

import json
from datetime import UTC, datetime

import pytest

from yagi_meter.notification import parse

RECEIVED_AT = datetime(2026, 1, 1, tzinfo=UTC)
BASE = {
    "message_id": "8a2d5c9e-0f0e-4f57-9b8e-1c2d3e4f5a6b",
    "event_type": "compute.instance.create.end",
    "publisher_id": "compute.host1",
    "priority": "INFO",
    "timestamp": "2017-07-06 16:58:55.301284",
    "payload": {"tenant_id": "t1", "instance_id": "i1", "display_name": "vm"},
}


def stored(message: dict, envelope: bool = False) -> str:
    body = json.dumps(message)
    if envelope:
        body = json.dumps({"oslo.version": "2.0", "oslo.message": body})
    return parse(body.encode(), received_at=RECEIVED_AT).notification_json


@pytest.mark.parametrize("envelope", [False, True])
def test_top_level_context_token_is_dropped_and_the_rest_kept(envelope: bool) -> None:
    message = {**BASE, "_context_auth_token": "gAAAA-top", "_context_user_id": "u1"}
    kept = json.loads(stored(message, envelope))
    assert "_context_auth_token" not in kept
    assert kept == {k: v for k, v in message.items() if k != "_context_auth_token"}


@pytest.mark.parametrize(
    "extra",
    [
        {"payload": {**BASE["payload"], "connection_info": {"auth_password": "nested-secret"}}},
        {"payload": {**BASE["payload"], "volumes": [{"Service_Token": "nested-secret"}]}},
        {"payload": {**BASE["payload"], "note": "the old secret", "admin_password": "nested-secret"}},
    ],
    ids=["nested", "in-a-list-any-case", "beside-a-value-that-ends-like-a-key"],
)
def test_nested_secrets_are_found_beside_a_top_level_token(extra: dict) -> None:
    text = stored({**BASE, "_context_auth_token": "gAAAA-top", **extra})
    assert "gAAAA-top" not in text
    assert "nested-secret" not in text


def test_a_key_spelled_with_unicode_escapes_is_still_stripped() -> None:
    body = json.dumps({**BASE, "payload": {"x": 1}}).replace('"x"', '"admin_passwor\\u0064"')
    assert "passwor\\u0064" in body
    assert json.loads(parse(body.encode(), received_at=RECEIVED_AT).notification_json)["payload"] == {}


def test_a_value_that_ends_like_a_secret_key_is_kept() -> None:
    text = stored({**BASE, "payload": {**BASE["payload"], "display_name": "my password"}})
    assert "my password" in text


def test_a_repeated_top_level_token_key_is_stripped() -> None:
    body = json.dumps({**BASE, "_context_auth_token": "first"})[:-1] + ', "_context_auth_token": "second"}'
    text = parse(body.encode(), received_at=RECEIVED_AT).notification_json
    assert "first" not in text
    assert "second" not in text


def test_a_value_naming_a_top_level_secret_key_does_not_hide_a_nested_secret() -> None:
    message = {
        **BASE,
        "_context_auth_token": "gAAAA-top",
        "payload": {"field": "_context_auth_token", "auth_token": "nested-secret"},
    }
    text = stored(message)
    assert "gAAAA-top" not in text
    assert "nested-secret" not in text
    assert json.loads(text)["payload"]["field"] == "_context_auth_token"


def test_secrets_in_raw_utf8_text_are_stripped() -> None:
    body = json.dumps(
        {**BASE, "_context_auth_token": "top-secret-\u0130", "payload": {"Password": "p"}}, ensure_ascii=False
    )
    text = parse(body.encode(), received_at=RECEIVED_AT).notification_json
    assert "top-secret" not in text
    assert '"p"' not in text
