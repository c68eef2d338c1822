"""Redis loses recent writes (no persistence, FLUSHDB, RDB restore, lagging replica) and seqs
are given out again: no cache, ETag or push entry may mistake a new event for an old one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis

from feeds.app import create_app
from tests.conftest import make_config
from tests.feeds_support import atom_ids, tenant_message
from tests.integration.listener_helpers import RedisServer
from yagi_meter.config import Config
from yagi_meter.ingest.ingestor import Ingestor
from yagi_meter.store import open_store
from yagi_meter.store.epoch import SeqWatch
from yagi_meter.websub.delivery import EntryCache

pytestmark = [pytest.mark.integration, pytest.mark.one_partition]


def ingest(ingestor: Ingestor, tenant: str, count: int) -> list[str]:
    ids = []
    for number in range(count):
        message_id, message = tenant_message(tenant, number)
        assert ingestor.ingest([message]).stored == 1
        ids.append(message_id)
    return ids


def lose_everything(client: redis.Redis, key_prefix: str) -> None:
    """What a restart without persistence or a FLUSHDB does to this test's keys."""
    for key in client.scan_iter(match=f"{key_prefix}*", count=1000):
        client.delete(key)


def test_after_redis_loses_its_data_seqs_given_out_again_never_serve_the_old_events(
    config: Config, redis_server: redis.Redis, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(config)
    ingestor = Ingestor(store, config)
    client = create_app(config, store).test_client()
    push_entries = EntryCache(store, config.base_url)

    a_ids = ingest(ingestor, "tenant-a", 3)
    a_feed = client.get("/tenants/tenant-a/events")
    everything = client.get("/events")
    assert atom_ids(a_feed.data) == a_ids[::-1]
    a_etag, all_etag = a_feed.headers["ETag"], everything.headers["ETag"]
    assert client.get("/events", headers={"If-None-Match": all_etag}).status_code == 304
    assert all(b"tenant-a" in e.xml for e in push_entries.get_many([1, 2, 3]))
    old_epoch = redis_server.get(f"{key_prefix}epoch").decode()

    lose_everything(redis_server, key_prefix)
    with caplog.at_level(logging.WARNING, logger="yagi_meter.store.epoch"):
        b_ids = ingest(ingestor, "tenant-b", 3)
        assert [store.events.seq_of(m) for m in b_ids] == [1, 2, 3]  # the same seqs as A's
        new_epoch = redis_server.get(f"{key_prefix}epoch").decode()
        assert new_epoch != old_epoch

        b_feed = client.get("/tenants/tenant-b/events")
        assert atom_ids(b_feed.data) == b_ids[::-1]
        assert b"tenant-a" not in b_feed.data
        everything = client.get("/events", headers={"If-None-Match": all_etag})
        assert everything.status_code == 200
        assert atom_ids(everything.data) == b_ids[::-1] and b"tenant-a" not in everything.data
        assert client.get("/tenants/tenant-a/events", headers={"If-None-Match": a_etag}).status_code == 404
        entry = client.get(f"/events/{b_ids[0]}")
        assert b"tenant-b" in entry.data and b"tenant-a" not in entry.data

        pushed = push_entries.get_many([1, 2, 3])
        assert [e.seq for e in pushed] == [1, 2, 3]
        assert all(b"tenant-b" in e.xml and b"tenant-a" not in e.xml for e in pushed)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(old_epoch in w and new_epoch in w for w in warnings), warnings


def test_an_rdb_restore_under_the_same_epoch_gets_a_new_epoch_before_any_seq_is_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis restarts from a snapshot taken at seq 2 after seqs 3-5 were served and cached."""
    server = RedisServer(tmp_path, persistence=("--save", "", "--appendonly", "no"))
    server.start()
    try:
        config = make_config(redis_url=server.url, redis_key_prefix="rdb:")
        store = open_store(config, client=redis.Redis.from_url(server.url, socket_timeout=5))
        ingestor = Ingestor(store, config)
        client = create_app(config, store).test_client()
        push_entries = EntryCache(store, config.base_url)
        ingest(ingestor, "tenant-a", 2)
        server.client().save()  # the snapshot
        ingest(ingestor, "tenant-a", 3)
        everything = client.get("/events")
        assert all(b"tenant-a" in e.xml for e in push_entries.get_many([3, 4, 5]))
        old_epoch = store.events.position()[0]

        server.kill()
        server.start()  # loads the snapshot: seq 2, the same epoch
        assert server.client().get("rdb:seq") == b"2"
        with caplog.at_level(logging.WARNING, logger="yagi_meter.store.epoch"):
            b_ids = ingest(ingestor, "tenant-b", 3)
        assert [store.events.seq_of(m) for m in b_ids] == [3, 4, 5]  # seqs given out again
        new_epoch = store.events.position()[0]
        assert new_epoch != old_epoch
        [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert old_epoch in warning and new_epoch in warning and "seq 5" in warning

        pushed = push_entries.get_many([3, 4, 5])
        assert all(b"tenant-b" in e.xml and b"tenant-a" not in e.xml for e in pushed)
        again = client.get("/events", headers={"If-None-Match": everything.headers["ETag"]})
        assert again.status_code == 200
        assert atom_ids(again.data)[:3] == b_ids[::-1]
        b_feed = client.get("/tenants/tenant-b/events")
        assert atom_ids(b_feed.data) == b_ids[::-1] and b"tenant-a" not in b_feed.data
    finally:
        server.kill()


def test_the_watch_says_nothing_while_seq_only_grows() -> None:
    watch = SeqWatch()
    assert not any(watch.observe("e1", seq) for seq in (0, 1, 1, 5, 9))
    assert watch.observe("e2", 1) and watch.generation == 1
    assert not watch.observe("e2", 2)
