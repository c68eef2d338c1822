"""Events compressed with ISA-L are plain zlib: old events stay readable, any zlib reads new ones."""

import json
import zlib
from datetime import UTC, datetime

from yagi_meter.notification import parse
from yagi_meter.store import codec

RECEIVED_AT = datetime(2026, 1, 1, tzinfo=UTC)
MESSAGE = {
    "message_id": "0b6a4f7e-2c1d-4e8f-9a0b-1c2d3e4f5a6b",
    "event_type": "compute.instance.update",
    "publisher_id": "compute.host1",
    "timestamp": "2017-07-06 16:58:55.301284",
    "payload": {"tenant_id": "t1", "instance_id": "i1", "state_description": "x" * 500},
}


def test_stdlib_zlib_reads_what_the_codec_writes() -> None:
    event = parse(json.dumps(MESSAGE).encode(), received_at=RECEIVED_AT)
    blob = codec.encode(event, compress=True)
    assert blob[:1] == b"z"
    derived, _, notification = zlib.decompress(blob[1:]).decode().partition("\n")
    assert notification == event.notification_json
    assert json.loads(derived)["message_id"] == MESSAGE["message_id"]


def test_an_event_compressed_by_stdlib_zlib_still_decodes() -> None:
    event = parse(json.dumps(MESSAGE).encode(), received_at=RECEIVED_AT)
    plain = codec.encode(event, compress=False)
    old_blob = b"z" + zlib.compress(plain[1:], 6)
    decoded = codec.decode(old_blob, seq=7, ingested_ms=1_700_000_000_000)
    assert decoded.notification_json == event.notification_json
    assert decoded.seq == 7
