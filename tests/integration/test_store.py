"""The Redis store against the real local Redis, each test under its own key prefix."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from tests.conftest import ROOT, TEST_REDIS_URL, as_sent, load_sample, make_config, sample_paths
from yagi_meter.config import Config
from yagi_meter.errors import ConfigError
from yagi_meter.ingest.ingestor import Ingestor, Message
from yagi_meter.notification import CONFLICT_NAMESPACE, Event, parse
from yagi_meter.store import Store, open_store
from yagi_meter.store.events import Ingested
from yagi_meter.store.keys import Keys
from yagi_meter.store.outbox import member

pytestmark = [pytest.mark.integration, pytest.mark.one_partition]

FIXTURE = json.loads(
    (ROOT / "tests/fixtures/notifications/nova-compute.instance.create.end.json").read_text()
)
TENANT = FIXTURE["payload"]["tenant_id"]
INSTANCE = FIXTURE["payload"]["instance_id"]


def make_message(message_id: str, tenant: str = TENANT, resource: str = INSTANCE, **extra: Any) -> dict:
    message = json.loads(json.dumps(FIXTURE))
    message["message_id"] = message_id
    message["payload"]["tenant_id"] = tenant
    message["payload"]["instance_id"] = resource
    message["payload"].update(extra)
    return message


def make_event(message_id: str, **kwargs: Any) -> Event:
    body = json.dumps(make_message(message_id, **kwargs)).encode()
    return parse(body, received_at=datetime.now(UTC))


@pytest.fixture
def store(config: Config, redis_server: redis.Redis) -> Store:
    return open_store(config, client=redis_server)


def snapshot(client: redis.Redis, prefix: str) -> dict[bytes, Any]:
    """Every key under ``prefix`` with its whole content."""
    state: dict[bytes, Any] = {}
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = client.type(key)
        if kind == b"string":
            state[key] = client.get(key)
        elif kind == b"hash":
            state[key] = client.hgetall(key)
        elif kind == b"set":
            state[key] = client.smembers(key)
        elif kind == b"zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            state[key] = client.xrange(key)
        else:
            raise AssertionError(f"unexpected {kind!r} at {key!r}")
    return state


def has_event(client: redis.Redis, keys: Keys, seq: int) -> bool:
    return bool(client.xrange(keys.events, f"{seq}-0", f"{seq}-0"))


def index_zsets(client: redis.Redis, keys: Keys) -> set[bytes]:
    """Every index zset of the partition ``keys`` names: type, tenant, resource, verdicts."""
    found = set()
    for family in ("type:", "tenant:", "resource:"):
        found |= set(client.scan_iter(match=keys.part + family + "*", count=1000))
    return found | ({keys.audit_verdicts.encode()} if client.exists(keys.audit_verdicts) else set())


def assert_every_index_entry_has_its_event(client: redis.Redis, keys: Keys) -> None:
    k = keys
    wanted: dict[int, str] = {}
    for index in index_zsets(client, k):
        for seq in client.zrange(index, 0, -1):
            wanted.setdefault(int(seq), f"index {index!r}")
    for message_id, value in client.hgetall(k.ids).items():
        wanted.setdefault(int(value.split()[0]), f"ids entry {message_id!r}")
    pipe = client.pipeline(transaction=False)
    for seq in wanted:
        pipe.xrange(k.events, f"{seq}-0", f"{seq}-0")
    missing = [
        f"{where} -> seq {seq}"
        for (seq, where), found in zip(wanted.items(), pipe.execute(), strict=True)
        if not found
    ]
    assert missing == []


# -- one write ---------------------------------------------------------------


def test_one_write_stores_event_ids_time_indexes_and_push_outbox(
    store: Store, redis_server: redis.Redis, keys: Keys
) -> None:
    event = make_event("m-1")
    [outcome] = store.events.write([event])
    assert (outcome.status, outcome.seq) == (Ingested.STORED, 1)

    k, r = keys, redis_server
    [(entry_id, fields)] = r.xrange(k.events)
    assert entry_id == b"1-0"
    assert (fields[b"e"], fields[b"m"]) == (b"compute.instance.create.end", b"m-1")
    assert fields[b"u"] == event.user_id.encode()  # what the user_id filter reads
    assert r.hget(k.ids, "m-1") == f"1 {event.digest}".encode()
    # The notification time, what start/end select on (by_time held it before "n").
    assert fields[b"n"] == str(int(event.timestamp.timestamp() * 1000)).encode()
    assert not r.exists(k.by_time)
    indexes = [k.event_type(event.event_type), k.tenant(TENANT), k.resource(TENANT, INSTANCE)]
    for index in indexes:
        assert r.zrange(index, 0, -1, withscores=True) == [(b"1", 1.0)]
    assert index_zsets(r, k) == {i.encode() for i in indexes}
    assert not r.exists(k.part + "indexes")  # no longer written
    assert r.zrange(k.outbox_seqs("push"), 0, -1) == [member(1).encode()]
    assert r.zcard(k.outbox("push")) == 1
    assert not r.exists(k.outbox("forward"), k.outbox_seqs("forward"))
    assert store.events.last_seq() == 1

    got = store.events.get("m-1")
    assert got is not None
    assert got.seq == 1 and got.ingested_at is not None
    assert got.derived() == event.derived()
    assert got.notification == event.notification


def test_forward_outbox_is_written_when_forwarding_is_configured(
    key_prefix: str, redis_server: redis.Redis, keys: Keys
) -> None:
    config = make_config(
        redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, forward_url="http://archive.example/events"
    )
    store = open_store(config, client=redis_server)
    store.events.write([make_event("m-1"), make_event("m-2")])
    expected = [member(1).encode(), member(2).encode()]
    assert redis_server.zrange(keys.outbox_seqs("forward"), 0, -1) == expected
    assert redis_server.zrange(keys.outbox("forward"), 0, -1) == expected
    assert redis_server.zrange(keys.outbox_seqs("push"), 0, -1) == expected


def test_event_without_tenant_is_indexed_by_type_only(
    store: Store, redis_server: redis.Redis, keys: Keys
) -> None:
    sample = as_sent(load_sample(next(p for p in sample_paths() if p.name == "service-update.json")))
    event = parse(json.dumps(sample).encode(), received_at=datetime.now(UTC))
    assert event.tenant_id is None
    store.events.write([event])
    assert index_zsets(redis_server, keys) == {keys.event_type("service.update").encode()}


def test_ids_with_separators_never_share_an_index(
    store: Store, redis_server: redis.Redis, keys: Keys
) -> None:
    store.events.write(
        [make_event("m-1", tenant="a:b", resource="c"), make_event("m-2", tenant="a", resource="b:c")]
    )
    k = keys
    assert k.resource("a:b", "c") != k.resource("a", "b:c")
    assert redis_server.zrange(k.resource("a:b", "c"), 0, -1) == [b"1"]
    assert redis_server.zrange(k.resource("a", "b:c"), 0, -1) == [b"2"]
    assert redis_server.zrange(k.tenant("a"), 0, -1) == [b"2"]


def test_readers_never_see_half_a_write(store: Store, redis_server: redis.Redis, keys: Keys) -> None:
    k = keys
    stop = threading.Event()
    torn: list[tuple] = []

    def read() -> None:
        client = redis.Redis.from_url(TEST_REDIS_URL)
        while not stop.is_set():
            pipe = client.pipeline(transaction=True)
            pipe.xlen(k.events).hlen(k.ids).zcard(k.tenant(TENANT))
            pipe.zcard(k.outbox_seqs("push")).get(k.seq)
            counts = pipe.execute()
            counts[-1] = int(counts[-1] or 0)
            if len(set(counts)) != 1:
                torn.append(tuple(counts))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for batch in range(40):
            store.events.write([make_event(f"m-{batch}-{i}", resource=f"r-{i}") for i in range(25)])
    finally:
        stop.set()
        reader.join()
    assert torn == []
    assert store.events.count() == 1000


# -- dedup -------------------------------------------------------------------


def test_redelivered_message_changes_nothing_and_counts_a_duplicate(
    store: Store, redis_server: redis.Redis, key_prefix: str, keys: Keys
) -> None:
    store.events.write([make_event("m-1"), make_event("m-2")])
    before = snapshot(redis_server, key_prefix)
    [outcome] = store.events.write([make_event("m-1")])
    assert (outcome.status, outcome.seq) == (Ingested.DUPLICATE, 1)
    after = snapshot(redis_server, key_prefix)
    assert after.pop(keys.duplicates.encode()) == b"1"
    assert after == before


def test_duplicate_within_one_batch_is_stored_once(store: Store) -> None:
    outcomes = store.events.write([make_event("m-1"), make_event("m-1")])
    assert [(o.status, o.seq) for o in outcomes] == [(Ingested.STORED, 1), (Ingested.DUPLICATE, 1)]
    assert store.events.count() == 1


def test_reused_message_id_with_another_body_keeps_both_counts_and_warns(
    store: Store, config: Config, redis_server: redis.Redis, caplog: pytest.LogCaptureFixture, keys: Keys
) -> None:
    ingestor = Ingestor(store, config)
    first = json.dumps(make_message("m-1", display_name="first")).encode()
    second = json.dumps(make_message("m-1", display_name="second")).encode()
    assert ingestor.ingest([Message(first, "test")]).stored == 1
    with caplog.at_level(logging.WARNING, logger="yagi_meter"):
        summary = ingestor.ingest([Message(second, "test")])
    assert (summary.stored, summary.duplicates, summary.conflicts) == (0, 0, 1)
    assert redis_server.get(keys.conflicts) == b"1"
    assert store.events.count() == 2
    assert store.events.get("m-1").notification["payload"]["display_name"] == "first"
    copy_id = str(
        uuid.uuid5(CONFLICT_NAMESPACE, "m-1\n" + parse(second, received_at=datetime.now(UTC)).digest)
    )
    copy = store.events.get(copy_id)
    assert copy is not None and copy.seq == 2
    assert (copy.conflict_of, copy.derived()["conflict_of"]) == ("m-1", "m-1")
    assert copy.notification["payload"]["display_name"] == "second"
    assert copy.notification["message_id"] == "m-1"  # the body as it came
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "m-1" in record.getMessage() and copy_id in record.getMessage()
    assert "compute.instance.create.end" in record.getMessage()
    # The same conflicting body again (a redelivery): a duplicate of the copy.
    again = ingestor.ingest([Message(second, "test"), Message(first, "test")])
    assert (again.stored, again.duplicates, again.conflicts) == (0, 2, 0)
    assert (store.events.count(), redis_server.get(keys.conflicts)) == (2, b"1")


def test_several_bodies_of_one_message_id_in_one_batch_are_all_kept(store: Store, config: Config) -> None:
    bodies = [json.dumps(make_message("m-1", display_name=f"body {n}")).encode() for n in range(4)]
    summary = Ingestor(store, config).ingest([Message(body, "test") for body in bodies * 2])
    assert (summary.stored, summary.conflicts, summary.duplicates) == (1, 3, 4)
    names = sorted(e.notification["payload"]["display_name"] for e in store.events.get_many(range(1, 5)))
    assert names == [f"body {n}" for n in range(4)]
    assert store.events.count() == 4


def test_bad_messages_in_a_batch_are_quarantined_with_their_reason_and_nothing_else_is_lost(
    store: Store, config: Config, key_prefix: str
) -> None:
    good = [json.dumps(make_message(f"good-{i}")).encode() for i in range(3)]
    bad = {
        b"not json at all": "body is not JSON",
        b"\xff\xfe\x00garbage": "not UTF-8",
        json.dumps({"event_type": "compute.instance.create.end"}).encode(): "missing message_id",
        json.dumps({"message_id": "x"}).encode(): "missing event_type",
        json.dumps(make_message("bad\x01id")).encode(): "message_id has characters XML cannot carry",
        json.dumps(make_message("huge", blob="x" * 5000)).encode(): "body too large",
    }
    limited = make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, amqp_max_body_bytes="4096")
    bodies = [good[0], *bad, good[1], good[2]]
    summary = Ingestor(store, limited).ingest([Message(body, f"test:{n}") for n, body in enumerate(bodies)])
    assert (summary.stored, summary.quarantined) == (3, len(bad))
    assert [e.message_id for e in store.events.get_many([1, 2, 3])] == ["good-0", "good-1", "good-2"]
    entries = store.quarantine.list()
    assert [e.body for e in entries] == list(bad)
    for entry, reason in zip(entries, bad.values(), strict=True):
        assert reason in entry.reason
    assert [e.source for e in entries] == [f"test:{n}" for n in range(1, len(bad) + 1)]

    # Requeued after the fix: stored and gone from the quarantine in the same write.
    huge = entries[-1]
    summary = Ingestor(store, config).ingest([Message(huge.body, huge.source)], requeued=[huge.id])
    assert summary.stored == 1
    assert store.events.get("huge") is not None
    assert huge.id not in {e.id for e in store.quarantine.list()}
    assert store.quarantine.count() == len(bad) - 1


# -- sequence ----------------------------------------------------------------


def test_sequence_numbers_strictly_increase_across_batches(store: Store) -> None:
    seqs = []
    for batch in range(5):
        outcomes = store.events.write([make_event(f"m-{batch}-{i}") for i in range(7)])
        seqs += [o.seq for o in outcomes]
    assert seqs == list(range(1, 36))


def test_concurrent_writers_leave_no_gaps_or_duplicates_in_any_index(
    store: Store, config: Config, redis_server: redis.Redis, keys: Keys
) -> None:
    writers, batches, size = 6, 10, 20
    outcomes: dict[int, list] = {}
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            own = open_store(config, client=redis.Redis.from_url(TEST_REDIS_URL))
            tenant = f"tenant-{writer % 3}"
            for batch in range(batches):
                events = [
                    make_event(f"w{writer}-b{batch}-{i}", tenant=tenant, resource=f"vm-{i % 4}")
                    for i in range(size)
                ]
                outcomes.setdefault(writer, []).extend(own.events.write(events))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    total = writers * batches * size
    all_seqs = sorted(o.seq for found in outcomes.values() for o in found)
    assert all_seqs == list(range(1, total + 1))
    for found in outcomes.values():  # each writer's own seqs only go up
        assert [o.seq for o in found] == sorted(o.seq for o in found)

    k, r = keys, redis_server
    entry_seqs = [int(entry_id.split(b"-")[0]) for entry_id, _ in r.xrange(k.events)]
    assert entry_seqs == list(range(1, total + 1))
    expected: dict[str, set[int]] = {}
    for found in outcomes.values():
        for o in found:
            e = o.event
            for index in (
                k.event_type(e.event_type),
                k.tenant(e.tenant_id),
                k.resource(e.tenant_id, e.resource_id),
            ):
                expected.setdefault(index, set()).add(o.seq)
    assert {i.decode() for i in index_zsets(r, k)} == set(expected)
    for index, seqs in expected.items():
        assert [int(m) for m in r.zrange(index, 0, -1)] == sorted(seqs)
    assert r.hlen(k.ids) == r.zcard(k.outbox_seqs("push")) == total


# -- reading -----------------------------------------------------------------


def test_get_and_get_many(store: Store) -> None:
    store.events.write([make_event(f"m-{i}", resource=f"vm-{i}") for i in range(1, 6)])
    assert store.events.get("m-3").resource_id == "vm-3"
    assert store.events.get("unknown") is None
    assert store.events.seq_of("m-5") == 5
    found = store.events.get_many([4, 99, 2])
    assert [(e.seq, e.message_id) for e in found] == [(4, "m-4"), (2, "m-2")]
    assert store.events.get_many([]) == []


def test_plain_events_stay_readable_after_compress_is_switched_on(
    config: Config, key_prefix: str, redis_server: redis.Redis
) -> None:
    plain = make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, redis_compress="false")
    open_store(plain, client=redis_server).events.write([make_event("old")])
    store = open_store(config, client=redis_server)
    assert store.events.compress
    store.events.write([make_event("new")])
    assert [e.message_id for e in store.events.get_many([1, 2])] == ["old", "new"]


# -- retention ---------------------------------------------------------------


def ingested_ms(client: redis.Redis, keys: Keys, seq: int) -> int:
    [(_, fields)] = client.xrange(keys.events, f"{seq}-0", f"{seq}-0")
    return int(fields[b"t"])


@pytest.fixture
def old_and_new(store: Store, redis_server: redis.Redis, keys: Keys) -> Iterator[float]:
    """Seqs 1-10 (tenant-old) ingested before seqs 11-15; yields a `now` that expires only 1-10."""
    store.events.write(
        [make_event(f"old-{i}", tenant="tenant-old", resource=f"vm-{i % 2}") for i in range(1, 11)]
    )
    cutoff = ingested_ms(redis_server, keys, 10) + 1
    while int(time.time() * 1000) <= cutoff:
        time.sleep(0.002)
    store.events.write(
        [make_event(f"new-{i}", resource="vm-new") for i in range(11, 14)]
        + [make_event(f"new-{i}", tenant="tenant-old", resource="vm-0") for i in range(14, 16)]
    )
    assert ingested_ms(redis_server, keys, 11) >= cutoff
    yield cutoff / 1000 + 1 * 86400


def test_retention_removes_old_events_with_their_index_entries(
    store: Store, redis_server: redis.Redis, old_and_new: float, keys: Keys
) -> None:
    k, r = keys, redis_server
    store.outbox("push").done(*range(1, 16))
    assert store.events.expire(1, now=old_and_new) == 10

    assert [int(i.split(b"-")[0]) for i, _ in r.xrange(k.events)] == list(range(11, 16))
    assert store.events.get("old-3") is None
    assert store.events.get("new-12").seq == 12
    assert r.hlen(k.ids) == 5
    assert r.zrange(k.tenant("tenant-old"), 0, -1) == [b"14", b"15"]
    assert r.zrange(k.resource("tenant-old", "vm-0"), 0, -1) == [b"14", b"15"]
    # An index emptied by retention is gone.
    assert not r.exists(k.resource("tenant-old", "vm-1"))
    assert_every_index_entry_has_its_event(r, keys)
    assert store.events.expire(1, now=old_and_new) == 0


def test_retention_keeps_events_still_waiting_in_an_outbox(
    store: Store, redis_server: redis.Redis, old_and_new: float, keys: Keys
) -> None:
    r = redis_server
    push = store.outbox("push")
    push.done(*(seq for seq in range(1, 16) if seq != 7))
    assert store.events.expire(1, now=old_and_new) == 6
    assert store.events.get("old-6") is None
    assert store.events.get("old-7").seq == 7
    assert_every_index_entry_has_its_event(r, keys)
    push.done(7)
    assert store.events.expire(1, now=old_and_new) == 4
    assert store.events.count() == 5
    assert_every_index_entry_has_its_event(r, keys)


def test_retention_zero_keeps_everything(store: Store, old_and_new: float) -> None:
    assert store.events.expire(0, now=old_and_new + 10 * 365 * 86400) == 0
    assert store.events.count() == 15


def test_retention_during_writes_never_leaves_an_index_entry_without_its_event(
    store: Store, config: Config, redis_server: redis.Redis, keys: Keys
) -> None:
    k = keys
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        own = open_store(config, client=redis.Redis.from_url(TEST_REDIS_URL))
        outbox = own.outbox("push")
        n = 0
        try:
            while not stop.is_set() and n < 200:
                outcomes = own.events.write([make_event(f"m-{n}-{i}", resource=f"vm-{i}") for i in range(10)])
                outbox.done(*(o.seq for o in outcomes))
                n += 1
        except BaseException as e:  # surfaced below
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(20):
            time.sleep(0.01)
            store.events.expire(1, now=time.time() + 86400)
            assert_every_index_entry_has_its_event(redis_server, keys)
    finally:
        stop.set()
        writer.join()
    assert errors == []
    store.events.expire(1, now=time.time() + 86400 + 1)  # +1 s: the last batch may be this very ms
    assert store.events.count() == 0
    assert redis_server.zcard(k.by_time) == redis_server.hlen(k.ids) == 0
    assert index_zsets(redis_server, k) == set()


# -- outbox ------------------------------------------------------------------


def test_outbox_claim_lease_done_and_retry(store: Store, redis_server: redis.Redis) -> None:
    store.events.write([make_event(f"m-{i}") for i in range(1, 6)])
    push = store.outbox("push")
    assert push.backlog() == 5 and push.oldest() == 1

    assert push.claim(2, lease_seconds=30) == [1, 2]  # oldest due first, at most count
    assert push.claim(10, lease_seconds=30) == [3, 4, 5]
    assert push.claim(10, lease_seconds=30) == []  # all leased

    push.done(1)
    assert push.backlog() == 4 and push.oldest() == 2
    assert push.retry(2, delay_seconds=0) == 1
    assert push.retry(2, delay_seconds=0) == 2
    assert push.attempts(2) == 2
    assert push.retry(3, delay_seconds=60) == 1
    assert push.claim(10, lease_seconds=30) == [2]  # 3 is due in a minute, 4 and 5 are leased
    push.done(2, 3)
    assert push.attempts(2) == 0
    assert push.backlog() == 2 and push.oldest() == 4


def test_leased_entry_is_not_claimed_again_until_its_lease_ends(
    store: Store, redis_server: redis.Redis
) -> None:
    store.events.write([make_event("m-1")])
    push = store.outbox("push")
    assert push.claim(10, lease_seconds=1) == [1]
    assert push.claim(10, lease_seconds=1) == []
    time.sleep(1.1)
    # The holder died without done/retry: another worker takes the entry over.
    assert push.claim(10, lease_seconds=30) == [1]
    assert push.claim(10, lease_seconds=30) == []


def test_competing_workers_never_hold_the_same_entry(store: Store, config: Config) -> None:
    for batch in range(10):
        store.events.write([make_event(f"m-{batch}-{i}") for i in range(30)])
    claimed: list[list[int]] = []
    start = threading.Barrier(5)

    def work() -> None:
        own = open_store(config, client=redis.Redis.from_url(TEST_REDIS_URL)).outbox("push")
        mine: list[int] = []
        start.wait()
        while seqs := own.claim(7, lease_seconds=60):
            mine += seqs
            time.sleep(0.002)  # "deliver" them
        claimed.append(mine)

    threads = [threading.Thread(target=work) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [seq for mine in claimed for seq in mine]
    assert sorted(every) == list(range(1, 301))


# -- memory ------------------------------------------------------------------


def test_memory_per_event_stays_below_the_raw_json_size(
    store: Store, redis_server: redis.Redis, key_prefix: str
) -> None:
    bodies = [
        json.dumps(as_sent(load_sample(path), message_id=f"m-{path.stem}")).encode()
        for path in sample_paths()
    ]
    events = [parse(body, received_at=datetime.now(UTC)) for body in bodies]
    store.events.write(events)
    assert store.events.count() == len(bodies) >= 70
    sizes = {
        key: redis_server.memory_usage(key, samples=0) or 0
        for key in redis_server.scan_iter(match=f"{key_prefix}*", count=1000)
    }
    # The discovery catalog costs per name (tenant, resource, event type), not per
    # event: here nearly every sample is a type of its own.  Bounded apart.
    catalog = sum(size for key, size in sizes.items() if key.startswith(f"{key_prefix}catalog:".encode()))
    names = len({e.event_type for e in events}) + 2 * len({t for e in events for t in e.tenants})
    names += len({(t, e.resource_id) for e in events for t in e.tenants if e.resource_id})
    print(f"\ncatalog {catalog} bytes for {names} names")
    assert catalog < 400 * names
    used = sum(sizes.values()) - catalog
    per_event = used / len(bodies)
    raw = sum(map(len, bodies)) / len(bodies)
    # The user id is kept once more, uncompressed, beside the body (the "u"
    # field the user_id filter reads): a listpack string of its length + 2;
    # so is the notification time ("n", what start/end read, no longer in the
    # by_time zset): 20 bytes of the stream per event, as measured on 20,000
    # events (an integer and, with bodies this size, a field name in each
    # stream node of two or three entries).
    beside = sum(len(event.user_id or "") + 2 + 20 for event in events) / len(events)
    print(
        f"\nRedis memory per event: {per_event:.0f} bytes (raw JSON {raw:.0f} bytes, {per_event / raw:.0%};"
        f" user id beside the body {beside:.1f} bytes)"
    )
    assert per_event < raw + beside


def test_a_store_keeps_the_partition_count_it_was_first_written_with(key_prefix):
    four = open_store(
        make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, redis_partitions="4")
    )
    four.check_layout()
    four.events.write([make_event(f"m-{n}", tenant=f"t-{n}") for n in range(20)])
    assert four.events.count() == 20
    assert len({four.events.split(four.events.seq_of(f"m-{n}"))[0] for n in range(20)}) > 1
    two = open_store(make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, redis_partitions="2"))
    with pytest.raises(ConfigError, match="written with 4 partitions"):
        two.check_layout()


def test_several_partitions_refuse_a_store_of_the_one_partition_layout(key_prefix):
    one = open_store(make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, redis_partitions="1"))
    one.events.write([make_event("m-1", tenant="t-1")])
    one.check_layout()  # an earlier version's store: one partition, and the layout key written now
    one.check_layout()
    redis.Redis.from_url(TEST_REDIS_URL).delete(key_prefix + "layout")  # as an earlier version left it
    four = open_store(
        make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, redis_partitions="4")
    )
    with pytest.raises(ConfigError, match="written with one partition"):
        four.check_layout()
    assert one.events.get("m-1") is not None
