"""Script calls sent per node before any reply is read, with WAIT for replicas (store/nodes.py),
on the test Redis and on a real 3-master Redis Cluster with one replica each."""

from __future__ import annotations

import uuid

import pytest
import redis

from tests.servers.redis_cluster import RedisCluster
from yagi_meter.errors import StoreError
from yagi_meter.store.nodes import Call, PendingCalls, ReplicasBehind
from yagi_meter.store.partitions import partition_tag as tag

pytestmark = pytest.mark.integration

# Appends ARGV[1] to the list KEYS[1] and returns the list's length.
APPEND = "return redis.call('RPUSH', KEYS[1], ARGV[1])"


def keys_over_partitions(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{{{tag(i, count)}}}:list" for i in range(count)]


def test_calls_to_one_redis_are_answered_in_call_order(redis_server: redis.Redis, key_prefix: str) -> None:
    script = redis_server.register_script(APPEND)
    keys = keys_over_partitions(key_prefix, 6)
    calls = [Call(script, [key], [f"v{i}"]) for i, key in enumerate(keys)] + [Call(script, [keys[0]], ["w"])]
    replies = PendingCalls(redis_server, calls).replies()
    assert replies == [1, 1, 1, 1, 1, 1, 2]
    assert redis_server.lrange(keys[0], 0, -1) == [b"v0", b"w"]


def test_a_script_the_server_lost_is_loaded_again(redis_server: redis.Redis, key_prefix: str) -> None:
    # A unique script, so flushing it from the cache touches no other test's script.
    script = redis_server.register_script(APPEND + f" -- {uuid.uuid4().hex}")
    key = keys_over_partitions(key_prefix, 1)[0]
    assert PendingCalls(redis_server, [Call(script, [key], ["a"])]).replies() == [1]
    redis_server.script_flush()  # what a restarted Redis has: no scripts at all
    assert PendingCalls(redis_server, [Call(script, [key], ["b"])]).replies() == [2]


def test_waiting_for_a_replica_that_does_not_exist_fails_the_write(
    redis_server: redis.Redis, key_prefix: str
) -> None:
    script = redis_server.register_script(APPEND)
    key = keys_over_partitions(key_prefix, 1)[0]
    with pytest.raises(ReplicasBehind, match="0 of 1 replicas"):
        PendingCalls(redis_server, [Call(script, [key], ["a"])], wait=(1, 50)).replies()
    assert isinstance(ReplicasBehind("x"), StoreError)


def test_on_a_cluster_each_call_goes_to_its_master_and_waits_for_its_replica(
    redis_cluster: RedisCluster,
) -> None:
    client = redis_cluster.cluster_client()
    try:
        check_calls_on_a_cluster(redis_cluster, client)
    finally:
        client.close()


def check_calls_on_a_cluster(redis_cluster: RedisCluster, client: redis.RedisCluster) -> None:
    script = client.register_script(APPEND)
    keys = keys_over_partitions(f"yagitest:{uuid.uuid4().hex[:8]}:", 6)
    calls = [Call(script, [key], [f"v{i}"]) for i, key in enumerate(keys)]
    assert PendingCalls(client, calls, wait=(1, 5000)).replies() == [1] * 6
    # Partitions 0-1, 2-3 and 4-5 hash into the thirds of the slot space: one master each.
    held = []
    for node in redis_cluster.masters:
        with node.client() as local:
            held.append(set(local.keys("*")))
    assert held == [set(keys[2 * i : 2 * i + 2]) for i in range(3)]
    # WAIT returned 1: each replica has its master's keys already.
    for replica in redis_cluster.replicas:
        with replica.client() as local:
            local.execute_command("READONLY")
            mine = keys[2 * replica.master_index : 2 * replica.master_index + 2]
            assert [local.lrange(key, 0, -1) for key in mine] == [[f"v{keys.index(k)}"] for k in mine]
    with pytest.raises(ReplicasBehind, match="of 2 replicas"):
        PendingCalls(client, calls, wait=(2, 50)).replies()
