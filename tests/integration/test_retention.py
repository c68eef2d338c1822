"""Retention in steps (EventStore.retention_head, store/retention.lua) and the retention daemon.

Real Redis under the test's key prefix; daemons are real ``yagi-meter
retention`` processes.  Every test checks the store both ways: no index,
``by_time`` or ``ids`` entry points at a removed event, and every kept event
is still in each of its indexes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import TEST_REDIS_URL, child_env
from tests.integration.listener_helpers import Publisher, declare_listener_queue, notifications, wait_until
from tests.integration.test_dictionaries import dictionary_bytes  # noqa: F401 (a fixture)
from tests.integration.test_store import assert_every_index_entry_has_its_event, index_zsets, make_event
from tests.processes import spawn
from yagi_meter.config import Config
from yagi_meter.notification import Event
from yagi_meter.store import Store, codec, open_store
from yagi_meter.store.dictionaries import Dictionaries
from yagi_meter.store.events import EventStore
from yagi_meter.store.keys import Keys

pytestmark = pytest.mark.integration


@pytest.fixture
def store(config: Config, redis_server: redis.Redis) -> Store:
    return open_store(config, client=redis_server)


def stored_seqs(client: redis.Redis, keys: Keys) -> list[int]:
    return [int(entry_id.split(b"-")[0]) for entry_id, _ in client.xrange(keys.events)]


def assert_consistent(client: redis.Redis, keys: Keys, dictionaries: Dictionaries | None = None) -> None:
    """No entry points at a missing event, and every stored event is in all its entries."""
    assert_every_index_entry_has_its_event(client, keys)
    members = 0
    indexes = index_zsets(client, keys)
    for entry_id, fields in client.xrange(keys.events):
        seq = int(entry_id.split(b"-")[0])
        event = codec.decode(fields[b"d"], seq, int(fields[b"t"]), dictionaries)
        for index in EventStore.keys_of(event, keys):
            assert client.zscore(index, seq) is not None, f"seq {seq} missing from {index}"
            assert index.encode() in indexes
            members += 1
        assert fields[b"n"]  # the notification time
        assert client.hget(keys.ids, event.message_id).split()[0] == str(seq).encode()
    assert sum(client.zcard(index) for index in indexes) == members
    assert client.hlen(keys.ids) == client.xlen(keys.events)


def ingest_ms(client: redis.Redis, keys: Keys, seq: int) -> int:
    [(_, fields)] = client.xrange(keys.events, f"{seq}-0", f"{seq}-0")
    return int(fields[b"t"])


def after_ms(client: redis.Redis, keys: Keys, seq: int) -> float:
    """Wait until Redis's clock is past seq's ingest ms; return a ``now`` one day after it."""
    cutoff = ingest_ms(client, keys, seq) + 1
    while int(client.time()[0] * 1000 + client.time()[1] // 1000) <= cutoff:
        time.sleep(0.002)
    return cutoff / 1000 + 86400


def billed(event: Event, payer: str) -> Event:
    return dataclasses.replace(event, billed_tenant_id=payer)


def test_a_step_removes_exactly_the_expired_events_and_their_index_entries(
    store: Store, redis_server: redis.Redis, keys: Keys
) -> None:
    r, k = redis_server, keys
    old = [make_event(f"old-{i}", tenant="t-old", resource=f"vm-{i % 3}") for i in range(1, 8)]
    old.append(billed(make_event("old-8", tenant="svc", resource="lb-1"), "payer"))
    store.events.write(old)
    now = after_ms(r, k, 8)
    new = [make_event(f"new-{i}", tenant="t-old", resource="vm-0") for i in range(9, 12)]
    new.append(billed(make_event("new-12", tenant="svc", resource="lb-2"), "payer"))
    store.events.write(new)
    store.outbox("push").done(*range(1, 13))
    unit = store.events.retention_units()[0]

    first = store.events.retention_step(unit, 1, 3, now=now)  # bounded: 3 of the 8
    assert (first.removed, first.last_seq, first.more) == (3, 3, True)
    assert stored_seqs(r, k) == list(range(4, 13))
    assert_consistent(r, k)

    rest = store.events.retention_step(unit, 1, 100, now=now)
    assert (rest.removed, rest.last_seq, rest.more, rest.undecodable) == (5, 8, False, 0)
    # old-8: its type, svc's and payer's tenant and resource entries.
    assert rest.index_entries == 4 * 3 + 1 * 5
    assert stored_seqs(r, k) == list(range(9, 13))
    assert store.events.get("old-5") is None and store.events.get("new-9").seq == 9
    assert r.zrange(k.tenant("t-old"), 0, -1) == [b"9", b"10", b"11"]
    assert r.zrange(k.resource("payer", "lb-2"), 0, -1) == [b"12"]
    for gone in (k.resource("t-old", "vm-1"), k.resource("payer", "lb-1"), k.resource("svc", "lb-1")):
        assert not r.exists(gone)
    assert_consistent(r, k)
    assert store.events.retention_step(unit, 1, 100, now=now).removed == 0


def test_events_an_outbox_still_needs_are_kept_and_so_is_everything_after_them(
    store: Store, redis_server: redis.Redis, keys: Keys
) -> None:
    r, k = redis_server, keys
    store.events.write([make_event(f"m-{i}", resource=f"vm-{i}") for i in range(1, 11)])
    now = after_ms(r, k, 10)
    forward = [make_event(f"f-{i}") for i in range(11, 13)]
    store.events.write(forward)
    store.outbox("push").done(*(seq for seq in range(1, 13) if seq != 6))
    unit = store.events.retention_units()[0]
    step = store.events.retention_step(unit, 1, 100, now=now)
    assert (step.removed, step.floor) == (5, 6)
    assert stored_seqs(r, k) == list(range(6, 13))
    assert_consistent(r, k)
    store.outbox("push").done(6)
    assert store.events.retention_step(unit, 1, 100, now=now).removed == 5
    assert stored_seqs(r, k) == [11, 12]
    assert_consistent(r, k)


def test_dictionary_bodies_are_decoded_for_their_index_keys_and_removed_with_all_of_them(
    config: Config,
    redis_server: redis.Redis,
    keys: Keys,
    dictionary_bytes: bytes,  # noqa: F811
) -> None:
    r, k = redis_server, keys
    writer = open_store(config, client=r)
    writer.events.write([make_event(f"z-{i}", tenant=f"t-{i % 2}", resource=f"vm-{i}") for i in range(1, 4)])
    writer.events.dictionaries.add(dictionary_bytes)
    writer.events.dictionaries._next_check = 0  # look at dict:current now
    writer.events.write([make_event(f"d-{i}", tenant=f"t-{i % 2}", resource=f"vm-{i}") for i in range(4, 6)])
    now = after_ms(r, k, 5)
    writer.events.write([make_event(f"d-{i}", tenant=f"t-{i % 2}", resource=f"vm-{i}") for i in range(6, 8)])
    writer.outbox("push").done(*range(1, 8))
    kinds = [fields[b"d"][:1] for _, fields in r.xrange(k.events)]
    assert kinds == [b"z"] * 3 + [b"d"] * 4
    retention = open_store(config, client=r)  # another process: nothing cached
    step = retention.events.retention_step(retention.events.retention_units()[0], 1, 100, now=now)
    assert (step.removed, step.undecodable) == (5, 0)
    assert step.index_entries == 5 * 3  # type, tenant and resource of each
    assert stored_seqs(r, k) == [6, 7]
    assert_consistent(r, k, retention.events.dictionaries)


def test_a_body_whose_dictionary_is_gone_is_logged_and_removed_with_what_is_known_without_it(
    config: Config,
    redis_server: redis.Redis,
    keys: Keys,
    dictionary_bytes: bytes,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    r, k = redis_server, keys
    writer = open_store(config, client=r)
    writer.events.write([make_event("z-1", tenant="t-z", resource="vm-z")])
    writer.events.dictionaries.add(dictionary_bytes)
    writer.events.dictionaries._next_check = 0
    writer.events.write([make_event(f"d-{i}", tenant="t-d", resource=f"vm-{i}") for i in range(2, 5)])
    writer.outbox("push").done(*range(1, 5))
    r.delete(k.dictionary(1))  # lost: these bodies cannot be decoded any more
    now = after_ms(r, k, 4)
    retention = open_store(config, client=r)
    with caplog.at_level("ERROR", logger="yagi_meter.store.events"):
        step = retention.events.retention_step(retention.events.retention_units()[0], 1, 100, now=now)
    assert (step.removed, step.undecodable, step.more) == (4, 3, False)
    logged = [record.getMessage() for record in caplog.records]
    for seq in (2, 3, 4):
        assert any(f"seq {seq} cannot be decoded" in text for text in logged), logged
    # Gone: the stream entries, ids, by_time, and the type index (from "e").
    assert r.xlen(k.events) == r.zcard(k.by_time) == r.hlen(k.ids) == 0
    assert not r.exists(k.event_type(make_event("any").event_type))
    # The zlib body was decoded: its owner indexes went with it.  Those of the
    # undecodable ones stay, pointing at events that are gone (readers skip them).
    assert not r.exists(k.tenant("t-z")) and not r.exists(k.resource("t-z", "vm-z"))
    assert r.zrange(k.tenant("t-d"), 0, -1) == [b"2", b"3", b"4"]
    assert (
        retention.events.retention_step(retention.events.retention_units()[0], 1, 100, now=now).removed == 0
    )


def test_a_step_never_removes_an_event_stored_again_under_a_reused_seq(
    store: Store, redis_server: redis.Redis, keys: Keys
) -> None:
    """The head read, then Redis lost its data and seqs were given out again to new
    events before the removal: the removal checks each event's identity (ids)."""
    r, k = redis_server, keys
    store.events.write([make_event(f"lost-{i}") for i in range(1, 4)])
    store.outbox("push").done(1, 2, 3)
    now = after_ms(r, k, 3)
    unit = store.events.retention_units()[0]
    head = store.events.retention_head(unit, 1, 100, now=now).entries
    assert head[0::4] == [1, 2, 3]
    for key in r.scan_iter(match=f"{k.prefix}*"):
        r.delete(key)
    store.events.write([make_event(f"reborn-{i}") for i in range(1, 4)])
    store.outbox("push").done(1, 2, 3)
    # As retention_step sends them: the seqs and their message_ids.
    args = [len(unit.outbox_seqs), 3, *head[0::4], *head[1::4]]
    removed = store.events.scripts["retention"](
        keys=[
            k.events,
            k.ids,
            k.by_time,
            *unit.outbox_seqs,
            k.event_type("compute.instance.create.end"),
        ],
        args=args,
    )
    assert removed == [0, 0, 0]
    assert stored_seqs(r, k) == [1, 2, 3]
    assert_consistent(r, k)


def test_an_event_that_fails_the_check_amid_the_step_keeps_its_entries_and_the_others_go(
    store: Store, redis_server: redis.Redis, keys: Keys
) -> None:
    """The fast path removes index entries by seq range: an event before the last
    removed one that fails the check (here its message_id was stored again, at
    another seq, between the head and the removal) must keep its entries."""
    r, k = redis_server, keys
    store.events.write([make_event(f"m-{i}", tenant="t-1", resource=f"vm-{i % 2}") for i in range(1, 6)])
    store.outbox("push").done(*range(1, 6))
    now = after_ms(r, k, 5)
    unit = store.events.retention_units()[0]
    head = store.events.retention_head(unit, 1, 100, now=now).entries
    seqs, message_ids = head[0::4], head[1::4]
    assert seqs == [1, 2, 3, 4, 5]
    digest = r.hget(k.ids, "m-2").split()[1]
    r.hset(k.ids, "m-2", b"77 " + digest)
    index_keys = [k.event_type("compute.instance.create.end"), k.tenant("t-1"), k.resource("t-1", "vm-0")]
    index_keys.append(k.resource("t-1", "vm-1"))
    removed = store.events.scripts["retention"](
        keys=[k.events, k.ids, k.by_time, *unit.outbox_seqs, *index_keys],
        args=[len(unit.outbox_seqs), 5, *seqs, *message_ids],
    )
    assert removed == [4, 4 * 3, 5]
    assert stored_seqs(r, k) == [2]
    for key in index_keys[:2]:
        assert r.zrange(key, 0, -1) == [b"2"]
    assert r.zrange(k.resource("t-1", "vm-0"), 0, -1) == [b"2"]
    assert not r.exists(k.resource("t-1", "vm-1"))
    assert r.hkeys(k.ids) == [b"m-2"]


@pytest.mark.parametrize("protocol", [2, 3])
def test_the_head_is_read_alike_over_either_protocol(config: Config, keys: Keys, protocol: int) -> None:
    """The head's commands are read raw (no redis-py callbacks): RESP2 and RESP3 shape
    replies differently (ZRANGE WITHSCORES), and both must give the same head."""
    client = redis.Redis.from_url(TEST_REDIS_URL, protocol=protocol)
    store = open_store(config, client=client)
    r, k = client, keys
    store.events.write([make_event(f"p-{i}", resource=f"vm-{i}") for i in range(1, 6)])
    now = after_ms(r, k, 5)
    store.outbox("push").done(1, 2, 5)  # 3 is the floor
    unit = store.events.retention_units()[0]
    head = store.events.retention_head(unit, 1, 100, now=now)
    assert (head.floor, head.entries[0::4], head.full) == (3, [1, 2], False)
    assert head.entries[1::4] == [b"p-1", b"p-2"]
    assert head.entries[2::4] == [b"compute.instance.create.end"] * 2
    assert head.cutoff_ms == int(now * 1000) - 86_400_000
    assert store.events.retention_head(unit, 1, 1, now=now).full
    assert store.events.retention_head(unit, 1, 100).entries == []  # Redis's clock: nothing is a day old


def test_expire_removes_in_steps_until_nothing_is_left(
    store: Store, redis_server: redis.Redis, keys: Keys
) -> None:
    r, k = redis_server, keys
    for n in range(5):
        store.events.write(
            [make_event(f"m-{n}-{i}", tenant=f"t-{i % 7}", resource=f"vm-{i}") for i in range(50)]
        )
    store.outbox("push").done(*range(1, 251))
    r.zadd(k.by_time, {str(seq): 0 for seq in range(1, 251)})  # as stores written before "n" have it
    now = after_ms(r, k, 250)
    assert store.events.expire(1, now=now, limit=7) == 250
    assert r.xlen(k.events) == len(index_zsets(r, k)) == r.zcard(k.by_time) == r.hlen(k.ids) == 0


# -- the daemon ------------------------------------------------------------------------

RETENTION_SECONDS = 1.0


def daemon_env(key_prefix: str, **settings: str) -> dict[str, str]:
    env = child_env()
    env.update(
        YAGI_CONFIG=os.devnull,
        YAGI_REDIS_URL=TEST_REDIS_URL,
        YAGI_REDIS_KEY_PREFIX=key_prefix,
        YAGI_REDIS_RETENTION_DAYS=str(RETENTION_SECONDS / 86400),
        YAGI_RETENTION_IDLE_SECONDS="0.2",
        YAGI_LOGGING_LEVEL="INFO",
    )
    env.update({f"YAGI_{name.upper()}": value for name, value in settings.items()})
    return env


def start_daemon(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as stderr:  # the child has its own copy
        return spawn(
            [sys.executable, "-m", "yagi_meter", "retention"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def fill(store: Store, count: int, batch: int = 1000) -> None:
    """``count`` events over 20 tenants and 400 resources, none waiting in an outbox."""
    seqs: list[int] = []
    for start in range(0, count, batch):
        events = [
            make_event(f"e-{n}", tenant=f"t-{n % 20}", resource=f"vm-{n % 400}")
            for n in range(start, min(count, start + batch))
        ]
        seqs += [o.seq for o in store.events.write(events)]
    store.outbox("push").done(*seqs)


def removed_by(log: Path) -> int:
    found = re.findall(r"stopped; removed (\d+) events", log.read_text())
    assert len(found) == 1, log.read_text()
    return int(found[0])


def test_two_daemons_at_once_remove_each_event_once(
    store: Store, redis_server: redis.Redis, keys: Keys, key_prefix: str, tmp_path: Path
) -> None:
    fill(store, 6000)
    time.sleep(RETENTION_SECONDS + 0.1)
    env = daemon_env(key_prefix, retention_batch="50")
    logs = [tmp_path / "retention-1.log", tmp_path / "retention-2.log"]
    daemons = [start_daemon(env, log) for log in logs]
    wait_until(lambda: redis_server.xlen(keys.events) == 0, 60, "both daemons to remove everything")
    for daemon in daemons:
        daemon.send_signal(signal.SIGTERM)
    for daemon in daemons:
        assert daemon.wait(30) == 0
    counts = [removed_by(log) for log in logs]
    assert sum(counts) == 6000, counts
    assert min(counts) > 0, f"one daemon did all the work, nothing was concurrent: {counts}"
    assert len(index_zsets(redis_server, keys)) == redis_server.hlen(keys.ids) == 0


def test_a_daemon_killed_mid_pass_leaves_a_consistent_store_and_the_next_one_finishes(
    store: Store, redis_server: redis.Redis, keys: Keys, key_prefix: str, tmp_path: Path
) -> None:
    r, k = redis_server, keys
    fill(store, 8000)
    time.sleep(RETENTION_SECONDS + 0.1)
    env = daemon_env(key_prefix, retention_batch="20")
    first = start_daemon(env, tmp_path / "first.log")
    wait_until(lambda: 0 < 8000 - r.xlen(k.events), 30, "the first daemon to start removing")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    left = r.xlen(k.events)
    assert 0 < left < 8000, "killed before or after its pass: nothing tested"
    assert_consistent(r, k)
    second = start_daemon(env, tmp_path / "second.log")
    wait_until(lambda: r.xlen(k.events) == 0, 60, "the second daemon to finish the pass")
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    assert removed_by(tmp_path / "second.log") == left
    assert len(index_zsets(r, k)) == r.zcard(k.by_time) == r.hlen(k.ids) == 0


def write_latencies(config: Config, seconds: float, tag: str) -> list[float]:
    """Batches of 500 events written as the listener writes them, for ``seconds``: each one's time."""
    own = open_store(config, client=redis.Redis.from_url(TEST_REDIS_URL))
    latencies = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        events = [make_event(f"{tag}-{n}-{i}", tenant=f"t-{i % 20}", resource=f"vm-{i}") for i in range(500)]
        encoded = [own.events.encode(event) for event in events]
        call = own.events.prepare(encoded)
        started = time.perf_counter()
        own.events.send(call).result()
        latencies.append(time.perf_counter() - started)
        n += 1
    return latencies


def test_ingest_keeps_storing_while_the_daemon_removes_and_its_batches_wait_at_most_a_step(
    store: Store, redis_server: redis.Redis, keys: Keys, key_prefix: str, config: Config, tmp_path: Path
) -> None:
    r, k = redis_server, keys
    fill(store, 40000)
    without = write_latencies(config, 3, "without")
    time.sleep(RETENTION_SECONDS + 0.1)
    before = r.xlen(k.events)
    daemon = start_daemon(daemon_env(key_prefix), tmp_path / "retention.log")
    wait_until(lambda: r.xlen(k.events) < before, 30, "the daemon to start removing")
    removed_from = r.xlen(k.events)
    during = write_latencies(config, 3, "with")
    removed = removed_from - r.xlen(k.events) + len(during) * 500
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    print(
        f"\nbatch of 500: without retention {len(without)} batches, max {max(without) * 1000:.1f} ms; "
        f"with retention {len(during)} batches, max {max(during) * 1000:.1f} ms, "
        f"~{removed} events removed meanwhile"
    )
    assert removed > 0 and len(during) >= 5
    # The whole backlog in one script would hold Redis for seconds; a step of
    # 1,000 holds it a few ms.
    assert max(during) < max(3 * max(without), 0.25)


def test_a_listener_keeps_storing_while_the_daemon_removes(
    store: Store,
    redis_server: redis.Redis,
    keys: Keys,
    key_prefix: str,
    env: dict[str, str],
    vhost: str,
    start_listener,
    tmp_path: Path,
) -> None:
    r, k = redis_server, keys
    fill(store, 20000)
    backlog_last = int(r.get(k.seq))
    time.sleep(RETENTION_SECONDS + 0.1)
    declare_listener_queue(vhost)
    listener = start_listener(env)
    listener.wait_consuming()
    daemon = start_daemon(daemon_env(key_prefix, retention_batch="100"), tmp_path / "retention.log")
    wait_until(lambda: r.xlen(k.events) < 20000, 30, "the daemon to start removing")
    head_before = first_seq(r, k)
    _, message_ids, bodies = notifications(3000)
    publisher = Publisher(vhost)
    try:
        assert publisher.publish_all(bodies) == 3000
    finally:
        publisher.close()
    wait_until(
        lambda: int(r.get(k.seq)) >= backlog_last + 3000, 60, "the listener to store 3,000", listener.log_tail
    )
    head_after = first_seq(r, k)
    assert listener.stop() == 0
    assert listener.stopped_totals()["stored"] == 3000
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    # Retention removed while the listener stored.
    assert head_before < head_after, (head_before, head_after)
    assert_every_index_entry_has_its_event(r, k)


def first_seq(client: redis.Redis, keys: Keys) -> int:
    head = client.xrange(keys.events, "-", "+", count=1)
    return int(head[0][0].split(b"-")[0]) if head else 0
