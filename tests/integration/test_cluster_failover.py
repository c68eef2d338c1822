"""yagi-meter on a real Redis Cluster (3 masters, 1 replica each, on loopback).

With ``[redis] cluster = true`` every daemon talks to the cluster through
redis-py's RedisCluster; with ``wait_replicas = 1`` the listener acknowledges
a batch only once a replica has it, so killing the master with SIGKILL under
load loses no acknowledged event: the replica takes over and every published
message ends up stored exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.conftest import make_config
from tests.integration.listener_helpers import (
    BackgroundPublisher,
    ListenerProcess,
    free_port,
    listener_env,
    messages_in,
    notification,
    notifications,
    wait_until,
)
from tests.servers.redis_cluster import RedisCluster
from yagi_meter.errors import ConfigError
from yagi_meter.ingest.ingestor import Ingestor, Message
from yagi_meter.store import open_store
from yagi_meter.store.keys import Keys
from yagi_meter.store.partitions import partition_of

pytestmark = pytest.mark.integration


def cluster_prefix() -> str:
    """A fresh prefix: without a hash tag, each of the 12 partitions gets its own."""
    return f"yagitest-{uuid.uuid4().hex[:8]}:"


def spread_notifications(count: int, suffix: str = "") -> tuple[list[str], list[bytes]]:
    """``count`` notifications of 40 tenants: every master gets some (``tenant-0-<suffix>``'s
    partition gets one in 40)."""
    suffix = suffix or uuid.uuid4().hex[:8]
    messages = [notification(f"tenant-{i % 40}-{suffix}", i) for i in range(count)]
    return [m["message_id"] for m in messages], [json.dumps(m).encode() for m in messages]


def events_key_of(prefix: str, suffix: str) -> str:
    """The events stream of the partition holding ``tenant-0-<suffix>``."""
    return Keys.partitions(prefix, 12)[partition_of(f"tenant-0-{suffix}", 12)].events


def stored_ids(client: redis.cluster.RedisCluster, prefix: str) -> list[str]:
    """The message_id of every event in every partition's stream."""
    ids = []
    for keys in Keys.partitions(prefix, 12):
        ids += [fields[b"m"].decode() for _, fields in client.xrange(keys.events, count=100_000)]
    return ids


def test_a_cluster_prefix_has_no_hash_tag_unless_there_is_one_partition() -> None:
    config = make_config(
        redis_url="redis://127.0.0.1:7000",
        redis_cluster="true",
        redis_key_prefix="yagi:",
        redis_partitions="auto",
    )
    assert config.redis.partition_count == 12
    with pytest.raises(ConfigError, match="must not hold"):
        make_config(redis_url="redis://127.0.0.1:7000", redis_cluster="true", redis_key_prefix="{yagi}:")
    with pytest.raises(ConfigError, match="hash tag"):
        make_config(
            redis_url="redis://127.0.0.1:7000",
            redis_cluster="true",
            redis_key_prefix="yagi:",
            redis_partitions="1",
        )
    one = make_config(
        redis_url="redis://127.0.0.1:7000",
        redis_cluster="true",
        redis_key_prefix="{y}:",
        redis_partitions="1",
    )
    assert one.redis.partition_count == 1
    with pytest.raises(ConfigError, match="over TCP"):
        make_config(redis_url="embedded", redis_cluster="true", redis_key_prefix="yagi:")


def test_a_cluster_that_does_not_answer_makes_a_daemon_exit_3_with_one_line() -> None:
    env = listener_env("amqp://guest:guest@127.0.0.1:5672/%2F", f"redis://127.0.0.1:{free_port()}", "t:")
    env["YAGI_REDIS_CLUSTER"] = "true"
    result = subprocess.run(
        [sys.executable, "-m", "yagi_meter", "listen"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3
    assert "cannot reach the Redis Cluster" in result.stderr
    assert "Traceback" not in result.stderr


def test_ingest_feeds_and_status_work_through_any_node_of_the_cluster(redis_cluster: RedisCluster) -> None:
    # The URL names the last master: the client learns the rest of the cluster from it.
    url = redis_cluster.masters[-1].url
    config = make_config(
        redis_url=url, redis_cluster="true", redis_key_prefix=cluster_prefix(), redis_partitions="12"
    )
    store = open_store(config)
    assert isinstance(store.ping(), float)
    _, ids, bodies = notifications(30, tenant_id="alpha")
    others, other_bodies = spread_notifications(90)
    summary = Ingestor(store, config).ingest(
        [Message(body, "nova/notifications.info") for body in bodies + other_bodies]
    )
    assert (summary.stored, summary.duplicates) == (120, 0)
    again = Ingestor(store, config).ingest([Message(body, "nova/notifications.info") for body in bodies[:5]])
    assert (again.stored, again.duplicates) == (0, 5)
    assert store.events.count() == 120
    assert store.gauges()["events"] == 120
    # Every master holds some of the events.
    client = redis_cluster.cluster_client()
    try:
        masters = {
            master_index_of(redis_cluster, client, k.events)
            for k in Keys.partitions(config.redis.key_prefix, 12)
        }
        assert masters == {0, 1, 2}
        assert sorted(stored_ids(client, config.redis.key_prefix)) == sorted(ids + others)
    finally:
        client.close()

    from feeds.app import create_app

    web = create_app(config, store).test_client()
    page = web.get("/tenants/alpha/events?limit=50&format=json")
    assert page.status_code == 200
    assert {entry["event"]["message_id"] for entry in page.get_json()["feed"]["entry"]} == set(ids)
    everything = web.get("/events?limit=200&format=json").get_json()["feed"]["entry"]
    assert sorted(entry["event"]["message_id"] for entry in everything) == sorted(ids + others)
    assert web.get("/health").status_code == 200


def start_listener_on(cluster: RedisCluster, vhost: str, prefix: str, log: Path) -> ListenerProcess:
    env = listener_env(vhost, cluster.masters[0].url, prefix)
    env.update(YAGI_REDIS_CLUSTER="true", YAGI_REDIS_WAIT_REPLICAS="1", YAGI_REDIS_WAIT_TIMEOUT_MS="500")
    env.update(YAGI_REDIS_PARTITIONS="12")
    env.update(YAGI_AMQP_BATCH_SIZE="50")
    listener = ListenerProcess(env, log)
    listener.wait_consuming()
    return listener


def master_index_of(cluster: RedisCluster, client: redis.cluster.RedisCluster, key: str) -> int:
    slot = client.keyslot(key)
    return next(i for i, node in enumerate(cluster.masters) if slot in node_slots(client, node.port))


def test_killing_the_master_under_load_loses_no_acknowledged_event(
    start_redis_cluster: Callable[..., RedisCluster], vhost: str, tmp_path: Path
) -> None:
    # Two replicas each: once one has taken over, the other still confirms WAIT 1.
    cluster = start_redis_cluster(masters=3, replicas=2)
    prefix = cluster_prefix()
    suffix = uuid.uuid4().hex[:8]
    events_key = events_key_of(prefix, suffix)  # the master of this partition is killed
    listener = start_listener_on(cluster, vhost, prefix, tmp_path / "listener.log")
    ids, bodies = spread_notifications(3000, suffix)
    publisher = BackgroundPublisher(vhost, bodies, rate=600)
    publisher.start()
    client = cluster.cluster_client()
    try:
        wait_until(
            lambda: client.xlen(events_key) >= 40, 30, "events stored in the partition", listener.log_tail
        )
        index = master_index_of(cluster, client, events_key)
        replicas = [node for node in cluster.replicas if node.master_index == index]
        # Replication stops (both replicas frozen) while the master goes on taking writes:
        # without WAIT those would be acknowledged and then lost with the master.
        for node in replicas:
            os.kill(node.pid, signal.SIGSTOP)
        with cluster.masters[index].client() as master:
            # Cut the links too, or the kernel would hand the frozen replicas what the
            # master sent meanwhile once they run again.
            master.client_kill_filter(_type="replica")
        # The master did take a write its replicas never got: the listener wrote a
        # batch there that no replica confirmed (so it was not acknowledged).
        listener.wait_for_log("0 of 1 replicas confirmed the write", timeout=30)
        threading.Timer(0.2, lambda: [os.kill(node.pid, signal.SIGCONT) for node in replicas]).start()
        cluster.kill_master(index)  # returns once a replica took over
        published = publisher.finish(timeout=120)
        assert published == len(bodies)
        client.close()
        client = cluster.cluster_client()
        wait_until(
            lambda: messages_in(vhost) == 0 and len(stored_ids(client, prefix)) >= published,
            120,
            "every published message stored and acknowledged",
            details=listener.log_tail,
        )
        assert sorted(stored_ids(client, prefix)) == sorted(ids)  # each once: nothing lost, nothing doubled
    finally:
        publisher.abort()
        client.close()
        listener.cleanup()


def test_a_batch_no_replica_confirms_is_not_acknowledged(
    start_redis_cluster: Callable[..., RedisCluster], vhost: str, tmp_path: Path
) -> None:
    cluster = start_redis_cluster(masters=3, replicas=1)
    prefix = cluster_prefix()
    suffix = uuid.uuid4().hex[:8]
    events_key = events_key_of(prefix, suffix)
    listener = start_listener_on(cluster, vhost, prefix, tmp_path / "listener.log")
    client = cluster.cluster_client()
    try:
        index = master_index_of(cluster, client, events_key)
        [replica] = [node for node in cluster.replicas if node.master_index == index]
        cluster.kill_replica(replica)
        _, bodies = spread_notifications(200, suffix)
        publisher = BackgroundPublisher(vhost, bodies)
        publisher.start()
        assert publisher.finish(timeout=60) == 200
        listener.wait_for_log("0 of 1 replicas confirmed the write", timeout=30)
        # Stored on the master, but not acknowledged: RabbitMQ keeps every message.
        wait_until(lambda: client.xlen(events_key) > 0, 30, "the batch written to the master")
        assert messages_in(vhost) == 200
        assert listener.running()
    finally:
        client.close()
        listener.cleanup()


def node_slots(client: redis.cluster.RedisCluster, port: int) -> set[int]:
    """The slots the node on ``port`` serves as a master, as the cluster says now."""
    slots: set[int] = set()
    for (first, last), owner in client.cluster_slots().items():
        if owner["primary"][1] == port:
            slots.update(range(first, last + 1))
    return slots
