"""Retention benchmark: how fast `yagi-meter retention` removes while ingest runs at full speed.

    .venv/bin/python bench/retention.py [--backlog 400000] [--seconds 8]

Everything runs against a private redis-server on a free loopback port
(tests/servers/redis_cluster.py's ``standalone_redis``), killed at the end.

1. Events: 20,000 realistic nova notifications from bench/ingest.py's
   ``build_bodies`` (real samples, 50 tenants, 20 instances each, the oslo
   envelope), parsed and encoded once by yagi_meter's own code, with a zstd
   dictionary trained as ``yagi-meter dictionary train`` does on 5,000 other
   events (bench/capacity.py's ``trained_dictionary``) and made current
   first: the bodies are ``d`` bodies, as in a store that has a dictionary.
   (``--no-dictionary``: zlib bodies, as before the first dictionary.)
2. Backlog: ``--backlog`` events written through ``EventStore`` (the ingest
   script, batches of 500; copies of the 20,000 with fresh message_ids, no
   outbox entries), then a pause longer than the retention period (1 s), so
   the whole backlog has expired.
3. Ingest: a separate process runs yagi_meter's ``Ingestor`` as the listener
   does without RabbitMQ (parse, encode, one script call per batch of 500),
   continuously, and logs each batch's end time and latency.
4. Baseline: ``--seconds`` of ingest alone.  Then ``yagi-meter retention``
   (the real daemon, ``[retention] batch`` ``--step``, default 1000) starts,
   with ``[redis] retention_days`` = 1 s; measured from its first removal
   seen (the stream's head polled every 10 ms; the daemon's start-up, a
   Python import of ~0.3 s, is not removal) until the backlog is gone: the
   removal rate (what was left of the backlog / that time) and the ingest
   rate over the same span.
5. Figures: removal rate / ingest rate (target >= 10), ingest rate with /
   without retention (target ~1), the longest ingest batch with and
   without, Redis's CPU (INFO cpu) per event ingested (ingest alone) and per
   event removed (what it spent while both ran, less the ingest's share at
   that per-event cost) and their ratio, the time of one step of 1,000 in this process (two round trips
   and the decoding of 1,000 bodies' derived fields for their index keys), and
   the codec's decode alone per body, of the whole event and of the fields a
   step decodes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.capacity import trained_dictionary  # noqa: E402
from bench.ingest import build_bodies  # noqa: E402
from tests.servers.redis_cluster import standalone_redis  # noqa: E402
from yagi_meter import config as config_module  # noqa: E402
from yagi_meter.ingest.ingestor import Ingestor, Message  # noqa: E402
from yagi_meter.notification import parse  # noqa: E402
from yagi_meter.store import codec, open_store  # noqa: E402
from yagi_meter.store.events import EncodedEvent  # noqa: E402

PREFIX = "{yagi}:"
BATCH = 500
RETENTION_SECONDS = 1.0
TEMPLATES = 20000


def make_config(url: str, **settings: str):  # type: ignore[no-untyped-def]
    environ = {"YAGI_CONFIG": os.devnull, "YAGI_REDIS_URL": url, "YAGI_REDIS_KEY_PREFIX": PREFIX}
    environ.update({f"YAGI_{k.upper()}": v for k, v in settings.items()})
    return config_module.load(environ=environ)


def fill(url: str, bodies: list[bytes], count: int) -> float:
    """``count`` events through the ingest script; returns events/s of the fill."""
    store = open_store(make_config(url), client=redis.Redis.from_url(url))
    store.events.push = False  # no outbox entries: nothing holds retention back
    now = datetime.now(UTC)
    templates = [store.events.encode(parse(body, received_at=now)) for body in bodies]
    started = time.perf_counter()
    written = 0
    while written < count:
        batch = []
        for template in templates[written % len(templates) :][: min(BATCH, count - written)]:
            message_id = str(uuid.uuid4())
            event = replace(template.event, message_id=message_id)
            batch.append(EncodedEvent(event, template.keys, [message_id.encode(), *template.args[1:]]))
        store.events.send(store.events.prepare(batch)).result()
        written += len(batch)
    return count / (time.perf_counter() - started)


def ingest_forever(url: str, bodies: list[bytes], log_path: str) -> None:
    """The ingest process: Ingestor.prepare + one write per batch, each logged, until killed."""
    config = make_config(url)
    store = open_store(config, client=redis.Redis.from_url(url))
    ingestor = Ingestor(store, config)
    ids = [json.loads(json.loads(body)["oslo.message"])["message_id"].encode() for body in bodies]
    with open(log_path, "w", buffering=1) as log:
        i = 0
        while True:
            messages = []
            for j in range(i, i + BATCH):
                k = j % len(bodies)
                body = bodies[k].replace(ids[k], str(uuid.uuid4()).encode())
                messages.append(Message(body, "bench"))
            i += BATCH
            batch = ingestor.prepare(messages)
            started = time.perf_counter()
            store.events.send(batch.call).result()
            log.write(f"{time.time():.6f} {len(batch.call.events)} {time.perf_counter() - started:.6f}\n")


def redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the Redis server has used (user + system, all its threads)."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def batches(log_path: Path, start: float, end: float) -> list[tuple[float, int, float]]:
    rows = []
    for line in log_path.read_text().splitlines():
        at, count, latency = line.split()
        if start <= float(at) <= end:
            rows.append((float(at), int(count), float(latency)))
    return rows


def rate(rows: list[tuple[float, int, float]]) -> float:
    """Events/s between the first and the last batch's end (the first batch not counted)."""
    return sum(count for _, count, _ in rows[1:]) / (rows[-1][0] - rows[0][0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--backlog", type=int, default=400000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--step", type=int, default=1000, help="[retention] batch of the daemon")
    parser.add_argument("--no-dictionary", action="store_true", help="zlib bodies (no dictionary)")
    args = parser.parse_args(argv)

    bodies = build_bodies(TEMPLATES, 50)
    print(f"{TEMPLATES:,} nova notifications, mean body {statistics.mean(map(len, bodies)):,.0f} bytes")
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"yagi-bench-retention-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    dictionary = None if args.no_dictionary else trained_dictionary(5000, 50, 3000)
    with standalone_redis() as client:
        url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
        if dictionary is not None:
            open_store(make_config(url), client=client).events.dictionaries.add(dictionary)
        used_before_fill = client.info("memory")["used_memory"]
        fill_rate = fill(url, bodies, args.backlog)
        backlog_last = int(client.get(PREFIX + "seq") or 0)
        print(f"backlog: {args.backlog:,} events written at {fill_rate:,.0f}/s (ingest script only)")
        used_after_fill = client.info("memory")["used_memory"]
        kinds = {fields[b"d"][:1] for _, fields in client.xrange(PREFIX + "events", count=1000)}
        print(f"body kinds stored: {sorted(kinds)} (d: zstd dictionary, z: zlib)")
        time.sleep(RETENTION_SECONDS + 0.5)

        log_path = work / "ingest.log"
        ingest = multiprocessing.get_context("fork").Process(
            target=ingest_forever, args=(url, bodies, str(log_path)), daemon=True
        )
        ingest.start()
        retention = None
        try:
            time.sleep(2)  # warm up
            alone_start, cpu_alone_start = time.time(), redis_cpu(client)
            time.sleep(args.seconds)
            alone_end, cpu_alone_end = time.time(), redis_cpu(client)
            env = {k: v for k, v in os.environ.items() if not k.startswith("YAGI_")}
            env.update(
                YAGI_CONFIG=os.devnull,
                YAGI_REDIS_URL=url,
                YAGI_REDIS_KEY_PREFIX=PREFIX,
                YAGI_REDIS_RETENTION_DAYS=str(RETENTION_SECONDS / 86400),
                YAGI_LOGGING_LEVEL="WARNING",
                YAGI_RETENTION_BATCH=str(args.step),
            )
            retention = subprocess.Popen(
                [sys.executable, "-m", "yagi_meter", "retention"], env=env, stdin=subprocess.DEVNULL
            )
            first = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                head = client.xrange(PREFIX + "events", "-", "+", count=1)
                seq = int(head[0][0].split(b"-")[0]) if head else backlog_last + 1
                if first is None and seq > 1:
                    first, removed_before, cpu_first = time.time(), seq - 1, redis_cpu(client)
                if seq > backlog_last:
                    break
                time.sleep(0.01)
            with_end, cpu_end = time.time(), redis_cpu(client)
        finally:
            if retention is not None:
                retention.terminate()
                retention.wait(30)
            ingest.kill()
            ingest.join(10)

        alone = batches(log_path, alone_start, alone_end)
        during = batches(log_path, first, with_end)
        if first is None:
            raise SystemExit("retention removed nothing in 600 s")
        removal = (args.backlog - removed_before) / (with_end - first)
        ingest_alone, ingest_during = rate(alone), rate(during)
        print(
            f"ingest alone: {ingest_alone:,.0f} events/s over {alone_end - alone_start:.1f} s, "
            f"longest batch of {BATCH} {max(r[2] for r in alone) * 1000:.1f} ms "
            f"(median {statistics.median(r[2] for r in alone) * 1000:.1f} ms)"
        )
        longest, median = max(r[2] for r in during), statistics.median(r[2] for r in during)
        print(
            f"with retention: removed {args.backlog:,} in {with_end - first:.2f} s = "
            f"{removal:,.0f} events/s; ingest meanwhile {ingest_during:,.0f} events/s, longest batch "
            f"{longest * 1000:.1f} ms (median {median * 1000:.1f} ms)"
        )
        print(f"removal rate / ingest rate: {removal / ingest_during:.1f} (target >= 10)")
        # Redis CPU per event: ingested (ingest alone), and removed (the rest of the CPU
        # Redis spent while both ran): what a Redis busy with nothing else could remove
        # for each event it ingests.
        per_ingested = (cpu_alone_end - cpu_alone_start) / (ingest_alone * (alone_end - alone_start))
        during_cpu = cpu_end - cpu_first - per_ingested * ingest_during * (with_end - first)
        per_removed = during_cpu / (args.backlog - removed_before)
        print(
            f"Redis CPU per event: ingested {per_ingested * 1e6:.1f} µs, removed {per_removed * 1e6:.1f} µs: "
            f"ratio {per_ingested / per_removed:.1f} (what a Redis saturated by ingest and retention could "
            f"remove per event ingested)"
        )
        print(f"ingest rate with / without retention: {ingest_during / ingest_alone:.2f} (target ~1)")
        print(
            f"used_memory growth over the backlog (no outbox entries): "
            f"{(used_after_fill - used_before_fill) / args.backlog:,.0f} B/event"
        )
        # One step of 1,000 timed here (two round trips), on what ingest left, now expired.
        time.sleep(RETENTION_SECONDS + 0.2)
        store = open_store(make_config(url), client=client)
        for name in ("push", "forward"):
            client.delete(PREFIX + f"outbox:{name}:seqs")
        unit = store.events.retention_units()[0]
        sample = client.xrange(PREFIX + "events", "-", "+", count=1000)
        dictionaries = store.events.dictionaries
        for name, decode in (
            ("codec.decode (the whole event)", lambda blob, seq, t: codec.decode(blob, seq, t, dictionaries)),
            (
                "codec.decode_indexed (what a step decodes)",
                lambda blob, seq, t: codec.decode_indexed(blob, seq, dictionaries),
            ),
        ):
            started = time.perf_counter()
            for entry_id, fields in sample:
                decode(fields[b"d"], int(entry_id.split(b"-")[0]), int(fields[b"t"]))
            print(
                f"{name}: {(time.perf_counter() - started) / len(sample) * 1e6:.1f} µs/body ({len(sample)})"
            )
        times = []
        for _ in range(5):
            started = time.perf_counter()
            step = store.events.retention_step(unit, RETENTION_SECONDS / 86400, 1000)
            times.append(time.perf_counter() - started)
            if step.removed < 1000:
                break
        print(
            f"one step of 1,000 (2 round trips): median {statistics.median(times) * 1000:.1f} ms, "
            f"max {max(times) * 1000:.1f} ms over {len(times)} steps; Redis "
            f"{client.info('server')['redis_version']}"
        )
    for path in work.iterdir():
        path.unlink()
    work.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
