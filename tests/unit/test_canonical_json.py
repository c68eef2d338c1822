"""The stored notification text: sorted, compact, ASCII, exact, whichever JSON reader read it."""

import json
from datetime import UTC, datetime

import pytest

from yagi_meter.errors import BadNotification
from yagi_meter.notification import canonical_json, parse

RECEIVED_AT = datetime(2026, 1, 1, tzinfo=UTC)
HEAD = (
    '{"message_id": "5f0c1f7e-1d2b-4c3d-8e9f-0a1b2c3d4e5f", "event_type": "compute.instance.update", '
    '"publisher_id": "compute.host1", "timestamp": "2017-07-06 16:58:55.301284", "payload": '
)


def stored(payload_text: str) -> str:
    return parse((HEAD + payload_text + "}").encode(), received_at=RECEIVED_AT).notification_json


@pytest.mark.parametrize(
    "payload_text",
    [
        '{"tenant_id": "t", "n": 123456789012345678901234567890, "m": -9223372036854775809}',
        '{"tenant_id": "t", "x": 1.5e-7, "y": 1e16, "z": -0.0, "w": 0.1}',
        '{"tenant_id": "t", "name": "caf\\u00e9 \\ud83d\\ude00 \\u0001"}',
        '{"tenant_id": "t", "name": "caf\u00e9"}',
        '{"tenant_id": "t", "lone": "\\ud800", "pair": "\\ud83d\\ude00"}',
    ],
    ids=["big-integers", "floats", "escaped-non-ascii", "raw-utf8", "non-strict-json"],
)
def test_stored_text_is_ascii_and_reads_back_to_the_same_values(payload_text: str) -> None:
    text = stored(payload_text)
    assert text.isascii()
    sent = json.loads(HEAD + payload_text + "}")
    back = json.loads(text)
    assert json.dumps(back, sort_keys=True) == json.dumps(sent, sort_keys=True)  # NaN-safe equality


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("NaN", "NaN is not a JSON number"),
        ("-Infinity", "-Infinity is not a JSON number"),
        ("1e400", "number out of range: 1e400"),
        ("-1e400", "number out of range: -1e400"),
    ],
)
def test_nan_infinity_and_numbers_out_of_range_are_refused_with_the_reason(value: str, reason: str) -> None:
    # Stored, they would be served as invalid JSON (json.dumps writes NaN).
    with pytest.raises(BadNotification, match=reason):
        stored('{"tenant_id": "t", "x": ' + value + "}")


def test_key_order_and_spacing_do_not_change_the_text() -> None:
    assert stored('{"b": 1, "a": {"d": [1, 2], "c": null}}') == stored('{"a":{"c":null,"d":[1,2]},"b":1}')


def test_canonical_json_sorts_keys_at_every_depth() -> None:
    assert canonical_json({"b": 1, "a": {"d": 2, "c": [{"f": 1, "e": 2}]}}) == (
        '{"a":{"c":[{"e":2,"f":1}],"d":2},"b":1}'
    )
