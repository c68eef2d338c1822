"""zstd dictionaries kept in the real Redis: storing, picking up, reading old bodies, errors, training."""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from datetime import UTC, datetime

import pytest
import redis

from feeds.app import create_app
from tests.conftest import TEST_REDIS_URL, as_sent, load_sample, make_config, sample_paths
from tests.feeds_support import atom_ids
from tests.integration.test_cli import CLI
from yagi_meter.errors import UndecodableEvent
from yagi_meter.ingest.ingestor import Ingestor, Message
from yagi_meter.store import Store, codec, open_store
from yagi_meter.store.dictionaries import AutoTrain, Dictionaries, recent_sample, train

pytestmark = [pytest.mark.integration, pytest.mark.one_partition]


def messages(count: int, seed: int = 1, event_type: str | None = None) -> list[Message]:
    """Real samples with their own message ids, tenants and times (``event_type``: all of it)."""
    rng = random.Random(seed)
    samples = [load_sample(path) for path in sample_paths()]
    found = []
    for i in range(count):
        message = as_sent(
            dict(rng.choice(samples)),
            message_id=str(uuid.UUID(int=rng.getrandbits(128))),
            timestamp=f"2026-12-01 1{i % 10}:{i % 60:02d}:{(i * 7) % 60:02d}.{i:06d}",
        )
        if event_type:
            message["event_type"] = event_type
        found.append(Message(json.dumps(message).encode(), f"test:{i}"))
    return found


def open_config(key_prefix: str, **settings: str) -> Store:
    return open_store(make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, **settings))


def stored_kinds(client: redis.Redis, store: Store) -> list[tuple[bytes, int | None]]:
    keys = store.events.keys  # tests look at the store's own keys
    """(kind byte, dictionary id) of every stored body, in seq order."""
    return [(fields[b"d"][:1], codec.dictionary_id(fields[b"d"])) for _, fields in client.xrange(keys.events)]


@pytest.fixture(scope="module")
def dictionary_bytes() -> bytes:
    """A dictionary trained on events like those the tests store (trained once: seconds of CPU)."""
    import zstandard

    from yagi_meter.notification import parse

    texts = [codec.text_of(parse(m.body, received_at=datetime.now(UTC))) for m in messages(600, seed=99)]
    return zstandard.train_dictionary(codec.DICTIONARY_BYTES, texts, threads=1).as_bytes()


@pytest.fixture(scope="module")
def second_dictionary_bytes() -> bytes:
    import zstandard

    from yagi_meter.notification import parse

    texts = [codec.text_of(parse(m.body, received_at=datetime.now(UTC))) for m in messages(600, seed=98)]
    return zstandard.train_dictionary(32 * 1024, texts, threads=1).as_bytes()


# -- the dict:* keys ---------------------------------------------------------------


def test_add_gives_ids_from_one_and_keeps_every_dictionary(
    key_prefix: str, redis_server: redis.Redis, dictionary_bytes: bytes, second_dictionary_bytes: bytes
) -> None:
    store = open_config(key_prefix)
    d = store.events.dictionaries
    assert d.current() is None and d.current_id() is None and d.list() == []
    assert d.add(dictionary_bytes, samples=600) == 1
    assert d.add(second_dictionary_bytes, current=False) == 2
    assert d.current_id() == 1
    infos = d.list()
    assert [(i.id, i.size, i.samples, i.current) for i in infos] == [
        (1, len(dictionary_bytes), 600, True),
        (2, len(second_dictionary_bytes), 0, False),
    ]
    assert all(i.created is not None and abs(i.created.timestamp() - time.time()) < 60 for i in infos)
    k = store.events.keys
    assert redis_server.get(k.dictionary(1)) == dictionary_bytes
    assert redis_server.get(k.dictionary(2)) == second_dictionary_bytes
    assert redis_server.get(k.dict_last) == b"2"
    assert d.get(2).data == second_dictionary_bytes
    assert d.get(2) is d.get(2)  # built once, then cached


def test_a_dictionary_zstd_cannot_use_is_refused_before_an_id_is_spent(key_prefix: str) -> None:
    store = open_config(key_prefix)
    with pytest.raises(ValueError):
        store.events.dictionaries.add(b"\x37\xa4\x30\xec" + b"\x00" * 10)  # dictionary magic, no tables
    assert store.events.dictionaries.list() == []
    assert store.events.client.get(store.events.keys.dict_last) is None


# -- writing and reading -------------------------------------------------------------


def test_zlib_until_a_dictionary_exists_then_bodies_of_every_kind_read_back(
    key_prefix: str, redis_server: redis.Redis, dictionary_bytes: bytes, second_dictionary_bytes: bytes
) -> None:
    writer = open_config(key_prefix, redis_dictionary_check_seconds="0.1")
    operator = open_config(key_prefix)  # another process: `yagi-meter dictionary train`
    ingestor = Ingestor(writer, make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix))
    batches = [messages(5, seed=n) for n in range(4)]
    plain = open_config(key_prefix, redis_compress="false")
    Ingestor(plain, make_config()).ingest(batches[0])
    ingestor.ingest(batches[1])
    operator.events.dictionaries.add(dictionary_bytes)
    time.sleep(0.15)
    ingestor.ingest(batches[2])
    operator.events.dictionaries.add(second_dictionary_bytes)
    time.sleep(0.15)
    ingestor.ingest(batches[3])
    assert stored_kinds(redis_server, writer) == (
        [(b"j", None)] * 5 + [(b"z", None)] * 5 + [(b"d", 1)] * 5 + [(b"d", 2)] * 5
    )
    # A reader that never saw a dictionary: every kind decodes, dictionary 1's after 2 is current.
    reader = open_config(key_prefix)
    events = reader.events.get_many(range(1, 21))
    sent = [json.loads(m.body)["message_id"] for batch in batches for m in batch]
    assert [e.message_id for e in events] == sent
    assert [e.seq for e in events] == list(range(1, 21))
    client = create_app(make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix)).test_client()
    response = client.get("/events?limit=20")
    assert response.status_code == 200
    assert atom_ids(response.data) == list(reversed(sent))
    for message_id in (sent[0], sent[7], sent[12], sent[19]):
        assert client.get(f"/events/{message_id}").status_code == 200


def test_a_running_writer_picks_up_a_new_dictionary_within_check_seconds(
    key_prefix: str, redis_server: redis.Redis, dictionary_bytes: bytes
) -> None:
    writer = open_config(key_prefix, redis_dictionary_check_seconds="1.5")
    ingestor = Ingestor(writer, make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix))
    ingestor.ingest(messages(3, seed=1))  # looked at dict:current: none
    began = time.monotonic()
    open_config(key_prefix).events.dictionaries.add(dictionary_bytes)
    ingestor.ingest(messages(3, seed=2))  # within the interval: not looked at again
    assert time.monotonic() - began < 1.4, "too slow to show the interval"
    deadline = began + 3
    while stored_kinds(redis_server, writer)[-1] != (b"d", 1) and time.monotonic() < deadline:
        time.sleep(0.2)
        ingestor.ingest(messages(1, seed=int(time.monotonic() * 1000)))
    kinds = stored_kinds(redis_server, writer)
    assert kinds[:6] == [(b"z", None)] * 6
    assert kinds[-1] == (b"d", 1)
    assert time.monotonic() - began < 2.5


def test_a_writer_keeps_compressing_when_redis_cannot_say_which_dictionary(
    key_prefix: str, redis_server: redis.Redis, dictionary_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_config(key_prefix, redis_dictionary_check_seconds="0.1")
    store.events.dictionaries.add(dictionary_bytes)
    assert store.events.dictionaries.current().id == 1
    redis_server.set(store.events.keys.dict_current, "7")  # a dictionary that does not exist
    time.sleep(0.15)
    with caplog.at_level(logging.WARNING):
        assert store.events.dictionaries.current().id == 1
    assert "dictionary 7 is not in Redis" in caplog.text
    assert "still compressing with dictionary 1" in caplog.text


# -- errors --------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["missing", "corrupted"])
def test_a_missing_or_damaged_dictionary_is_an_error_naming_the_seq(
    key_prefix: str,
    redis_server: redis.Redis,
    dictionary_bytes: bytes,
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix)
    writer = open_config(key_prefix)
    Ingestor(writer, config).ingest(messages(2, seed=1))  # zlib: seqs 1, 2
    writer.events.dictionaries.add(dictionary_bytes)
    writer.events.dictionaries._next_check = 0
    first = messages(2, seed=2)
    Ingestor(writer, config).ingest(first)  # dictionary 1: seqs 3, 4
    assert stored_kinds(redis_server, writer)[2:] == [(b"d", 1)] * 2
    key = writer.events.keys.dictionary(1)
    if damage == "missing":
        redis_server.delete(key)
        expected = f"event at seq 4 cannot be decoded: dictionary 1 is not in Redis \\(key {key}\\)"
    else:
        redis_server.setrange(key, 5000, b"\x00" * 64)
        expected = f"event at seq 4 cannot be decoded: dictionary 1 \\(key {key}\\) is damaged: sha256"
    reader = open_config(key_prefix)
    with pytest.raises(UndecodableEvent, match=expected):
        reader.events.get_many([4])
    assert [e.seq for e in reader.events.get_many([1, 2])] == [1, 2]
    # The feed server answers 500 naming the seq for what needs it, and goes on serving the rest.
    client = create_app(config).test_client()
    with caplog.at_level(logging.ERROR, logger="feeds.app"):
        response = client.get("/events?limit=10")
    assert response.status_code == 500
    assert "event at seq 4 cannot be decoded" in response.text
    assert "event at seq 4 cannot be decoded" in caplog.text
    message_id = json.loads(first[0].body)["message_id"]
    assert client.get(f"/events/{message_id}").status_code == 500
    response = client.get(f"/events?limit=2&direction=backward&marker={message_id}")
    assert response.status_code == 200
    assert len(atom_ids(response.data)) == 2
    assert client.get("/health").status_code == 200


# -- training -----------------------------------------------------------------------


def test_training_samples_recent_events_across_event_types(key_prefix: str) -> None:
    store = open_config(key_prefix)
    ingestor = Ingestor(store, make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix))
    ingestor.ingest(messages(20, seed=5, event_type="rare.thing"))
    ingestor.ingest(messages(1000, seed=6, event_type="common.thing"))
    texts, held_out, types = recent_sample(store.events.dictionaries, samples=100, window=1020)
    assert types == 2
    assert len(texts) + len(held_out) == 100 and len(held_out) == 10
    rare = [t for t in texts + held_out if b'"event_type":"rare.thing"' in t]
    assert len(rare) == 20  # every one of them, though they are 2% of the events
    # Only the newest window is read: the rare events are older than it.
    texts, held_out, types = recent_sample(store.events.dictionaries, samples=100, window=500)
    assert types == 1


def test_train_stores_a_dictionary_made_from_the_store_s_events_and_writers_use_it(
    key_prefix: str, redis_server: redis.Redis
) -> None:
    config = make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix)
    store = open_config(key_prefix)
    ingestor = Ingestor(store, config)
    for start in range(0, 600, 200):
        ingestor.ingest(messages(200, seed=start))
    result = train(store.events.dictionaries, samples=500)
    assert result.id == 1 and result.samples == 450 and result.held_out == 50
    assert result.size == len(redis_server.get(store.events.keys.dictionary(1)))
    assert 0 < result.size <= codec.DICTIONARY_BYTES
    assert result.before == "zlib"
    assert result.ratio_after < result.ratio_before * 0.5
    assert store.events.dictionaries.current_id() == 1
    store.events.dictionaries._next_check = 0
    ingestor.ingest(messages(5, seed=1000))
    assert stored_kinds(redis_server, store)[-5:] == [(b"d", 1)] * 5
    # Retraining reads the dictionary-compressed events too, and compares with dictionary 1.
    again = train(store.events.dictionaries, samples=500, force=True)
    assert again.id == 2 and again.before == "dictionary 1"
    assert [e.seq for e in store.events.get_many(range(1, 606))] == list(range(1, 606))


def test_a_dictionary_no_smaller_than_the_current_one_is_not_stored(key_prefix: str) -> None:
    store = open_config(key_prefix)
    Ingestor(store, make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix)).ingest(messages(400))
    first = train(store.events.dictionaries, samples=300)
    assert first.id == 1
    # The same events again: the same sample, the same dictionary, no gain.
    again = train(store.events.dictionaries, samples=300)
    assert again.id is None and again.before == "dictionary 1"
    assert again.ratio_after == pytest.approx(again.ratio_before)
    assert [i.id for i in store.events.dictionaries.list()] == [1]
    assert store.events.dictionaries.current_id() == 1


def test_too_few_events_train_no_dictionary(key_prefix: str) -> None:
    store = open_config(key_prefix)
    Ingestor(store, make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix)).ingest(messages(50))
    with pytest.raises(ValueError, match="45 events to train on; at least 100"):
        train(store.events.dictionaries, samples=500)
    assert store.events.dictionaries.list() == []


def test_auto_train_waits_for_enough_events_then_trains_once(key_prefix: str) -> None:
    store = open_config(key_prefix)
    ingestor = Ingestor(store, make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix))
    trainer = AutoTrain(store.events.dictionaries, after=400, samples=300)
    ingestor.ingest(messages(300, seed=1))
    assert trainer.step() is False
    assert store.events.dictionaries.list() == []
    ingestor.ingest(messages(100, seed=2))
    store.events.client.set(store.events.keys.dict_training, "someone else", ex=60)
    assert trainer.step() is False  # another listener holds the lock
    store.events.client.delete(store.events.keys.dict_training)
    assert trainer.step() is True
    assert [i.id for i in store.events.dictionaries.list()] == [1]
    assert not store.events.client.exists(store.events.keys.dict_training)
    assert trainer.step() is True
    assert [i.id for i in store.events.dictionaries.list()] == [1]


def test_auto_train_thread_trains_in_the_background(key_prefix: str) -> None:
    store = open_config(key_prefix)
    Ingestor(store, make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix)).ingest(messages(300))
    trainer = AutoTrain(store.events.dictionaries, after=300, samples=300, every=0.1).start()
    try:
        deadline = time.monotonic() + 60
        while store.events.dictionaries.current_id() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        trainer.stop()
    assert store.events.dictionaries.current_id() == 1
    assert not trainer._thread.is_alive()


def test_dictionary_commands(key_prefix: str, tmp_path) -> None:
    cli = CLI(key_prefix, tmp_path)
    assert cli.ok("dictionary", "list") == ""
    store = open_config(key_prefix)
    Ingestor(store, make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix)).ingest(messages(400))
    out = cli.ok("dictionary", "train", "--samples", "300")
    assert out.startswith("dictionary 1: ")
    assert "trained on 270 events of" in out and "now current" in out
    assert "held-out 30 events, stored/text: 0." in out and "with zlib, 0." in out
    listing = cli.ok("dictionary", "list").splitlines()
    assert len(listing) == 1 and listing[0].startswith("1  ") and listing[0].endswith("current")
    result = cli.run("dictionary", "train", "--samples", "300")  # the same events: no gain
    assert result.returncode == 0
    assert result.stdout.startswith("the new one: ") and "not stored" in result.stdout
    assert "dictionary 1 does as well; kept it (--force stores the new one)" in result.stderr
    assert len(cli.ok("dictionary", "list").splitlines()) == 1
    out = cli.ok("dictionary", "train", "--samples", "300", "--force")
    assert out.startswith("dictionary 2: ") and "with dictionary 1," in out
    listing = cli.ok("dictionary", "list").splitlines()
    assert [line.split()[0] for line in listing] == ["1", "2"]
    assert not listing[0].endswith("current") and listing[1].endswith("current")
    empty = CLI(key_prefix + "empty:", tmp_path).run("dictionary", "train")
    assert empty.returncode == 1
    assert "no dictionary trained: 0 events to train on" in empty.stderr


def test_a_reader_drops_its_dictionaries_after_redis_lost_data(
    key_prefix: str, dictionary_bytes: bytes, second_dictionary_bytes: bytes
) -> None:
    store = open_config(key_prefix)
    d: Dictionaries = store.events.dictionaries
    d.add(dictionary_bytes)
    assert d.get(1).data == dictionary_bytes
    # Redis lost everything; a new dictionary 1 is trained; the process notices the new epoch.
    for key in store.events.client.scan_iter(match=f"{key_prefix}*"):
        store.events.client.delete(key)
    d.add(second_dictionary_bytes)
    assert d.get(1).data == dictionary_bytes  # nothing said Redis lost data yet
    store.events.watch.observe("epoch-a", 10)
    store.events.watch.observe("epoch-b", 1)
    assert d.get(1).data == second_dictionary_bytes


# -- a real listener ---------------------------------------------------------------


def test_a_listener_trains_the_first_dictionary_then_uses_each_new_one(
    vhost: str, key_prefix: str, redis_server: redis.Redis, start_listener, tmp_path
) -> None:
    from tests.integration.listener_helpers import Publisher, listener_env, wait_until

    env = listener_env(
        vhost,
        TEST_REDIS_URL,
        key_prefix,
        redis_dictionary_train_after="300",
        redis_dictionary_samples="300",
        redis_dictionary_check_seconds="0.5",
    )
    store = open_config(key_prefix)
    listener = start_listener(env)
    listener.wait_consuming()
    publisher = Publisher(vhost)
    try:
        assert publisher.publish_all(m.body for m in messages(300, seed=1)) == 300
        listener.wait_for_log("trained dictionary 1 ", timeout=60)
        assert publisher.publish_all(m.body for m in messages(50, seed=2)) == 50
        listener.wait_for_log("compressing new event bodies with dictionary 1", timeout=10)
        wait_until(lambda: store.events.count() >= 350, 30, "350 events stored", listener.log_tail)
        kinds = stored_kinds(redis_server, store)
        assert set(kinds[:300]) == {(b"z", None)}  # before the dictionary
        assert set(kinds[300:]) == {(b"d", 1)}
        # The operator trains another one; the running listener takes it within check_seconds.
        assert (
            CLI(key_prefix, tmp_path)
            .ok("dictionary", "train", "--samples", "300", "--force")
            .startswith("dictionary 2:")
        )
        time.sleep(0.6)  # check_seconds: the next batch after this looks at dict:current
        assert publisher.publish_all(m.body for m in messages(50, seed=3)) == 50
        listener.wait_for_log("compressing new event bodies with dictionary 2", timeout=10)
        wait_until(lambda: store.events.count() >= 400, 30, "400 events stored", listener.log_tail)
    finally:
        publisher.close()
    assert set(stored_kinds(redis_server, store)[350:]) == {(b"d", 2)}
    assert listener.stop() == 0
    assert len(store.events.get_many(range(1, 401))) == 400
