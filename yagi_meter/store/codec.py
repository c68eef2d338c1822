"""How an event is laid out as bytes in Redis: derived fields, a newline, the notification.

The first byte says how the rest is held, so the ``[redis] compress`` setting
and the dictionary in use can change without making old events unreadable:

- ``j``: the text as it is;
- ``z``: zlib (ISA-L level 0);
- ``d``: zstd with a dictionary: ``d``, the dictionary's id as an unsigned
  LEB128 varint (1 byte below 128, 2 below 16,384), then a zstd frame written
  with the content size, without checksum, without dictionary id and without
  its 4-byte magic number (the tag byte says what follows; it is put back
  before decompressing).  The dictionaries are kept in Redis
  (store/dictionaries.py), immutable, one per id.

Decompressing a ``d`` body is one bounded call: the frame declares its size,
and a frame declaring more than the caller's limit is refused, not allocated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import msgspec
import zstandard

# ISA-L's zlib: the same zlib format (stdlib zlib reads it, and it reads
# stdlib's), compressed about 2.5 times faster at the same size.
from isal import isal_zlib

from yagi_meter.errors import UndecodableEvent
from yagi_meter.notification import Event, parse_timestamp

# isal has no type information: its error class, as one the checker knows.
_ZLIB_ERROR: type[Exception] = isal_zlib.error

_ZLIB = b"z"
_PLAIN = b"j"
_DICT = b"d"
# ISA-L's level 0: half the CPU of its level 1 for bodies about 25% larger
# (measured on the real samples: 1,604 against 1,279 bytes), which keeps the
# listener at the ingest rate it must reach (README, Performance).  Its
# levels are its own; any zlib reads what any level writes.
_LEVEL = 0
# zstd with a dictionary: level 3 and 64 KB dictionaries (docs/capacity-baseline.md:
# level 3 is 4-6% smaller than level 1 and compresses no slower than ISA-L level 0).
ZSTD_LEVEL = 3
DICTIONARY_BYTES = 64 * 1024
_MAGIC = zstandard.FRAME_HEADER  # b"\x28\xb5\x2f\xfd", every frame's first 4 bytes
# Largest text a ``d`` body may declare when the caller gives no limit.
MAX_TEXT_BYTES = 64 * 1024 * 1024


class Dictionary:
    """One stored zstd dictionary, ready to compress and decompress with.

    Built once per dictionary and reused.  python-zstandard's compressors and
    decompressors may not be used by two threads at once, so each call takes
    one from a pool (list pop/append: atomic under the GIL, and nothing in
    between yields to another greenlet) and puts it back; the pool grows to the
    number of calls that ever ran at the same time.  The digested dictionary
    (zstd's CDict/DDict) is read-only once built, shared by all of them, and
    built here, before any other thread can see this object.
    """

    def __init__(self, dict_id: int, data: bytes) -> None:
        if dict_id < 1:
            raise ValueError(f"dictionary id must be positive, not {dict_id}")
        self.id = dict_id
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.tag = _DICT + varint(dict_id)
        self._compressors: list[zstandard.ZstdCompressor] = []
        self._decompressors: list[zstandard.ZstdDecompressor] = []
        try:
            self._zdict = zstandard.ZstdCompressionDict(data)
            self._zdict.precompute_compress(level=ZSTD_LEVEL)
            # Build the decompression side now too (it is made on first use otherwise).
            works = self.decompress(self.compress(b"{}")[len(self.tag) :], 2) == b"{}"
        except zstandard.ZstdError as e:
            raise ValueError(f"zstd cannot use dictionary {dict_id}: {e}") from None
        if not works:
            raise ValueError(f"dictionary {dict_id} does not round-trip")

    def compress(self, text: bytes) -> bytes:
        """The stored body of ``text``: tag, id, frame without magic."""
        try:
            compressor = self._compressors.pop()
        except IndexError:
            compressor = zstandard.ZstdCompressor(
                level=ZSTD_LEVEL,
                dict_data=self._zdict,
                write_checksum=False,
                write_content_size=True,
                write_dict_id=False,
            )
        try:
            frame = compressor.compress(text)
        finally:
            self._compressors.append(compressor)
        return self.tag + frame[len(_MAGIC) :]

    def decompress(self, frame: bytes, limit: int) -> bytes:
        """The text of a frame (without its magic) written with this dictionary."""
        frame = _MAGIC + frame
        size = zstandard.frame_content_size(frame)
        if size < 0:
            raise ValueError("the zstd frame does not declare its size")
        if size > limit:
            raise ValueError(f"the zstd frame declares {size} bytes, more than the limit {limit}")
        try:
            decompressor = self._decompressors.pop()
        except IndexError:
            decompressor = zstandard.ZstdDecompressor(dict_data=self._zdict)
        try:
            return decompressor.decompress(frame)
        finally:
            self._decompressors.append(decompressor)


class DictionarySource(Protocol):
    """Where decode finds a dictionary by id (store/dictionaries.py's Dictionaries)."""

    max_text_bytes: int

    def get(self, dict_id: int) -> Dictionary: ...


def varint(value: int) -> bytes:
    """``value`` as an unsigned LEB128 varint."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(blob: bytes, start: int) -> tuple[int, int]:
    """The unsigned LEB128 varint at ``start`` and the offset after it."""
    value = shift = 0
    for offset in range(start, min(len(blob), start + 10)):
        byte = blob[offset]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset + 1
        shift += 7
    raise ValueError("truncated dictionary id")


def text_of(event: Event) -> bytes:
    """What every kind holds: derived fields, a newline, the notification."""
    return msgspec.json.encode(event.derived()) + b"\n" + event.notification_json.encode()


def encode(event: Event, compress: bool, dictionary: Dictionary | None = None) -> bytes:
    """The stored form of an event (without seq and ingest time, which Redis assigns).

    ``compress`` with a ``dictionary``: zstd with it; without one: zlib.
    """
    return encode_text(text_of(event), compress, dictionary)


def encode_text(text: bytes, compress: bool, dictionary: Dictionary | None = None) -> bytes:
    """The stored body of a text made by ``text_of``."""
    if not compress:
        return _PLAIN + text
    if dictionary is not None:
        return dictionary.compress(text)
    return _ZLIB + isal_zlib.compress(text, _LEVEL)


def dictionary_id(blob: bytes) -> int | None:
    """The id of the dictionary a stored body needs, or None (no dictionary)."""
    if blob[:1] != _DICT:
        return None
    return read_varint(blob, 1)[0]


def decode_text(blob: bytes, dictionaries: DictionarySource | None = None) -> bytes:
    """The text a stored body holds (raises ValueError or zstd's errors when it is damaged)."""
    kind = blob[:1]
    if kind == _ZLIB:
        return isal_zlib.decompress(blob[1:])
    if kind == _PLAIN:
        return blob[1:]
    if kind == _DICT:
        dict_id, start = read_varint(blob, 1)
        if dictionaries is None:
            raise ValueError(f"needs dictionary {dict_id}, and no dictionaries were given")
        limit = getattr(dictionaries, "max_text_bytes", MAX_TEXT_BYTES)
        return dictionaries.get(dict_id).decompress(blob[start:], limit)
    raise ValueError(f"unknown event encoding {kind!r}")


def decode(blob: bytes, seq: int, ingested_ms: int, dictionaries: DictionarySource | None = None) -> Event:
    """The Event stored as ``blob`` under sequence ``seq``.

    Raises UndecodableEvent, naming the seq, when the body is damaged or its
    dictionary is missing or damaged; StoreError when Redis cannot be asked
    for the dictionary.
    """
    try:
        text = decode_text(blob, dictionaries)
        derived_text, _, notification_json = text.decode().partition("\n")
        derived = json.loads(derived_text)
        derived["timestamp"] = parse_timestamp(derived["timestamp"])
        return Event(
            **derived,
            notification_json=notification_json,
            seq=seq,
            ingested_at=datetime.fromtimestamp(ingested_ms / 1000, UTC),
        )
    except UndecodableEvent as e:
        raise UndecodableEvent(f"event at seq {seq} cannot be decoded: {e}") from None
    except (ValueError, KeyError, TypeError, zstandard.ZstdError, _ZLIB_ERROR) as e:
        raise UndecodableEvent(f"event at seq {seq} cannot be decoded: {e}") from None


class Indexed(msgspec.Struct, frozen=True):
    """The derived fields an event's index keys are computed from (events.py keys_of),
    read without the rest of the event: what retention needs of each body."""

    event_type: str
    publisher_id: str = ""
    tenant_id: str | None = None
    resource_id: str | None = None
    billed_tenant_id: str | None = None

    @property
    def tenants(self) -> tuple[str, ...]:
        """As Event.tenants: the owner, and the billed project."""
        return tuple(t for t in (self.tenant_id, self.billed_tenant_id) if t)


_INDEXED = msgspec.json.Decoder(Indexed)


def decode_indexed(blob: bytes, seq: int, dictionaries: DictionarySource | None = None) -> Indexed:
    """The index fields of the event stored as ``blob``: its derived fields' line only,
    into a small struct (a third of ``decode``'s CPU, docs/performance.md).

    Raises UndecodableEvent, naming the seq, as ``decode`` does.
    """
    try:
        text = decode_text(blob, dictionaries)
        end = text.find(b"\n")
        return _INDEXED.decode(text if end < 0 else text[:end])
    except UndecodableEvent as e:
        raise UndecodableEvent(f"event at seq {seq} cannot be decoded: {e}") from None
    except (ValueError, zstandard.ZstdError, _ZLIB_ERROR) as e:  # msgspec's errors are ValueErrors
        raise UndecodableEvent(f"event at seq {seq} cannot be decoded: {e}") from None


def ratio(texts: list[bytes], compress: Callable[[bytes], bytes]) -> float:
    """Stored bytes over text bytes of ``texts``, each compressed alone."""
    total = sum(len(text) for text in texts)
    return sum(len(compress(text)) for text in texts) / total if total else 0.0
