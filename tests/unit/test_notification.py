"""parse(): every real sample, the three wire forms, timestamps, secrets and bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import as_sent, load_sample, sample_paths
from yagi_meter.errors import BadNotification
from yagi_meter.notification import Event, parse

RECEIVED_AT = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
SENT_AT = datetime(2017, 7, 6, 16, 58, 55, 301284, tzinfo=UTC)
PROJECT = "6f70656e737461636b20342065766572"

# Where each versioned payload class names what it is about, independent of
# the parser's own rules: (resource field, tenant field, user field) in
# nova_object.data.  Instance*Payload classes are all (uuid, tenant_id, user_id).
NOVA_FIELDS: dict[str, tuple[str | None, str | None, str | None]] = {
    "AggregatePayload": ("uuid", None, None),
    "FlavorPayload": ("flavorid", None, None),
    "KeypairPayload": ("name", None, "user_id"),
    "MetricsPayload": ("host", None, None),
    "RequestSpecPayload": ("instance_uuid", "project_id", "user_id"),
    "ServerGroupPayload": ("uuid", "project_id", "user_id"),
    "ServiceStatusPayload": ("uuid", None, None),
    # The conductor's error names the instance; its owner is in the request spec.
    "ComputeTaskPayload": ("instance_uuid", "request_spec.project_id", "request_spec.user_id"),
}
INSTANCE_FIELDS = ("uuid", "tenant_id", "user_id")


def parse_message(message: Any, **kwargs: Any) -> Event:
    return parse(json.dumps(message).encode(), received_at=RECEIVED_AT, **kwargs)


def field(data: dict, path: str | None) -> Any:
    if path is None:
        return None
    value: Any = data
    for part in path.split("."):
        value = value.get(part)
        if isinstance(value, dict) and "nova_object.data" in value:
            value = value["nova_object.data"]
    return value


def walk_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in walk_keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in walk_keys(item)}
    return set()


# -- every real sample -------------------------------------------------------


@pytest.mark.parametrize("path", sample_paths(), ids=lambda p: p.name)
def test_sample_parses_with_its_derived_fields(path: Path) -> None:
    sample = load_sample(path)
    message = as_sent(sample, message_id=f"id-{path.stem}")
    event = parse_message(message)

    payload = sample["payload"]
    data = payload["nova_object.data"]
    name = payload["nova_object.name"]
    resource_field, tenant_field, user_field = (
        INSTANCE_FIELDS if name.startswith("Instance") else NOVA_FIELDS[name]
    )
    assert event.message_id == f"id-{path.stem}"
    assert event.event_type == sample["event_type"]
    assert event.publisher_id == sample["publisher_id"]
    assert event.priority == sample["priority"].upper()
    assert event.service == "nova"
    assert event.timestamp == SENT_AT
    assert event.timestamp_raw == "2017-07-06 16:58:55.301284"
    assert event.resource_id == field(data, resource_field)
    assert event.resource_id
    assert event.tenant_id == field(data, tenant_field)
    assert event.user_id == field(data, user_field)
    assert event.initiator_project_id == data.get("action_initiator_project")
    assert event.initiator_user_id == data.get("action_initiator_user")
    assert event.notification == message


def test_instance_sample_is_owned_by_its_project_and_names_its_initiator() -> None:
    sample = load_sample(
        next(p for p in sample_paths() if p.name == "instance-live_migration_abort-end.json")
    )
    event = parse_message(as_sent(sample))
    assert event.tenant_id == PROJECT
    assert event.resource_id == "178b0921-8f85-4257-88b6-2e743b5a975c"
    assert event.user_id == "fake"
    # An admin acted on the tenant's instance: the owner is indexed, the initiator kept.
    assert (event.initiator_project_id, event.initiator_user_id) == (PROJECT, "admin")


def test_every_kind_of_sample_is_covered_by_the_expectations() -> None:
    names = {load_sample(p)["payload"]["nova_object.name"] for p in sample_paths()}
    assert len(sample_paths()) >= 70
    assert {n for n in names if not n.startswith("Instance")} <= set(NOVA_FIELDS)


# -- wire forms --------------------------------------------------------------

LEGACY = {
    "message_id": "4c4a1a5e-2a3f-4d6b-9a0b-3d2f1e0c9b8a",
    "event_type": "compute.instance.create.end",
    "publisher_id": "compute.host1",
    "priority": "INFO",
    "timestamp": "2017-07-06 16:58:55.301284",
    "_context_project_id": "context-project",
    "_context_user_id": "context-user",
    "payload": {
        "tenant_id": PROJECT,
        "user_id": "owner-user",
        "instance_id": "9f0d8bd6-1f4c-4a7c-8a4b-7b2b2a3f0d11",
        "display_name": "web-1",
    },
}


def test_legacy_body_is_parsed() -> None:
    event = parse_message(LEGACY)
    assert (event.service, event.tenant_id, event.user_id) == ("nova", PROJECT, "owner-user")
    assert event.resource_id == "9f0d8bd6-1f4c-4a7c-8a4b-7b2b2a3f0d11"
    assert (event.initiator_project_id, event.initiator_user_id) == ("context-project", "context-user")
    assert event.notification == LEGACY


def test_oslo_2_envelope_is_unwrapped() -> None:
    envelope = {"oslo.version": "2.0", "oslo.message": json.dumps(LEGACY)}
    event = parse_message(envelope)
    assert event.derived() == parse_message(LEGACY).derived()
    assert event.notification == LEGACY
    assert "oslo.message" not in event.notification_json


def test_oslo_2_envelope_of_a_versioned_sample_is_unwrapped() -> None:
    sample = as_sent(load_sample(sample_paths()[0]), message_id="m-1")
    event = parse_message({"oslo.version": "2.0", "oslo.message": json.dumps(sample)})
    assert event.derived() == parse_message(sample).derived()


def test_envelope_whose_message_is_not_a_string_is_bad() -> None:
    with pytest.raises(BadNotification, match="oslo.message is not a JSON string"):
        parse_message({"oslo.version": "2.0", "oslo.message": LEGACY})


def test_envelope_whose_message_is_not_json_is_bad() -> None:
    with pytest.raises(BadNotification, match="oslo.message is not JSON"):
        parse_message({"oslo.version": "2.0", "oslo.message": "{broken"})


# -- timestamps --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2017-07-06 16:58:55.301284", SENT_AT),
        ("2017-07-06T16:58:55.301284Z", SENT_AT),
        ("2017-07-06T16:58:55.301284+00:00", SENT_AT),
        ("2017-07-06T18:58:55.301284+02:00", SENT_AT),
        ("2017-07-06T16:58:55Z", SENT_AT.replace(microsecond=0)),
    ],
)
def test_timestamp_forms_become_aware_utc_and_keep_the_original(raw: str, expected: datetime) -> None:
    event = parse_message({**LEGACY, "timestamp": raw})
    assert event.timestamp == expected
    assert event.timestamp.utcoffset().total_seconds() == 0
    assert event.timestamp_raw == raw
    assert event.derived()["timestamp"] == "2017-07-06T16:58:55" + expected.strftime(".%fZ")


@pytest.mark.parametrize("raw", ["", "   ", None])
def test_empty_or_missing_timestamp_falls_back_to_received_at(raw: str | None) -> None:
    message = {**LEGACY, "timestamp": raw}
    assert parse_message(message).timestamp == RECEIVED_AT
    del message["timestamp"]
    assert parse_message(message).timestamp == RECEIVED_AT


@pytest.mark.parametrize("raw", ["yesterday", "2017-13-45 99:99:99", "9999-12-31T23:59:59-01:00"])
def test_garbage_timestamp_is_bad(raw: str) -> None:
    with pytest.raises(BadNotification, match="timestamp"):
        parse_message({**LEGACY, "timestamp": raw})


# -- secrets -----------------------------------------------------------------

SECRET_VALUES = ("gAAAA-real-token", "s3cr3t-pw", "token-info-blob", "svc-token", "nested-pw", "deep-token")


def secret_message() -> dict:
    return {
        **LEGACY,
        "_context_auth_token": "gAAAA-real-token",
        "_context_auth_token_info": {"token": {"expires_at": "token-info-blob"}},
        "_context_service_auth_token": "svc-token",
        "payload": {
            **LEGACY["payload"],
            "admin_password": "s3cr3t-pw",
            "block_devices": [
                {"connection_info": {"data": {"auth_password": "nested-pw", "auth_token": "deep-token"}}}
            ],
        },
    }


def assert_no_secrets(event: Event) -> None:
    keys = walk_keys(event.notification)
    assert not {k for k in keys if k.lower().endswith(("auth_token", "auth_token_info", "password"))}
    for value in SECRET_VALUES:
        assert value not in event.notification_json


def test_secrets_are_stripped_at_any_depth() -> None:
    event = parse_message(secret_message())
    assert_no_secrets(event)
    # Everything else is kept.
    assert event.notification["payload"]["display_name"] == "web-1"
    assert event.notification["payload"]["block_devices"] == [{"connection_info": {"data": {}}}]
    assert event.notification["_context_user_id"] == "context-user"


def test_secrets_are_stripped_inside_the_oslo_envelope() -> None:
    event = parse_message({"oslo.version": "2.0", "oslo.message": json.dumps(secret_message())})
    assert_no_secrets(event)


def test_secret_keys_are_stripped_whatever_their_case() -> None:
    # Values without "token"/"password" in them, so only the keys give the secrets away.
    message = {**LEGACY, "_context_AUTH_TOKEN": "gAAAAB-abc", "payload": {"Admin_Password": "hunter2"}}
    event = parse_message(message)
    assert "gAAAAB-abc" not in event.notification_json
    assert "hunter2" not in event.notification_json
    assert_no_secrets(event)


# -- bad input ---------------------------------------------------------------


def body_of(message: Any) -> bytes:
    return json.dumps(message).encode()


def without(key: str) -> dict:
    return {k: v for k, v in LEGACY.items() if k != key}


BAD_BODIES = {
    "not_json": (b"this is not json", "body is not JSON"),
    "truncated_json": (b'{"message_id": "x", "event_type"', "body is not JSON"),
    "not_utf8": (b'{"message_id": "\xff\xfe", "event_type": "a.b"}', "not UTF-8"),
    "json_array": (b'[{"message_id": "x"}]', "body is not a JSON object"),
    "json_string": (b'"compute.instance.create.end"', "body is not a JSON object"),
    "missing_message_id": (body_of(without("message_id")), "missing message_id"),
    "blank_message_id": (body_of({**LEGACY, "message_id": "  "}), "missing message_id"),
    "missing_event_type": (body_of(without("event_type")), "missing event_type"),
    "message_id_not_a_string": (body_of({**LEGACY, "message_id": {"a": 1}}), "message_id is not a string"),
    "message_id_control_char": (
        body_of({**LEGACY, "message_id": "abc\x01def"}),
        "message_id has characters XML cannot carry",
    ),
    "event_type_control_char": (
        body_of({**LEGACY, "event_type": "compute.instance\x0b.create.end"}),
        "event_type has characters XML cannot carry",
    ),
    "tenant_control_char": (
        body_of({**LEGACY, "payload": {**LEGACY["payload"], "tenant_id": "proj\x1b[31m"}}),
        "tenant_id has characters XML cannot carry",
    ),
    "resource_control_char": (
        body_of({**LEGACY, "payload": {**LEGACY["payload"], "instance_id": "i\x00d"}}),
        "resource_id has characters XML cannot carry",
    ),
    "message_id_too_long": (body_of({**LEGACY, "message_id": "x" * 300}), "message_id longer than 255"),
}


@pytest.mark.parametrize(("body", "reason"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_input_is_rejected_with_a_clear_reason(body: bytes, reason: str) -> None:
    with pytest.raises(BadNotification) as caught:
        parse(body, received_at=RECEIVED_AT)
    assert reason in str(caught.value)


def test_body_above_max_body_bytes_is_rejected_before_parsing() -> None:
    body = body_of({**LEGACY, "payload": {"blob": "x" * 5000}})
    with pytest.raises(BadNotification, match=rf"body too large: {len(body)} bytes > max_body_bytes 4096"):
        parse(body, received_at=RECEIVED_AT, max_body_bytes=4096)
    assert parse(body, received_at=RECEIVED_AT, max_body_bytes=len(body)).message_id == LEGACY["message_id"]


def test_control_character_deep_in_the_payload_is_kept_as_escaped_ascii() -> None:
    sample = as_sent(load_sample(sample_paths()[-1]))
    message = json.loads(json.dumps(sample))
    message["payload"]["nova_object.data"]["display_name"] = "a\x01b\ufffe\u00e9\U0001f600"
    message["payload"]["nova_object.data"]["host"] = "compute\x0c1"
    event = parse_message(message)
    assert event.notification_json.isascii()
    assert "\x01" not in event.notification_json
    assert event.notification == message
    assert event.notification["payload"]["nova_object.data"]["display_name"] == "a\x01b\ufffe\u00e9\U0001f600"


def test_notification_json_is_canonical_so_reformatting_keeps_the_digest() -> None:
    compact = json.dumps(LEGACY, separators=(",", ":")).encode()
    pretty = json.dumps(dict(reversed(list(LEGACY.items()))), indent=2).encode()
    first = parse(compact, received_at=RECEIVED_AT)
    second = parse(pretty, received_at=RECEIVED_AT)
    assert first.notification_json == second.notification_json
    assert first.digest == second.digest
    assert parse_message({**LEGACY, "payload": {"tenant_id": "other"}}).digest != first.digest


def test_missing_priority_defaults_to_info_and_is_upper_cased() -> None:
    assert parse_message(without("priority")).priority == "INFO"
    assert parse_message({**LEGACY, "priority": "warn"}).priority == "WARN"
