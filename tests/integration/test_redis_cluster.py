"""The Redis Cluster test server (tests/servers/redis_cluster.py): it forms, spreads keys by
hash tag over its masters, survives the loss of a master, and leaves no process behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

import tests.servers.redis_cluster as redis_cluster_module
from tests.conftest import ROOT, need_redis_server
from tests.servers.redis_cluster import SLOTS, ClusterError, Node, RedisCluster

# Keys with these hash tags fall in slots 3300, 7365 and 15495: one in each third of
# the slot space, so on 3 masters (slots split evenly) each lands on a different master.
TAGS = ("b", "c", "a")


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (a reaped child no longer does)."""
    return Path(f"/proc/{pid}").exists()


def acked_by_replica(master: Node, key: str) -> int:
    """SET ``key`` to 1 on ``master`` and WAIT for one replica, on one connection
    (WAIT counts the replicas that have this connection's writes)."""
    pipe = master.client().pipeline(transaction=False)
    pipe.set(key, 1)
    pipe.wait(1, 5000)
    return pipe.execute()[1]


def test_three_masters_form_and_hash_tags_land_on_different_masters(redis_cluster: RedisCluster) -> None:
    masters = redis_cluster.masters
    assert len(masters) == 3 and len(redis_cluster.replicas) == 3
    assert len({node.pid for node in redis_cluster.nodes}) == 6
    assert all(alive(node.pid) for node in redis_cluster.nodes)
    client = redis_cluster.cluster_client()
    slots = client.cluster_slots()  # {(first, last): {"primary": (host, port), "replicas": [...]}}
    assert sum(last - first + 1 for first, last in slots) == SLOTS
    assert {owner["primary"][1] for owner in slots.values()} == {node.port for node in masters}

    keys = [f"{{{tag}}}:events" for tag in TAGS]
    for key in keys:
        client.set(key, key)

    # What each master holds, asked of it alone (KEYS is local to a node).
    assert [set(node.client().keys("*")) for node in masters] == [{key} for key in keys]
    for i, master in enumerate(masters):
        assert acked_by_replica(master, keys[i] + ":waited") == 1
    for replica in redis_cluster.replicas:
        local = replica.client()
        local.execute_command("READONLY")
        key = keys[replica.master_index] + ":waited"
        assert local.get(key) == "1"


def test_cluster_survives_kill_9_of_a_master(start_redis_cluster) -> None:
    cluster = start_redis_cluster(masters=3, replicas=1)
    client = cluster.cluster_client()
    key = f"{{{TAGS[0]}}}:counter"  # held by master 0
    assert acked_by_replica(cluster.masters[0], key) == 1
    dead = cluster.masters[0]
    replica = next(node for node in cluster.replicas if node.master_index == 0)

    promoted = cluster.kill_master(0)

    assert promoted is replica and not alive(dead.pid) and alive(replica.pid)
    assert replica.client().info("replication")["role"] == "master"
    fresh = cluster.cluster_client()
    assert fresh.get(key) == b"1"  # acked with WAIT before the kill: not lost
    fresh.incr(key)
    assert fresh.get(key) == b"2"
    assert fresh.get_node_from_key(key).port == replica.port
    # Writes to every master go on, through a client that had the old topology too.
    for tag in TAGS:
        client.set(f"{{{tag}}}:after", "ok")
        assert fresh.get(f"{{{tag}}}:after") == b"ok"


def test_stop_kills_every_process_and_removes_its_files_with_aof() -> None:
    need_redis_server()
    with RedisCluster(masters=1, replicas=1, appendonly=True) as cluster:
        pids = [node.pid for node in cluster.nodes]
        directories = [node.directory for node in cluster.nodes]
        assert all(alive(pid) for pid in pids)
        master = cluster.masters[0].client()
        assert master.config_get("appendonly") == {"appendonly": "yes"}
        master.set("k", "v")
        assert (directories[0] / "appendonlydir").is_dir()
    assert pids == cluster.started_pids
    assert not any(alive(pid) for pid in pids)
    assert not any(directory.exists() for directory in directories)


def test_a_failed_start_leaves_no_process() -> None:
    need_redis_server()
    cluster = RedisCluster(masters=3, extra_args=lambda i: ["--no-such-option", "x"] if i == 2 else [])
    with pytest.raises(ClusterError, match="exited"):
        cluster.start()
    assert len(cluster.started_pids) == 3
    assert not any(alive(pid) for pid in cluster.started_pids)


def test_fixture_finalizer_kills_the_cluster_even_when_its_test_fails(tmp_path: Path) -> None:
    """Run a failing test that uses the ``redis_cluster`` fixture in a pytest of its own;
    once that pytest has exited, none of the pids the fixture started may remain
    (the servers run in sessions of their own: only the finalizer kills them)."""
    need_redis_server()
    pids_file = tmp_path / "pids"
    test_file = tmp_path / "test_uses_cluster.py"
    test_file.write_text(
        textwrap.dedent(
            f"""
            from tests.conftest import redis_cluster  # noqa: F401 (the fixture under test)

            def test_fails(redis_cluster):
                with open({str(pids_file)!r}, "w") as f:
                    f.write(" ".join(str(pid) for pid in redis_cluster.started_pids))
                assert False, "failing on purpose"
            """
        )
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            test_file,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 failed" in run.stdout, run.stdout + run.stderr
    pids = [int(pid) for pid in pids_file.read_text().split()]
    assert len(pids) == 6
    assert not any(alive(pid) for pid in pids)


def test_a_script_may_touch_keys_of_one_slot_only(redis_cluster: RedisCluster) -> None:
    """Why every key of the store shares one hash tag today: the ingest script writes
    all of an event's keys at once, and a node refuses a script over several slots."""
    cluster_client = redis_cluster.cluster_client()
    first = redis_cluster.masters[0]
    # Two tags in different slots that are both held by master 0.
    other = next(
        f"t{i}"
        for i in range(10000)
        if cluster_client.keyslot(f"{{t{i}}}") < SLOTS // 3
        and cluster_client.keyslot(f"{{t{i}}}") != cluster_client.keyslot("{b}")
    )
    script = "redis.call('SET', KEYS[1], 1) return redis.call('SET', KEYS[2], 1)"
    with pytest.raises(redis.ResponseError, match="same slot"):
        first.client().eval(script, 2, "{b}:x", f"{{{other}}}:x")
    assert first.client().eval(script, 2, "{b}:x", "{b}:y") == "OK"


def test_a_port_taken_meanwhile_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Free ports can be taken by another process before redis-server binds them: the
    server is started again on others (here the first pair offered is held by a listener)."""
    need_redis_server()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    offered: list[list[int]] = []
    real_free_ports = redis_cluster_module._free_ports

    def free_ports(count: int) -> list[int]:
        ports = (
            [busy.getsockname()[1], *real_free_ports(count - 1)] if not offered else real_free_ports(count)
        )
        offered.append(ports)
        return ports

    monkeypatch.setattr(redis_cluster_module, "_free_ports", free_ports)
    try:
        with RedisCluster(masters=1) as cluster:
            assert len(cluster.started_pids) == 2 and not alive(cluster.started_pids[0])
            assert cluster.masters[0].port == offered[1][0] != busy.getsockname()[1]
            assert cluster.cluster_client().set("{a}:k", 1)
    finally:
        busy.close()
    assert not any(alive(pid) for pid in cluster.started_pids)
