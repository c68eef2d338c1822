"""Capacity benchmark: Redis memory per event of today's store, on one Redis and on a Redis Cluster.

    .venv/bin/python bench/capacity.py [--messages 20000] [--tenants 200] [--passes 3]

Builds the same realistic nova notifications as bench/ingest.py (its
``build_bodies``: the real samples of tests/fixtures/notifications/nova-versioned,
unique message_id, timestamp and request context, tenants and instances
spread, the oslo.messaging 2.0 envelope) and stores them through yagi_meter's
Ingestor (store from ``open_store(config)``), in batches of ``[amqp]
batch_size``, with the default settings (key prefix ``yagi:``, push outbox
on, forwarding off), into redis-servers this script starts on free loopback
ports (so nobody else's keys move INFO memory) and kills at the end, fresh
for each run.

Single Redis (``[redis] partitions`` auto = 1), three codecs: ``[redis]
compress`` on without a dictionary (zlib, what a store writes until it has
one), on with a zstd dictionary (codec.py's ``d`` bodies), and off.  The
dictionary is trained first the way ``yagi-meter dictionary train`` does
(store/dictionaries.py's ``train``: ``--train`` other events, other tenants,
ids and times, stored with zlib into a private server of their own) and added
to the measured store before its events (its 64 KB are in the measured growth).
Also the CPU of codec.py's encode and decode alone, per event, on 5,000 parsed
events, and of encode with the CPU caches cleared before each event (as when
each event is parsed between two encodings: the dictionary's tables are then cold).

Redis Cluster: 3 masters from tests/servers (equal slot ranges), ``[redis]
cluster = true`` (partitions auto = 12: 4 hash-tagged partitions per master),
zlib, the same bodies; and a control, one Redis with ``[redis] partitions =
12`` (what the partitioning costs by itself, without three servers sharing
the machine's cores).  Against the single Redis's zlib run:

1. memory per event: INFO ``used_memory`` growth (summed over the masters) / events;
2. the spread over the masters: keys (DBSIZE) and ``used_memory`` growth per master;
3. Redis work: INFO commandstats ``usec`` summed over every command (stats reset
   with CONFIG RESETSTAT just before the ingest; a script's own commands count
   in their stats and again in EVALSHA's), EVALSHA alone, and the server's own
   CPU (INFO used_cpu_user + used_cpu_sys), per master and per event, from each
   target's pass with the least commandstats time (the least disturbed); and the
   commands each master ran (commandstats ``calls``): work counted, not timed, which
   the order a batch's calls are sent in cannot move (``usec`` is wall time: on a
   machine with fewer cores than servers, the master sent to first waits for a core
   while the client sends to the others);
4. ingest rate (Ingestor only, one process), best of ``--passes`` passes; each
   pass runs single zlib, cluster, control and single dictionary, each on fresh
   servers, in the reverse order every other pass (the machine is shared: the
   best pass is the least disturbed);
5. feed page latency: the median of ``--requests`` GETs of the head page of
   ``/events?limit=25`` (every partition merged) and of one tenant's
   ``/tenants/<t>/events?limit=25`` (one partition; the tenant with the median
   number of events) through the Flask test client (``feeds.app.create_app``)
   with the feed caches off (``[feeds] cache_entries = 0``), on the first pass's
   single, cluster and control stores, asked in turn; then the reads (page.lua
   calls and MULTI/EXECs) and commandstats time of ``PROFILED`` more requests of
   each page.

Prints per event: the raw message body and the notification inside it, the
growth of INFO ``used_memory`` over the run, MEMORY USAGE (SAMPLES 0: exact)
of each key family and the stream fields' own bytes, for each codec and for
the cluster; then the cluster's figures as ratios to the single Redis's.
Every redis-server it starts is killed on the way out, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
from redis.crc import key_slot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import build_bodies  # noqa: E402
from feeds.app import create_app  # noqa: E402
from tests.servers.redis_cluster import SLOTS, RedisCluster, standalone_redis  # noqa: E402
from yagi_meter import config as config_module  # noqa: E402
from yagi_meter.config import Config  # noqa: E402
from yagi_meter.ingest.ingestor import Ingestor, Message  # noqa: E402
from yagi_meter.notification import parse  # noqa: E402
from yagi_meter.store import codec as store_codec  # noqa: E402
from yagi_meter.store import open_store  # noqa: E402
from yagi_meter.store.dictionaries import train  # noqa: E402
from yagi_meter.store.keys import Keys  # noqa: E402

CODECS = ("zlib", "dictionary", "plain")
CLUSTER = "cluster"  # the cluster run: zlib, 12 partitions over 3 masters
# A control: one Redis with [redis] partitions = 12 (zlib): what the partitioning costs
# by itself, without a cluster's three servers sharing the machine's cores.
PARTITIONED = "partitioned"
KINDS = ("zlib", CLUSTER, PARTITIONED, "dictionary")  # the runs of each pass (reversed every other pass)
KEPT = ("zlib", CLUSTER, PARTITIONED)  # kept until each is filled, for the feed pages

PREFIX = "yagi:"  # the default: no braces, so each partition's keys get a hash tag of their own
MASTERS = 3
CLUSTER_PARTITIONS = 12  # [redis] partitions auto with cluster = true
# Key families named by their first part, whatever follows (one key per tenant, resource, type).
PER_ID_FAMILIES = ("tenant", "resource", "type")
PER_TENANT_CATALOGS = ("catalog:resources:", "catalog:tenant_types:")  # then <t>, maybe :stats
SCAN_COUNT = 1000
# Commands the bench sends itself around a run (not the store's work).
PROBES = ("info", "config|resetstat")
PROFILED = 20  # requests of each feed page whose Redis commands are counted
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")


@dataclass
class Target:
    """Where a run stores: one private redis-server, or a private 3-master cluster."""

    name: str  # "single", CLUSTER or PARTITIONED
    url: str
    nodes: list[redis.Redis]  # a plain client of each master (the one server for a single Redis)
    client: redis.Redis | redis.cluster.RedisCluster  # routes each key to its node
    partitions: int = 1

    @property
    def cluster(self) -> bool:
        return self.name == CLUSTER

    def master_of(self, key: str) -> int:
        """Index (in ``nodes``) of the master holding ``key``."""
        return master_of(key) if self.cluster else 0


def master_of(key: str) -> int:
    """The cluster master holding ``key``: RedisCluster gives master i the i-th of equal slot ranges."""
    slot = key_slot(key.encode())
    return next(i for i in range(MASTERS) if slot < (i + 1) * SLOTS // MASTERS)


@contextmanager
def single_redis(partitions: int = 1) -> Iterator[Target]:
    """A private redis-server on loopback, killed on leaving (standalone_redis)."""
    with standalone_redis() as client:
        port = client.connection_pool.connection_kwargs["port"]
        name = "single" if partitions == 1 else PARTITIONED
        yield Target(name, f"redis://127.0.0.1:{port}", [client], client, partitions)


@contextmanager
def redis_cluster() -> Iterator[Target]:
    """A private 3-master Redis Cluster on loopback (tests/servers), every server killed on leaving."""
    cluster = RedisCluster(masters=MASTERS)
    try:
        cluster.start()
        client = cluster.cluster_client()
        try:
            nodes: list[redis.Redis] = [node.client() for node in cluster.masters]
            yield Target(CLUSTER, cluster.url, nodes, client, CLUSTER_PARTITIONS)
        finally:
            client.close()
    finally:
        cluster.stop()


def open_target(kind: str) -> AbstractContextManager[Target]:
    if kind == CLUSTER:
        return redis_cluster()
    return single_redis(CLUSTER_PARTITIONS if kind == PARTITIONED else 1)


@dataclass(frozen=True)
class Run:
    """What one ingest run left in its private Redis (lists: one item per master)."""

    codec: str  # one of CODECS
    target: str  # "single", CLUSTER or PARTITIONED
    seconds: float
    memory: list[int]  # INFO used_memory growth
    keys: list[int]  # DBSIZE after the run
    events: list[int]  # events stored (XLEN of the partitions' streams)
    tenants: list[int]  # tenants with events (ZCARD of the partitions' catalog:tenants)
    usec: list[int]  # INFO commandstats usec, every command the store sent and the ones its scripts ran
    script_usec: list[int]  # of which EVALSHA (and the like) alone: the scripts' whole time
    commands: list[int]  # INFO commandstats calls, every command: work counted, not timed
    cpu: list[float]  # INFO used_cpu_user + used_cpu_sys growth, seconds: the server's own CPU
    families: dict[str, tuple[int, int]]  # family -> (keys, MEMORY USAGE bytes)
    stream_fields: dict[str, int]  # events stream field -> bytes of its values, all entries

    @property
    def used_memory_delta(self) -> int:
        return sum(self.memory)


def config_for(target: Target, codec: str) -> Config:
    """Default settings, pointed at ``target`` (``[redis] cluster = true`` for the cluster)."""
    environ = {
        "YAGI_CONFIG": os.devnull,
        "YAGI_REDIS_URL": target.url,
        "YAGI_REDIS_KEY_PREFIX": PREFIX,
        "YAGI_REDIS_COMPRESS": "false" if codec == "plain" else "true",
        "YAGI_FEEDS_CACHE_ENTRIES": "0",  # both feed caches off: every request reads Redis
    }
    if target.cluster:
        environ["YAGI_REDIS_CLUSTER"] = "true"  # partitions auto: 12
    elif target.partitions != 1:
        environ["YAGI_REDIS_PARTITIONS"] = str(target.partitions)
    return config_module.load(environ=environ)


def family_of(key: str) -> str:
    """``tenant:<t>`` -> ``tenant:*``, ``catalog:resources:<t>:stats`` -> ``catalog:resources:*:stats``;
    any other key keeps its name (without the prefix and the partition's hash tag: the 12
    ``events`` streams of a cluster are one family)."""
    name = key[len(PREFIX) :]
    if name.startswith("{"):
        name = name.split("}:", 1)[1]
    for family in PER_TENANT_CATALOGS:
        if name.startswith(family):
            return family + "*" + (":stats" if name.endswith(":stats") else "")
    head = name.split(":", 1)[0]
    return f"{head}:*" if head in PER_ID_FAMILIES else name


def ingest(
    target: Target, bodies: list[bytes], codec: str, dictionary: bytes | None = None, sizes: bool = True
) -> Run:
    """Store ``bodies`` as the listener would (same Ingestor, same batch size) and measure.
    ``sizes``: also MEMORY USAGE of every key and the stream fields' bytes (slower)."""
    config = config_for(target, codec)
    store = open_store(config)
    if store.partitions != target.partitions:
        raise RuntimeError(f"{target.name}: {store.partitions} partitions, expected {target.partitions}")
    ingestor = Ingestor(store, config)
    batch = config.amqp.batch_size
    before = [node.info("memory")["used_memory"] for node in target.nodes]
    cpu_before = [cpu_seconds(node) for node in target.nodes]
    for node in target.nodes:
        node.config_resetstat()
    if codec == "dictionary":
        assert dictionary is not None
        store.events.dictionaries.add(dictionary)
        assert store.events.dictionaries.current() is not None
    began = time.perf_counter()
    for start in range(0, len(bodies), batch):
        summary = ingestor.ingest([Message(body, "bench") for body in bodies[start : start + batch]])
        if summary.stored != len(bodies[start : start + batch]):
            raise RuntimeError(f"stored {summary.stored} of a batch of {batch}: {summary}")
    seconds = time.perf_counter() - began
    stats = [node.info("commandstats") for node in target.nodes]
    cpu = [cpu_seconds(node) - used for node, used in zip(target.nodes, cpu_before, strict=True)]
    memory = [
        node.info("memory")["used_memory"] - used for node, used in zip(target.nodes, before, strict=True)
    ]
    usec = [sum(s["usec"] for name, s in stat.items() if name[8:] not in PROBES) for stat in stats]
    script_usec = [
        sum(s["usec"] for name, s in stat.items() if name[8:] in SCRIPT_COMMANDS) for stat in stats
    ]
    commands = [sum(s["calls"] for name, s in stat.items() if name[8:] not in PROBES) for stat in stats]
    parts = Keys.partitions(PREFIX, target.partitions)
    events = [0] * len(target.nodes)
    tenants = [0] * len(target.nodes)
    kinds = set()
    for keys in parts:
        events[target.master_of(keys.events)] += target.client.xlen(keys.events)
        tenants[target.master_of(keys.events)] += target.client.zcard(keys.catalog_tenants)
        kinds |= {fields[b"d"][:1] for _, fields in target.client.xrange(keys.events, count=100)}
    wanted = {"zlib": b"z", "dictionary": b"d", "plain": b"j"}[codec]
    if kinds != {wanted} or sum(events) != len(bodies):
        raise RuntimeError(f"{codec} run stored {sum(events)} events, bodies of kinds {kinds}")
    return Run(
        codec,
        target.name,
        seconds,
        memory,
        [node.dbsize() for node in target.nodes],
        events,
        tenants,
        usec,
        script_usec,
        commands,
        cpu,
        families(target) if sizes else {},
        stream_fields(target, parts) if sizes else {},
    )


def cpu_seconds(node: redis.Redis) -> float:
    """The server's CPU time so far (its main thread and the others), user and system."""
    info = node.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def trained_dictionary(count: int, tenants: int, samples: int) -> bytes:
    """A dictionary trained on ``count`` other events by ``yagi-meter dictionary train``'s code."""
    with single_redis() as target:
        ingest(target, build_bodies(count, tenants, seed=2), "zlib", sizes=False)
        dictionaries = open_store(config_for(target, "zlib")).events.dictionaries
        result = train(dictionaries, samples)
        print(
            f"dictionary: {result.size:,} bytes, trained on {result.samples:,} of {count:,} other events "
            f"({result.event_types} event types) in {result.seconds:.1f} s; held-out {result.held_out} "
            f"events stored/text {result.ratio_before:.3f} with zlib, {result.ratio_after:.3f} with it",
            flush=True,
        )
        return dictionaries.get(result.id).data


def families(target: Target) -> dict[str, tuple[int, int]]:
    """Key count and exact MEMORY USAGE of each key family, over every master."""
    found: dict[str, tuple[int, int]] = {}
    for node in target.nodes:
        for key in node.scan_iter(match=PREFIX + "*", count=SCAN_COUNT):
            name = key.decode() if isinstance(key, bytes) else key
            family = family_of(name)
            keys, size = found.get(family, (0, 0))
            found[family] = (keys + 1, size + (node.memory_usage(key, samples=0) or 0))
    return found


def stream_fields(target: Target, parts: list[Keys]) -> dict[str, int]:
    """Bytes of each field's values over every entry of every partition's events stream."""
    sizes: dict[str, int] = {}
    for keys in parts:
        last = "-"
        while entries := target.client.xrange(keys.events, min=last, count=SCAN_COUNT):
            for _, fields in entries:
                for name, value in fields.items():
                    sizes[name.decode()] = sizes.get(name.decode(), 0) + len(value)
            last = "(" + entries[-1][0].decode()
    return sizes


def print_run(run: Run, count: int, raw: float, inner: float) -> None:
    per_event = run.used_memory_delta / count
    usage_total = sum(size for _, size in run.families.values())
    if run.target == CLUSTER:
        where = (
            f"zlib, cluster: {count:,} events stored into {MASTERS} masters, {CLUSTER_PARTITIONS} partitions,"
        )
    else:
        where = f"{run.codec}: {count:,} events stored into one Redis"
    print(f"\n{where} in {run.seconds:.1f} s ({count / run.seconds:,.0f}/s in one process, Ingestor only)")
    print(
        f"  INFO used_memory growth {per_event:,.0f} bytes/event = {per_event / raw:.2f} x the raw body, "
        f"{per_event / inner:.2f} x the notification"
    )
    print(f"  {'key family':<28} {'keys':>6} {'bytes/event':>12} {'share':>6} {'x notification':>15}")
    for family, (keys, size) in sorted(run.families.items(), key=lambda item: -item[1][1]):
        if size / count < 0.05:
            continue
        print(
            f"  {family:<28} {keys:>6,} {size / count:>12,.1f} {size / usage_total:>6.1%} "
            f"{size / count / inner:>15.3f}"
        )
    print(
        f"  {'MEMORY USAGE, all keys':<28} {sum(k for k, _ in run.families.values()):>6,} "
        f"{usage_total / count:>12,.1f} {1:>6.0%} {usage_total / count / inner:>15.3f}"
    )
    fields = ", ".join(f"{name} {size / count:,.1f}" for name, size in run.stream_fields.items())
    print(f"  events stream, field values per event: {fields} (d: the stored body)")


def codec_cpu(
    bodies: list[bytes], dictionary: bytes, passes: int, cold: bool = False
) -> dict[str, tuple[float, float]]:
    """µs per event to encode, then decode, with zlib and with the dictionary: codec.py's own
    functions on parsed events, best of ``passes`` alternating passes (no Redis: the CPU part only).

    ``cold``: 16 MB written between two encodings (not timed), so each starts with the
    CPU caches cleared, as when parsing runs between them; decoding is then not timed."""
    received_at = datetime.now(UTC)
    events = [parse(body, received_at=received_at) for body in bodies]
    source = _Source(store_codec.Dictionary(1, dictionary))
    use = {"zlib": None, "dictionary": source.get(1)}
    best = {name: (float("inf"), float("inf")) for name in use}
    junk = bytearray(16 * 1024 * 1024)
    ones = b"\x01" * (len(junk) // 64)
    for number in range(passes):
        for name in use if number % 2 == 0 else reversed(list(use)):
            if cold:
                encoded = 0.0
                for event in events:
                    junk[::64] = ones
                    began = time.perf_counter()
                    store_codec.encode(event, True, use[name])
                    encoded += time.perf_counter() - began
                best[name] = (min(best[name][0], encoded), float("nan"))
                continue
            began = time.perf_counter()
            blobs = [store_codec.encode(event, True, use[name]) for event in events]
            encoded = time.perf_counter() - began
            began = time.perf_counter()
            for seq, blob in enumerate(blobs, 1):
                store_codec.decode(blob, seq, 0, source)
            decoded = time.perf_counter() - began
            best[name] = (min(best[name][0], encoded), min(best[name][1], decoded))
    return {name: (e / len(events) * 1e6, d / len(events) * 1e6) for name, (e, d) in best.items()}


class _Source:
    def __init__(self, dictionary: store_codec.Dictionary) -> None:
        self.dictionary = dictionary
        self.max_text_bytes = store_codec.MAX_TEXT_BYTES

    def get(self, dict_id: int) -> store_codec.Dictionary:
        return self.dictionary


# -- feed pages ----------------------------------------------------------------


def typical_tenant(bodies: list[bytes]) -> tuple[str, int]:
    """The tenant with the median number of events, and that number."""
    counts = Counter(json.loads(json.loads(body)["oslo.message"])["_context_project_id"] for body in bodies)
    ranked = sorted(counts.items(), key=lambda item: (item[1], item[0]))
    return ranked[len(ranked) // 2]


@dataclass(frozen=True)
class Latency:
    """One feed page on one target."""

    median_ms: float
    scripts: float  # reads per request (page.lua calls and MULTI/EXECs), summed over the masters
    redis_us: float  # INFO commandstats usec per request, every command, summed over the masters


def feed_latency(
    targets: dict[str, Target], events: int, tenant: tuple[str, int], requests: int
) -> dict[str, dict[str, Latency]]:
    """Median ms of each page on each target, through the Flask test client, caches off;
    every round asks each page of each target once, so they share the machine's noise.
    Then, for each page alone, the Redis calls and work of ``PROFILED`` more requests.
    ``events``: how many the targets hold, ``tenant``: the tenant's id and its events."""
    clients = {}
    for name, target in targets.items():
        config = config_for(target, "zlib")
        clients[name] = create_app(config, open_store(config)).test_client()
    paths = {"/events?limit=25": "/events?limit=25", "tenant": f"/tenants/{tenant[0]}/events?limit=25"}
    expected = {"/events?limit=25": min(25, events), "tenant": min(25, tenant[1])}
    tenant_ids = set()
    for name, web in clients.items():
        for kind, path in paths.items():
            reply = web.get(path + "&format=json")
            entries = reply.get_json()["feed"]["entry"] if reply.status_code == 200 else []
            if len(entries) != expected[kind]:
                raise RuntimeError(f"{name} {path}: HTTP {reply.status_code}, {len(entries)} entries")
            if "tenants" in path:
                tenant_ids.add(tuple(entry["event"]["message_id"] for entry in entries))
    if len(tenant_ids) != 1:
        raise RuntimeError("the tenant's head page differs between the single Redis and the cluster")
    times: dict[str, dict[str, list[float]]] = {name: {page: [] for page in paths} for name in clients}
    for number in range(requests + 10):  # the first 10 rounds warm up
        for page, path in paths.items():
            for name, web in clients.items() if number % 2 == 0 else reversed(list(clients.items())):
                began = time.perf_counter()
                response = web.get(path)
                elapsed = time.perf_counter() - began
                if response.status_code != 200:
                    raise RuntimeError(f"{name} {path}: HTTP {response.status_code}")
                if number >= 10:
                    times[name][page].append(elapsed)
    result: dict[str, dict[str, Latency]] = {}
    for name, web in clients.items():
        nodes = targets[name].nodes
        for page, path in paths.items():
            for node in nodes:
                node.config_resetstat()
            for _ in range(PROFILED):
                web.get(path)
            stats = [node.info("commandstats") for node in nodes]
            # page.lua calls, and the MULTI/EXEC reads a merged page of the stream makes instead (pages.py)
            scripts = sum(
                s["calls"] for stat in stats for n, s in stat.items() if n[8:] in (*SCRIPT_COMMANDS, "exec")
            )
            usec = sum(s["usec"] for stat in stats for n, s in stat.items() if n[8:] not in PROBES)
            median = statistics.median(times[name][page]) * 1000
            result.setdefault(name, {})[page] = Latency(median, scripts / PROFILED, usec / PROFILED)
    return result


# -- the report ----------------------------------------------------------------


def deviation(values: list[float]) -> tuple[list[float], float]:
    """Each value's share of the mean, and the largest deviation from it in percent."""
    mean = statistics.mean(values) or 1
    shares = [value / mean for value in values]
    return shares, max(abs(share - 1) for share in shares) * 100


def print_cluster(
    runs: dict[str, Run],
    calmest: dict[str, Run],
    count: int,
    raw: float,
    inner: float,
    rates: dict[str, float],
    passes: int,
    latency: dict[str, dict[str, Latency]],
    requests: int,
    tenant: tuple[str, int],
) -> None:
    """The cluster's figures, each against the single Redis's, and the control's (one Redis,
    12 partitions) to tell the partitioning from the cluster.  Memory and keys: the first
    pass (the same in every pass); Redis work: each one's least disturbed pass (``calmest``)."""
    single, cluster, control = runs["zlib"], runs[CLUSTER], runs[PARTITIONED]
    print(
        f"\nRedis Cluster of {MASTERS} masters, [redis] cluster = true, partitions {CLUSTER_PARTITIONS}, "
        f"against one Redis, partitions 1; both zlib, default settings, the same {count:,} events."
    )
    print(f"Control: one Redis with [redis] partitions = {CLUSTER_PARTITIONS}.")
    rows = (("single", single), ("cluster", cluster), ("control", control))
    one = single.used_memory_delta / count
    print("1. memory per event, INFO used_memory growth / events (cluster: summed over the masters)")
    for name, run in rows:
        value = run.used_memory_delta / count
        print(
            f"     {name:<8} {value:>7,.0f} B = {value / raw:.3f} x the raw body, "
            f"{value / inner:.3f} x the notification; /single {value / one:.3f}"
        )
    per_master = Counter(master_of(keys.events) for keys in Keys.partitions(PREFIX, CLUSTER_PARTITIONS))
    key_shares, key_dev = deviation([float(k) for k in cluster.keys])
    mem_shares, mem_dev = deviation([float(m) for m in cluster.memory])
    worked = calmest[CLUSTER]
    work_shares, work_dev = deviation([float(u) for u in worked.usec])
    cpu_shares, cpu_dev = deviation(worked.cpu)
    command_shares, command_dev = deviation([float(c) for c in worked.commands])
    print(
        "2. and 3. each master (share: of the mean of the masters; work: INFO commandstats usec, "
        "work and CPU of the pass with the least work)"
    )
    print(
        f"     {'master':<7} {'partitions':>10} {'tenants':>7} {'events':>7} {'keys':>6} {'share':>6} "
        f"{'used_memory +MB':>15} {'share':>6} {'work ms':>8} {'share':>6} {'of it EVALSHA ms':>16} "
        f"{'CPU ms':>7} {'share':>6} {'commands':>8} {'share':>6}"
    )
    for i in range(MASTERS):
        print(
            f"     {i:<7} {per_master[i]:>10} {cluster.tenants[i]:>7} {cluster.events[i]:>7,} "
            f"{cluster.keys[i]:>6,} "
            f"{key_shares[i]:>6.3f} {cluster.memory[i] / 1e6:>15.2f} {mem_shares[i]:>6.3f} "
            f"{worked.usec[i] / 1e3:>8.1f} {work_shares[i]:>6.3f} {worked.script_usec[i] / 1e3:>16.1f} "
            f"{worked.cpu[i] * 1e3:>7.0f} {cpu_shares[i]:>6.3f} "
            f"{worked.commands[i]:>8,} {command_shares[i]:>6.3f}"
        )
    print(
        f"     max deviation from the mean: keys {key_dev:.1f}%, memory {mem_dev:.1f}%, "
        f"work {work_dev:.1f}% (target within 15%); server CPU {cpu_dev:.1f}%, commands {command_dev:.1f}%"
    )
    print(
        "     (work is wall time inside commands: on a machine with fewer cores than servers it "
        "follows the order a batch's calls are sent in, master 0 first; CPU and commands do not)"
    )
    print(
        "3. Redis work per event: INFO commandstats usec of all commands (a script's own commands "
        "count in their stats and again in EVALSHA's), EVALSHA alone, and the servers' CPU "
        f"(INFO used_cpu_user + used_cpu_sys); each the pass with the least work of {passes}"
    )
    single = calmest["zlib"]
    base = {
        "all": sum(single.usec) / count,
        "evalsha": sum(single.script_usec) / count,
        "cpu": sum(single.cpu) * 1e6 / count,
    }
    for name, kind in (("single", "zlib"), ("cluster", CLUSTER), ("control", PARTITIONED)):
        run = calmest[kind]
        figures = {  # µs per event
            "all": sum(run.usec) / count,
            "evalsha": sum(run.script_usec) / count,
            "cpu": sum(run.cpu) * 1e6 / count,
        }
        print(
            f"     {name:<8} "
            + ", ".join(
                f"{what} {figures[key]:>6.1f} µs ({figures[key] / base[key]:.3f} x single)"
                for key, what in (("all", "all commands"), ("evalsha", "EVALSHA"), ("cpu", "server CPU"))
            )
        )
    print(
        f"4. ingest rate, Ingestor only, one process, batches of 500, best of {passes} alternating passes: "
        f"single {rates['zlib']:,.0f} events/s, cluster {rates[CLUSTER]:,.0f} events/s, "
        f"cluster/single {rates[CLUSTER] / rates['zlib']:.3f} (target >= 0.8); "
        f"control {rates[PARTITIONED]:,.0f} events/s"
    )
    print(
        f"5. feed page latency, median of {requests} requests each, Flask test client, caches off "
        f"(<t> = {tenant[0]}, {tenant[1]} events)"
    )
    labels = {"/events?limit=25": "/events?limit=25", "tenant": "/tenants/<t>/events?limit=25"}
    names = {"single": "single", CLUSTER: "cluster", PARTITIONED: "control"}
    for page, label in labels.items():
        one_ms = latency["single"][page].median_ms
        print(
            f"     {label:<30} "
            + ", ".join(
                f"{names[name]} {latency[name][page].median_ms:.2f} ms"
                + ("" if name == "single" else f" ({latency[name][page].median_ms / one_ms:.3f} x single)")
                for name in names
            )
            + " (target cluster <= 1.5 x single)"
        )
    print(
        f"     Redis per request (INFO commandstats of {PROFILED} more requests of each page alone; "
        "cluster: summed over the masters):"
    )
    for page, label in labels.items():
        print(
            f"     {label:<30} "
            + "; ".join(
                f"{names[name]} {latency[name][page].scripts:.1f} reads, "
                f"{latency[name][page].redis_us:,.0f} µs"
                for name in names
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--train", type=int, default=5000, help="other events stored to train on")
    parser.add_argument("--samples", type=int, default=3000, help="of which the trainer samples this many")
    parser.add_argument(
        "--passes", type=int, default=3, help="ingest-rate passes of zlib, cluster, dictionary"
    )
    parser.add_argument("--requests", type=int, default=200, help="GETs of each feed page on each target")
    args = parser.parse_args(argv)

    began = time.monotonic()
    bodies = build_bodies(args.messages, args.tenants)
    raw = statistics.mean(len(body) for body in bodies)
    inner = statistics.mean(len(json.loads(body)["oslo.message"].encode()) for body in bodies)
    tenant = typical_tenant(bodies)
    print(
        f"{args.messages:,} nova notifications, {args.tenants} tenants: raw body (oslo envelope) "
        f"{raw:,.0f} bytes/event, the notification inside it {inner:,.0f} bytes/event",
        flush=True,
    )
    dictionary = trained_dictionary(args.train, args.tenants, args.samples)
    cpu = codec_cpu(bodies[:5000], dictionary, 5)
    for name, (encode_us, decode_us) in cpu.items():
        print(f"codec.py {name}: encode {encode_us:.1f}, decode {decode_us:.1f} µs/event (best of 5)")
    cold = codec_cpu(bodies[:2000], dictionary, 3, cold=True)
    for name, (encode_us, _) in cold.items():
        print(f"codec.py {name}: encode {encode_us:.1f} µs/event, CPU caches cleared before each (best of 3)")
    runs: dict[str, Run] = {}  # the first pass's run of each kind (with the key families)
    calmest: dict[str, Run] = {}  # the run of each kind with the least commandstats time
    best: dict[str, float] = {}
    latency: dict[str, dict[str, Latency]] = {}
    version = ""
    for number in range(args.passes):
        # The first pass keeps its single zlib Redis and its cluster until both are filled,
        # to read the same feed pages from each.
        with ExitStack() as kept:
            targets: dict[str, Target] = {}
            for kind in KINDS if number % 2 == 0 else KINDS[::-1]:
                with ExitStack() as own:
                    stack = kept if number == 0 and kind in KEPT else own
                    target = stack.enter_context(open_target(kind))
                    version = version or target.nodes[0].info("server")["redis_version"]
                    codec = "zlib" if kind in (CLUSTER, PARTITIONED) else kind
                    run = ingest(target, bodies, codec, dictionary, sizes=number == 0)
                    best[kind] = min(best.get(kind, float("inf")), run.seconds)
                    print(
                        f"pass {number + 1}: {kind} {args.messages / run.seconds:,.0f} events/s", flush=True
                    )
                    runs.setdefault(kind, run)
                    if kind not in calmest or sum(run.usec) < sum(calmest[kind].usec):
                        calmest[kind] = run
                    if stack is kept:
                        targets[target.name] = target
            if number == 0:
                latency = feed_latency(
                    {name: targets[name] for name in ("single", CLUSTER, PARTITIONED)},
                    args.messages,
                    tenant,
                    args.requests,
                )
    with single_redis() as target:
        runs["plain"] = ingest(target, bodies, "plain")
    for kind in (*CODECS, CLUSTER):
        print_run(runs[kind], args.messages, raw, inner)
    print(f"\nRedis {version}; memory per event (INFO used_memory growth / MEMORY USAGE of all keys):")
    header = ("used B", "/raw", "/notif", "usage B", "/raw", "body d B")
    widths = (8, 6, 7, 8, 6, 9)
    print(f"  {'codec':<16} " + " ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for kind in (*CODECS, CLUSTER, PARTITIONED):
        run = runs[kind]
        used = run.used_memory_delta / args.messages
        usage = sum(size for _, size in run.families.values()) / args.messages
        body = run.stream_fields.get("d", 0) / args.messages
        label = {CLUSTER: "zlib, cluster", PARTITIONED: "zlib, 12 parts"}.get(kind, kind)
        print(
            f"  {label:<16} {used:>8,.0f} {used / raw:>6.2f} {used / inner:>7.2f} {usage:>8,.0f} "
            f"{usage / raw:>6.2f} {body:>9,.1f}"
        )
    rates = {kind: args.messages / best[kind] for kind in best}
    print(
        f"in-process ingest (Ingestor only, best of {args.passes} alternating passes): zlib "
        f"{rates['zlib']:,.0f} events/s, dictionary {rates['dictionary']:,.0f} events/s; "
        f"ratio dictionary/zlib {rates['dictionary'] / rates['zlib']:.2f}; target memory <= 0.30 x raw"
    )
    print(
        f"codec.py CPU per event, encode/decode: zlib {cpu['zlib'][0]:.1f}/{cpu['zlib'][1]:.1f} µs, "
        f"dictionary {cpu['dictionary'][0]:.1f}/{cpu['dictionary'][1]:.1f} µs; encode, caches cleared "
        f"before each: zlib {cold['zlib'][0]:.1f} µs, dictionary {cold['dictionary'][0]:.1f} µs"
    )
    print_cluster(
        runs,
        calmest,
        args.messages,
        raw,
        inner,
        rates,
        args.passes,
        latency,
        args.requests,
        tenant,
    )
    print(f"\n{time.monotonic() - began:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
