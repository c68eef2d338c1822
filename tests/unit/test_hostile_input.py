"""One hostile message fails alone, with its reason: identifying fields, numbers, query strings."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest

from feeds.paging import parse_request
from yagi_meter.errors import BadNotification
from yagi_meter.notification import parse

RECEIVED_AT = datetime(2026, 1, 1, tzinfo=UTC)


def message(payload: str, priority: str = '"INFO"') -> bytes:
    return (
        '{"message_id": "m-1", "event_type": "compute.instance.update", "publisher_id": "nova-compute:h1", '
        f'"priority": {priority}, "timestamp": "2017-07-06 16:58:55.301284", "payload": {payload}}}'
    ).encode()


def versioned(data: str) -> str:
    return (
        '{"nova_object.name": "InstanceActionPayload", "nova_object.namespace": "nova", '
        f'"nova_object.version": "1.8", "nova_object.data": {data}}}'
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (message('{"tenant_id": "t"}', priority='"\\ud800"'), "priority has characters XML cannot carry"),
        (
            message(versioned('{"uuid": "i-1", "tenant_id": "t", "action_initiator_project": "\\ud800"}')),
            "initiator_project_id has characters XML cannot carry",
        ),
        (
            message(versioned('{"uuid": "i-1", "tenant_id": "t", "action_initiator_user": "x\\udfff"}')),
            "initiator_user_id has characters XML cannot carry",
        ),
        (message('{"tenant_id": 1e400}'), "number out of range: 1e400"),
        (message('{"tenant_id": 1.5}'), "an id is a fractional number: 1.5"),
        (message('{"tenant_id": "t", "user_id": 2.0}'), "an id is a fractional number: 2.0"),
        (message('{"tenant_id": "t", "size": NaN}'), "NaN is not a JSON number"),
    ],
    ids=["priority", "initiator-project", "initiator-user", "tenant-1e400", "tenant-1.5", "user-2.0", "nan"],
)
def test_a_field_that_cannot_be_stored_or_rendered_refuses_the_message(body: bytes, reason: str) -> None:
    with pytest.raises(BadNotification, match=reason):
        parse(body, received_at=RECEIVED_AT)


def test_a_whole_number_id_is_its_decimal_text() -> None:
    event = parse(message('{"tenant_id": 12345678901234567890}'), received_at=RECEIVED_AT)
    assert event.tenant_id == "12345678901234567890"


def test_a_lone_surrogate_elsewhere_in_the_payload_is_kept_as_an_escape() -> None:
    event = parse(message('{"tenant_id": "t", "display_name": "\\ud800"}'), received_at=RECEIVED_AT)
    assert json.loads(event.notification_json)["payload"]["display_name"] == "\ud800"
    assert event.notification_json.isascii()


@pytest.mark.parametrize("limit", ["²", "١٢", "𝟗", "+5", " 5", "5 ", "-1", "0x10", "1_0", "٣"])
def test_limit_takes_ascii_digits_only(limit: str) -> None:
    with pytest.raises(BadRequest):
        parse_request(MultiDict({"limit": limit}), 25, 500, 10_000)


def test_limit_of_ascii_digits_is_read() -> None:
    assert parse_request(MultiDict({"limit": "007"}), 25, 500, 10_000).query.limit == 7
