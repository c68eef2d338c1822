"""The stored form of an event: round trip, compression, and reading old plain events."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from tests.conftest import as_sent, load_sample, sample_paths
from yagi_meter.errors import UndecodableEvent
from yagi_meter.notification import Event, parse
from yagi_meter.store import codec
from yagi_meter.store.audit import VERDICT_PUBLISHER
from yagi_meter.store.events import EventStore
from yagi_meter.store.keys import Keys

INGESTED_MS = 1_700_000_000_123


def sample_event(index: int = 0) -> Event:
    message = as_sent(load_sample(sample_paths()[index]), message_id=f"m-{index}")
    return parse(json.dumps(message).encode(), received_at=datetime.now(UTC))


def stored(event: Event, seq: int) -> Event:
    ingested_at = datetime.fromtimestamp(INGESTED_MS / 1000, UTC)
    return dataclasses.replace(event, seq=seq, ingested_at=ingested_at)


@pytest.mark.parametrize("compress", [True, False], ids=["zlib", "plain"])
def test_round_trip_gives_back_the_same_event(compress: bool) -> None:
    for index in (0, 11, len(sample_paths()) - 1):
        event = sample_event(index)
        decoded = codec.decode(codec.encode(event, compress), 42, INGESTED_MS)
        assert decoded == stored(event, 42)
        assert decoded.timestamp.tzinfo is not None
        assert decoded.notification == event.notification


def test_round_trip_keeps_control_characters_and_non_ascii_text() -> None:
    message = as_sent(load_sample(sample_paths()[0]))
    message["payload"]["nova_object.data"]["name"] = "agg\x01\n\u00e9\U0001f600"
    event = parse(json.dumps(message).encode(), received_at=datetime.now(UTC))
    for compress in (True, False):
        decoded = codec.decode(codec.encode(event, compress), 1, INGESTED_MS)
        assert decoded.notification["payload"]["nova_object.data"]["name"] == "agg\x01\n\u00e9\U0001f600"


def test_compressed_form_is_smaller_than_the_plain_one() -> None:
    event = sample_event(11)
    plain, packed = codec.encode(event, False), codec.encode(event, True)
    assert plain[:1] == b"j" and packed[:1] == b"z"
    assert len(packed) < len(plain) * 0.75
    print(f"plain {len(plain)} bytes, zlib {len(packed)} bytes")


def test_plain_events_stay_readable_after_compress_is_switched_on() -> None:
    # Bytes as an earlier run with [redis] compress = false wrote them; decoding
    # needs no setting: the first byte says how the rest is held.
    old = [codec.encode(sample_event(i), compress=False) for i in range(3)]
    new = [codec.encode(sample_event(i), compress=True) for i in range(3, 6)]
    decoded = [codec.decode(blob, seq, INGESTED_MS) for seq, blob in enumerate(old + new, 1)]
    assert [e.message_id for e in decoded] == [f"m-{i}" for i in range(6)]
    assert [e.seq for e in decoded] == [1, 2, 3, 4, 5, 6]


def test_unknown_encoding_is_an_error_naming_the_seq() -> None:
    with pytest.raises(UndecodableEvent, match="seq 7 cannot be decoded: unknown event encoding b'x'"):
        codec.decode(b"x{}", 7, INGESTED_MS)


def test_decode_indexed_gives_the_index_keys_decode_gives() -> None:
    """Retention computes an event's index keys from decode_indexed; ingest from the
    whole event: for every sample, a billed one and a verdict, they are the same."""
    keys = Keys("yagi:")
    events = [sample_event(i) for i in range(len(sample_paths()))]
    events.append(dataclasses.replace(events[0], billed_tenant_id="billed-project"))
    events.append(
        dataclasses.replace(events[0], publisher_id=VERDICT_PUBLISHER, event_type="x.exists.verified")
    )
    events.append(dataclasses.replace(events[0], tenant_id=None, resource_id=None))
    for compress in (True, False):
        for seq, event in enumerate(events, 1):
            blob = codec.encode(event, compress)
            indexed = codec.decode_indexed(blob, seq)
            assert EventStore.keys_of(indexed, keys) == EventStore.keys_of(codec.decode(blob, seq, 0), keys)
    assert keys.audit_verdicts in EventStore.keys_of(
        codec.decode_indexed(codec.encode(events[-2], True), 1), keys
    )


@pytest.mark.parametrize("blob", [b"x{}", b'j{"event_type": 3}\n{}', b"jnot json\n{}", b"z\x00\x01"])
def test_decode_indexed_of_a_damaged_body_is_an_error_naming_the_seq(blob: bytes) -> None:
    with pytest.raises(UndecodableEvent, match="seq 9 cannot be decoded"):
        codec.decode_indexed(blob, 9)
