"""``yagi-meter copy``: a store copied into another layout (partitions, a Redis Cluster) as a
real process, then compared with its source feed by feed and event by event."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from feeds.app import create_app
from tests.conftest import ROOT, TEST_REDIS_URL, child_env, make_config
from tests.feeds_support import atom_ids, tenant_message
from tests.integration.test_dictionaries import dictionary_bytes  # noqa: F401 (a fixture)
from tests.servers.redis_cluster import RedisCluster
from yagi_meter.config import Config
from yagi_meter.ingest.ingestor import Ingestor
from yagi_meter.store import Store, open_store

pytestmark = pytest.mark.integration

ARCHIVE = "http://127.0.0.1:9/archive"  # never posted to: these tests run no forwarder
TENANTS = [f"tenant-{n}" for n in range(6)]


@pytest.fixture
def target_prefix(redis_server: redis.Redis) -> Iterator[str]:
    prefix = f"yagitest-to:{uuid.uuid4().hex[:10]}:"
    yield prefix
    for key in redis_server.scan_iter(match=f"{prefix}*", count=1000):
        redis_server.delete(key)


def source_store(key_prefix: str, dictionary: bytes, count: int) -> tuple[Config, Store, list[str]]:
    """A store of ``count`` events of 6 tenants with dictionary bodies, and one conflicting
    copy; the forward outbox keeps every third event pending.  Its message ids, in order."""
    config = make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, forward_url=ARCHIVE)
    store = open_store(config)
    store.events.dictionaries.add(dictionary)
    ingestor = Ingestor(store, config)
    written = []
    for start in range(0, count, 4):
        batch = [
            tenant_message(TENANTS[n % 6], n, resource_id=f"vm-{n % 9}") for n in range(start, start + 4)
        ]
        ingestor.ingest([message for _, message in batch])
        written += [message_id for message_id, _ in batch]
    _, again = tenant_message(TENANTS[0], 1, resource_id="vm-other", message_id=written[0])
    assert ingestor.ingest([again]).conflicts == 1
    forward = store.outbox("forward")
    seqs = [store.events.seq_of(m) for m in written]
    forward.done(*[seq for i, seq in enumerate(seqs) if i % 3])
    return config, store, written


def config_file(path: Path, config: Config) -> Path:
    """The source's configuration file, as an operator would write it."""
    path.write_text(
        "[redis]\n"
        f"url = {config.redis.url}\n"
        f"key_prefix = {config.redis.key_prefix}\n"
        f"partitions = {config.redis.partition_count}\n"
        f"cluster = {'true' if config.redis.cluster else 'false'}\n"
    )
    return path


def run_copy(source_file: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run ``yagi-meter copy`` (a real process, killed if it outlives its timeout)."""
    env = child_env(YAGI_CONFIG=os.devnull, **{f"YAGI_{k.upper()}": v for k, v in settings.items()})
    return subprocess.run(
        [sys.executable, "-m", "yagi_meter", "copy", "--from-config", str(source_file)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy(source_file: Path, **settings: str) -> str:
    """``yagi-meter copy``, which must succeed; its output."""
    done = run_copy(source_file, **settings)
    assert done.returncode == 0, done.stderr
    return done.stdout


def feed(config: Config, store: Store, path: str) -> list[str]:
    response = create_app(config, store).test_client().get(path)
    assert response.status_code == 200, (path, response.data)
    return atom_ids(response.data)


def pending_forwards(store: Store, message_ids: list[str]) -> set[str]:
    by_seq = {store.events.seq_of(m): m for m in message_ids}
    return {by_seq[seq] for seq in store.outbox("forward").pending(by_seq)}


def assert_same_events(source: Store, target: Store, message_ids: list[str]) -> None:
    for message_id in message_ids:
        old, new = source.events.get(message_id), target.events.get(message_id)
        assert new is not None, message_id
        assert (new.notification_json, new.event_type, new.tenant_id, new.resource_id) == (
            old.notification_json,
            old.event_type,
            old.tenant_id,
            old.resource_id,
        )
        assert new.ingested_at == old.ingested_at  # the source's ingest time, kept
        assert new.conflict_of == old.conflict_of


def test_a_store_copied_into_partitions_has_every_event_in_the_same_order_and_goes_on_later(
    key_prefix: str,
    target_prefix: str,
    tmp_path: Path,
    dictionary_bytes: bytes,  # noqa: F811
) -> None:
    source_config, source, written = source_store(key_prefix, dictionary_bytes, 40)
    settings = {
        "redis_url": TEST_REDIS_URL,
        "redis_key_prefix": target_prefix,
        "redis_partitions": "3",
        "forward_url": ARCHIVE,
    }
    target_config = make_config(**settings)
    source_file = config_file(tmp_path / "source.conf", source_config)

    out = copy(source_file, **settings)
    assert out.startswith(
        f"copied 41 events from {source_file}: stored 41, duplicates 0, conflicts 0, undecodable 0"
    )
    assert "forward outbox: 15 entries here, 0 pending" in out
    target = open_store(target_config)
    assert target.partitions == 3 and target.events.count() == source.events.count() == 41
    copy_id = feed(source_config, source, "/events?limit=1")[0]  # the conflicting copy, newest
    everything = [*written, copy_id]
    assert_same_events(source, target, everything)
    # The same order in every merged and per-tenant feed, newest first.
    for path in (
        "/events?limit=100",
        f"/tenants/{TENANTS[0]}/events?limit=100",
        "/events?marker=last&limit=100",
    ):
        assert feed(target_config, target, path) == feed(source_config, source, path), path
    assert feed(target_config, target, "/events?limit=100") == everything[::-1]
    # What was still to forward is still to forward, and nothing else; nothing to push.
    assert pending_forwards(target, everything) == pending_forwards(source, everything)
    assert len(pending_forwards(target, everything)) == 14 + 1  # and the conflicting copy
    assert target.outbox("push").backlog() == 0
    assert target.events.dictionaries.current() is not None  # the source's, adopted

    # Again: nothing new.  Then the source's later events, and only those.
    assert copy(source_file, **settings).startswith(f"copied 0 events from {source_file}")
    later = [tenant_message(TENANTS[n % 6], n) for n in range(3)]
    Ingestor(source, source_config).ingest([message for _, message in later])
    out = copy(source_file, **settings)
    assert out.startswith(f"copied 3 events from {source_file}: stored 3, duplicates 0")
    assert feed(target_config, target, "/events?limit=100") == feed(
        source_config, source, "/events?limit=100"
    )


def test_the_copy_refuses_to_copy_a_store_into_itself(key_prefix: str, tmp_path: Path) -> None:
    config = make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix)
    source_file = config_file(tmp_path / "same.conf", config)
    done = run_copy(source_file, redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix)
    assert done.returncode == 2
    assert "names this store" in done.stderr


@pytest.mark.slow
def test_a_single_redis_store_copied_onto_a_cluster(
    redis_cluster: RedisCluster,
    key_prefix: str,
    tmp_path: Path,
    dictionary_bytes: bytes,  # noqa: F811
) -> None:
    source_config, source, written = source_store(key_prefix, dictionary_bytes, 60)
    settings = {
        "redis_url": redis_cluster.masters[2].url,
        "redis_cluster": "true",
        "redis_partitions": "12",
        "redis_key_prefix": f"yagitest-{uuid.uuid4().hex[:8]}:",
        "forward_url": ARCHIVE,
    }
    out = copy(config_file(tmp_path / "source.conf", source_config), **settings)
    assert "stored 61, duplicates 0, conflicts 0, undecodable 0" in out
    target_config = make_config(**settings)
    target = open_store(target_config)
    assert target.events.count() == 61
    # Spread over the masters' partitions, and read back merged in the source's order.
    assert {target.events.split(target.events.seq_of(m))[0] * 3 // 12 for m in written} == {0, 1, 2}
    assert feed(target_config, target, "/events?limit=100") == feed(
        source_config, source, "/events?limit=100"
    )
    assert_same_events(source, target, written)
    assert pending_forwards(target, written) == pending_forwards(source, written)
