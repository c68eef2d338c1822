"""Capacity benchmark: Redis memory per event of today's store, and its spread over a Redis Cluster.

    .venv/bin/python bench/capacity.py [--messages 20000] [--tenants 50]

Builds the same realistic nova notifications as bench/ingest.py (its
``build_bodies``: the real samples of tests/fixtures/notifications/nova-versioned,
unique message_id, timestamp and request context, tenants and instances
spread, the oslo.messaging 2.0 envelope) and stores them through yagi_meter's
Ingestor, in batches of ``[amqp] batch_size``, with the default settings (push
outbox on, forwarding off) under the key prefix ``{yagi}:`` (the hash tag the
configuration asks for on a Redis Cluster), into a private redis-server this
script starts on a free loopback port (so nobody else's keys move INFO memory)
and kills at the end.  Once with ``[redis] compress`` on (the default), once
off, each on a fresh server.

Prints per event: the raw message body and the notification inside it, the
growth of INFO ``used_memory`` over the run, MEMORY USAGE (SAMPLES 0: exact)
of each key family and the stream fields' own bytes; then copies every key
(DUMP/RESTORE) into a 3-master Redis Cluster from tests/servers and prints
where the keys and the memory land: under ``{yagi}:`` (today's layout) and,
for comparison, with each key in its own slot (no hash tag; a layout the
ingest script cannot run on, since one script touches every family).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import build_bodies  # noqa: E402
from tests.servers.redis_cluster import RedisCluster, standalone_redis  # noqa: E402
from yagi_meter import config as config_module  # noqa: E402
from yagi_meter.ingest.ingestor import Ingestor, Message  # noqa: E402
from yagi_meter.store import open_store  # noqa: E402

PREFIX = "{yagi}:"
# Key families named by their first part, whatever follows (one key per tenant, resource, type).
PER_ID_FAMILIES = ("tenant", "resource", "type")
SCAN_COUNT = 1000


@dataclass(frozen=True)
class Run:
    """What one ingest run left in its private Redis."""

    compress: bool
    seconds: float
    used_memory_delta: int
    families: dict[str, tuple[int, int]]  # family -> (keys, MEMORY USAGE bytes)
    stream_fields: dict[str, int]  # events stream field -> bytes of its values, all entries


def family_of(key: str) -> str:
    """``tenant:<t>`` -> ``tenant:*``; any other key keeps its name (without the prefix)."""
    name = key[len(PREFIX) :]
    head = name.split(":", 1)[0]
    return f"{head}:*" if head in PER_ID_FAMILIES else name


def ingest(client: redis.Redis, bodies: list[bytes], compress: bool) -> Run:
    """Store ``bodies`` as the listener would (same Ingestor, same batch size) and measure."""
    config = config_module.load(
        environ={
            "YAGI_CONFIG": os.devnull,
            "YAGI_REDIS_KEY_PREFIX": PREFIX,
            "YAGI_REDIS_COMPRESS": "true" if compress else "false",
        }
    )
    ingestor = Ingestor(open_store(config, client=client), config)
    batch = config.amqp.batch_size
    before = client.info("memory")["used_memory"]
    began = time.perf_counter()
    for start in range(0, len(bodies), batch):
        summary = ingestor.ingest([Message(body, "bench") for body in bodies[start : start + batch]])
        if summary.stored != len(bodies[start : start + batch]):
            raise RuntimeError(f"stored {summary.stored} of a batch of {batch}: {summary}")
    seconds = time.perf_counter() - began
    delta = client.info("memory")["used_memory"] - before
    return Run(compress, seconds, delta, families(client), stream_fields(client))


def families(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Key count and exact MEMORY USAGE of each key family."""
    found: dict[str, tuple[int, int]] = {}
    for key in client.scan_iter(match=PREFIX + "*", count=SCAN_COUNT):
        family = family_of(key.decode())
        keys, size = found.get(family, (0, 0))
        found[family] = (keys + 1, size + (client.memory_usage(key, samples=0) or 0))
    return found


def stream_fields(client: redis.Redis) -> dict[str, int]:
    """Bytes of each field's values over every entry of the events stream."""
    sizes: dict[str, int] = {}
    last = "-"
    while entries := client.xrange(PREFIX + "events", min=last, count=SCAN_COUNT):
        for _, fields in entries:
            for name, value in fields.items():
                sizes[name.decode()] = sizes.get(name.decode(), 0) + len(value)
        last = "(" + entries[-1][0].decode()
    return sizes


def spread(source: redis.Redis, cluster: RedisCluster, rename: str) -> list[tuple[int, int, int]]:
    """Copy every key of ``source`` into ``cluster`` (prefix replaced by ``rename``) and give,
    per master: keys held, INFO used_memory growth, MEMORY USAGE of its keys.  Removes them after."""
    masters = cluster.masters
    before = [node.client().info("memory")["used_memory"] for node in masters]
    target = cluster.cluster_client()
    for key in source.scan_iter(match=PREFIX + "*", count=SCAN_COUNT):
        target.restore(rename + key.decode()[len(PREFIX) :], 0, source.dump(key), replace=True)
    result = []
    for node, used in zip(masters, before, strict=True):
        local = node.client()
        keys = list(local.scan_iter(count=SCAN_COUNT))
        usage = sum(local.memory_usage(key, samples=0) or 0 for key in keys)
        result.append((len(keys), local.info("memory")["used_memory"] - used, usage))
    for node in masters:
        node.client().flushall()
    return result


def print_run(run: Run, count: int, raw: float, inner: float) -> None:
    per_event = run.used_memory_delta / count
    usage_total = sum(size for _, size in run.families.values())
    print(
        f"\n[redis] compress = {str(run.compress).lower()}: {count:,} events stored in "
        f"{run.seconds:.1f} s ({count / run.seconds:,.0f}/s in one process, Ingestor only)"
    )
    print(
        f"  INFO used_memory growth {per_event:,.0f} bytes/event = {per_event / raw:.2f} x the raw body, "
        f"{per_event / inner:.2f} x the notification"
    )
    print(f"  {'key family':<24} {'keys':>6} {'bytes/event':>12} {'share':>6} {'x notification':>15}")
    for family, (keys, size) in sorted(run.families.items(), key=lambda item: -item[1][1]):
        if size / count < 0.05:
            continue
        print(
            f"  {family:<24} {keys:>6,} {size / count:>12,.1f} {size / usage_total:>6.1%} "
            f"{size / count / inner:>15.3f}"
        )
    print(
        f"  {'MEMORY USAGE, all keys':<24} {sum(k for k, _ in run.families.values()):>6,} "
        f"{usage_total / count:>12,.1f} {1:>6.0%} {usage_total / count / inner:>15.3f}"
    )
    fields = ", ".join(f"{name} {size / count:,.1f}" for name, size in run.stream_fields.items())
    print(f"  events stream, field values per event: {fields} (d: the stored body)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--tenants", type=int, default=50)
    args = parser.parse_args(argv)

    bodies = build_bodies(args.messages, args.tenants)
    raw = statistics.mean(len(body) for body in bodies)
    inner = statistics.mean(len(json.loads(body)["oslo.message"].encode()) for body in bodies)
    print(
        f"{args.messages:,} nova notifications, {args.tenants} tenants: raw body (oslo envelope) "
        f"{raw:,.0f} bytes/event, the notification inside it {inner:,.0f} bytes/event"
    )
    runs = {}
    for compress in (True, False):
        with standalone_redis() as client:
            version = client.info("server")["redis_version"]
            runs[compress] = run = ingest(client, bodies, compress)
            print_run(run, args.messages, raw, inner)
            if compress:
                with RedisCluster(masters=3) as cluster:
                    layouts = {
                        f"{PREFIX} (today: one hash tag)": spread(client, cluster, PREFIX),
                        "yagi: (no hash tag, each key its own slot)": spread(client, cluster, "yagi:"),
                    }
    print(f"\nRedis {version}. The compressed run's keys copied into a 3-master Redis Cluster:")
    print(f"  {'layout':<44} {'master':>6} {'keys':>6} {'used_memory +MB':>16} {'MEMORY USAGE MB':>16}")
    for layout, masters in layouts.items():
        total = sum(usage for _, _, usage in masters) or 1
        for i, (keys, grown, usage) in enumerate(masters):
            print(
                f"  {layout if i == 0 else '':<44} {i:>6} {keys:>6,} {grown / 1e6:>16.1f} "
                f"{usage / 1e6:>16.1f}  ({usage / total:.0%})"
            )
    compressed = runs[True].used_memory_delta / args.messages
    print(
        f"\nratios: used_memory/event over raw body {compressed / raw:.2f} (compressed), "
        f"{runs[False].used_memory_delta / args.messages / raw:.2f} (plain); over the notification "
        f"{compressed / inner:.2f} (compressed); target <= 0.30"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
