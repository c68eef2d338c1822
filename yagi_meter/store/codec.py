"""How an event is laid out as bytes in Redis: derived fields, a newline, the notification.

The first byte says how the rest is held (``z`` zlib, ``j`` plain), so the
``[redis] compress`` setting can change without making old events unreadable.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

# ISA-L's zlib: the same zlib format (stdlib zlib reads it, and it reads
# stdlib's), compressed about 2.5 times faster at the same size.
import msgspec
from isal import isal_zlib

from yagi_meter.notification import Event, parse_timestamp

_ZLIB = b"z"
_PLAIN = b"j"
# Level 1 is several times faster than the default and within a few percent
# of its size on notification JSON (see README, Performance); ISA-L's levels
# 0-3 are its own, and its 1 is smaller than zlib's 1.
_LEVEL = 1


def encode(event: Event, compress: bool) -> bytes:
    """The stored form of an event (without seq and ingest time, which Redis assigns)."""
    text = msgspec.json.encode(event.derived()) + b"\n" + event.notification_json.encode()
    if compress:
        return _ZLIB + isal_zlib.compress(text, _LEVEL)
    return _PLAIN + text


def decode(blob: bytes, seq: int, ingested_ms: int) -> Event:
    """The Event stored as ``blob`` under sequence ``seq``."""
    kind, body = blob[:1], blob[1:]
    if kind == _ZLIB:
        body = isal_zlib.decompress(body)
    elif kind != _PLAIN:
        raise ValueError(f"unknown event encoding {kind!r} at seq {seq}")
    derived_text, _, notification_json = body.decode().partition("\n")
    derived = json.loads(derived_text)
    derived["timestamp"] = parse_timestamp(derived["timestamp"])
    return Event(
        **derived,
        notification_json=notification_json,
        seq=seq,
        ingested_at=datetime.fromtimestamp(ingested_ms / 1000, UTC),
    )
