"""The ``d`` body kind: zstd with a dictionary, its tag, its bounds and its errors (no Redis here:
the dictionaries are built in-process; tests/integration/test_dictionaries.py keeps them in Redis)."""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import uuid
from datetime import UTC, datetime

import pytest
import zstandard

from tests.conftest import as_sent, load_sample, sample_paths
from yagi_meter.errors import UndecodableEvent
from yagi_meter.notification import Event, parse
from yagi_meter.store import codec

INGESTED_MS = 1_700_000_000_123


def varied_events(count: int, seed: int) -> list[Event]:
    """Events from the real samples with their own ids, tenants and times."""
    rng = random.Random(seed)
    samples = [load_sample(path) for path in sample_paths()]
    events = []
    for i in range(count):
        message = as_sent(
            rng.choice(samples),
            message_id=str(uuid.UUID(int=rng.getrandbits(128))),
            timestamp=f"2026-12-0{1 + i % 9} 1{i % 10}:{i % 60:02d}:{i % 60:02d}.{i:06d}",
        )
        events.append(parse(json.dumps(message).encode(), received_at=datetime.now(UTC)))
    return events


class Source:
    """Dictionaries by id, in-process (what store/dictionaries.py is, without Redis)."""

    def __init__(self, *dictionaries: codec.Dictionary, max_text_bytes: int = codec.MAX_TEXT_BYTES) -> None:
        self.by_id = {d.id: d for d in dictionaries}
        self.max_text_bytes = max_text_bytes

    def get(self, dict_id: int) -> codec.Dictionary:
        return self.by_id[dict_id]


@pytest.fixture(scope="module")
def trained() -> bytes:
    texts = [codec.text_of(event) for event in varied_events(600, seed=1)]
    return zstandard.train_dictionary(codec.DICTIONARY_BYTES, texts, threads=1).as_bytes()


@pytest.fixture(scope="module")
def others() -> list[Event]:
    return varied_events(60, seed=2)


def stored(event: Event, seq: int) -> Event:
    return dataclasses.replace(event, seq=seq, ingested_at=datetime.fromtimestamp(INGESTED_MS / 1000, UTC))


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**35 + 7])
def test_varint_round_trip(value: int) -> None:
    encoded = codec.varint(value)
    assert len(encoded) == max(1, (value.bit_length() + 6) // 7)
    assert codec.read_varint(b"x" + encoded + b"rest", 1) == (value, 1 + len(encoded))


def test_every_kind_round_trips(trained: bytes, others: list[Event]) -> None:
    dictionaries = [codec.Dictionary(dict_id, trained) for dict_id in (1, 200, 20000)]
    source = Source(*dictionaries)
    for event in others[:10]:
        blobs = [codec.encode(event, False), codec.encode(event, True)]
        blobs += [codec.encode(event, True, d) for d in dictionaries]
        assert [blob[:1] for blob in blobs] == [b"j", b"z", b"d", b"d", b"d"]
        assert [codec.dictionary_id(blob) for blob in blobs] == [None, None, 1, 200, 20000]
        for blob in blobs:
            assert codec.decode(blob, 42, INGESTED_MS, source) == stored(event, 42)


def test_compress_false_ignores_the_dictionary(trained: bytes, others: list[Event]) -> None:
    assert codec.encode(others[0], False, codec.Dictionary(1, trained))[:1] == b"j"


def test_dictionary_body_is_tag_id_and_a_bare_frame(trained: bytes, others: list[Event]) -> None:
    dictionary = codec.Dictionary(300, trained)
    text = codec.text_of(others[0])
    blob = dictionary.compress(text)
    assert blob[:3] == b"d" + codec.varint(300) and len(codec.varint(300)) == 2
    frame = blob[3:]
    assert not frame.startswith(zstandard.FRAME_HEADER)  # the magic number is not stored
    params = zstandard.get_frame_parameters(zstandard.FRAME_HEADER + frame)
    assert params.content_size == len(text)
    assert params.dict_id == 0
    assert not params.has_checksum


def test_dictionary_bodies_are_far_smaller_than_zlib(trained: bytes, others: list[Event]) -> None:
    dictionary = codec.Dictionary(1, trained)
    texts = [codec.text_of(event) for event in others]
    zlib = codec.ratio(texts, lambda text: codec.encode_text(text, True))
    zstd = codec.ratio(texts, dictionary.compress)
    print(f"stored/text: zlib {zlib:.3f}, zstd + dictionary {zstd:.3f}")
    assert zstd < zlib * 0.5


def test_frame_declaring_more_than_the_limit_is_refused(trained: bytes, others: list[Event]) -> None:
    dictionary = codec.Dictionary(1, trained)
    blob = codec.encode(others[0], True, dictionary)
    size = len(codec.text_of(others[0]))
    assert codec.decode(blob, 5, INGESTED_MS, Source(dictionary, max_text_bytes=size)).message_id
    with pytest.raises(
        UndecodableEvent, match=f"seq 5 .*declares {size} bytes, more than the limit {size - 1}"
    ):
        codec.decode(blob, 5, INGESTED_MS, Source(dictionary, max_text_bytes=size - 1))


def test_damaged_bodies_are_errors_naming_the_seq(trained: bytes, others: list[Event]) -> None:
    dictionary = codec.Dictionary(1, trained)
    source = Source(dictionary)
    blob = codec.encode(others[0], True, dictionary)
    damaged = blob[:20] + bytes(b ^ 0x5A for b in blob[20:40]) + blob[40:]
    for bad in (damaged, blob[:-30], b"d", b"d\x81", b"z" + b"\x00" * 10):
        with pytest.raises(UndecodableEvent, match="event at seq 9 cannot be decoded"):
            codec.decode(bad, 9, INGESTED_MS, source)
    with pytest.raises(UndecodableEvent, match="seq 9 .*needs dictionary 1, and no dictionaries were given"):
        codec.decode(blob, 9, INGESTED_MS)


def test_a_body_decoded_with_another_dictionary_is_an_error(trained: bytes, others: list[Event]) -> None:
    # No checksum is stored: what catches a wrong dictionary is the text that comes out.
    texts = [codec.text_of(event) for event in varied_events(600, seed=7)]
    other = zstandard.train_dictionary(16 * 1024, texts[::2], threads=1).as_bytes()
    blob = codec.encode(others[0], True, codec.Dictionary(1, trained))
    with pytest.raises(UndecodableEvent, match="event at seq 3 cannot be decoded"):
        codec.decode(blob, 3, INGESTED_MS, Source(codec.Dictionary(1, other)))


def test_one_dictionary_serves_many_threads_at_once(trained: bytes, others: list[Event]) -> None:
    dictionary = codec.Dictionary(1, trained)
    source = Source(dictionary)
    texts = [codec.text_of(event) for event in others]
    failures: list[str] = []
    start = threading.Barrier(8)

    def work(offset: int) -> None:
        start.wait()
        for round_ in range(30):
            for i, event in enumerate(others):
                if (i + offset + round_) % 2:
                    blob = dictionary.compress(texts[i])
                    if codec.decode(blob, i, INGESTED_MS, source).message_id != event.message_id:
                        failures.append(f"thread {offset}: event {i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert 1 <= len(dictionary._compressors) <= 8
