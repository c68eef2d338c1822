"""Feed latency with 1,000 and with 1,000,000 events, against a prebuilt-bytes baseline.

    .venv/bin/python bench/feeds.py                  # both sizes, the README's figures
    .venv/bin/python bench/feeds.py --sizes 1000     # quick run

For each store size: fill a scratch key prefix of the local Redis through
EventStore.write (large batches, events made from the real samples, spread
over 10 tenants) and serve it with its own gunicorn (conf/gunicorn.conf.py,
one sync worker, bench/wsgi_bench.py).  Then time sequential GETs of

- the head page of the global feed, limit 25 and 1000,
- a deep page (backward from the entry ``limit + 1`` places from the oldest:
  the far end of the feed), limit 25 and 1000,
- the head page of one tenant's feed, limit 25,

each followed by a GET of ``/_bench/bytes/<n>`` returning the same number
of bytes prebuilt, from the same worker; the store sizes are asked in turn,
round after round, so a busy machine slows them all alike.  Every scenario runs twice:
with the per-process caches (pages by ETag, rendered entries by seq) as
deployed, and with them off (``[feeds] cache_entries = 0``), which is the
cost of a page nobody asked for before.  The scratch keys are deleted at the
end (1M events take about 1 GB of Redis memory while they exist).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from yagi_meter.notification import Event, parse  # noqa: E402
from yagi_meter.store.events import EventStore  # noqa: E402
from yagi_meter.store.keys import Keys  # noqa: E402
from yagi_meter.store.scripts import Scripts  # noqa: E402

SAMPLES = ROOT / "tests" / "fixtures" / "notifications" / "nova-versioned"
TENANTS = 10
BATCH = 5000


def sample_events() -> list[Event]:
    events = []
    for number, path in enumerate(sorted(SAMPLES.glob("*.json"))):
        message = json.loads(path.read_text())
        message["message_id"] = f"sample-{number}"
        message.setdefault("timestamp", "2026-11-24 09:00:00.000000")
        events.append(parse(json.dumps(message).encode(), received_at=datetime.now(UTC)))
    if not events:
        raise SystemExit(f"no notification samples in {SAMPLES}")
    return events


def fill(client: redis.Redis, prefix: str, count: int) -> None:
    """``count`` events over TENANTS tenants, written in batches of BATCH."""
    store = EventStore(client, Keys(prefix), Scripts.register(client), push=False)
    samples = sample_events()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        batch = []
        for n in range(first, min(first + BATCH, count)):
            sample = samples[n % len(samples)]
            message_id = str(uuid.UUID(int=n + 1))
            batch.append(
                replace(
                    sample,
                    message_id=message_id,
                    tenant_id=f"tenant-{n % TENANTS}",
                    timestamp=start + timedelta(seconds=n),
                    notification_json=sample.notification_json.replace(sample.message_id, message_id),
                )
            )
        store.write(batch)
    elapsed = time.perf_counter() - started
    print(f"  filled {count} events in {elapsed:.1f} s ({count / elapsed:.0f}/s)", flush=True)


def entry_at(client: redis.Redis, prefix: str, position: int) -> str:
    """message_id of the event ``position`` places from the oldest (0-based)."""
    entry = client.xrange(prefix + "events", "-", "+", count=position + 1)[-1]
    return entry[1][b"m"].decode()


def start_server(prefix: str, port: int, cache: bool, redis_url: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        YAGI_CONFIG=os.devnull,
        YAGI_REDIS_URL=redis_url,
        YAGI_REDIS_KEY_PREFIX=prefix,
        YAGI_FEEDS_PORT=str(port),
        YAGI_FEEDS_WORKERS="1",
        YAGI_FEEDS_CACHE_ENTRIES="20000" if cache else "0",
        YAGI_LOGGING_LEVEL="warning",
    )
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "conf/gunicorn.conf.py",
        "--access-logfile",
        "/dev/null",
    ]
    server = subprocess.Popen([*command, "bench.wsgi_bench:app"], cwd=ROOT, env=env)
    for _ in range(100):
        try:
            if get(port, "/health")[0] == 200:
                return server
        except OSError:
            time.sleep(0.1)
    raise SystemExit("gunicorn did not start")


def get(port: int, path: str) -> tuple[int, int, float]:
    """(status, body bytes, seconds) of one GET on a new connection (sync workers close it)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path, headers={"Accept": "application/atom+xml"})
    response = connection.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    connection.close()
    return response.status, len(body), elapsed


def measure(targets: list[tuple[int, str]], requests: int) -> list[dict]:
    """Median and p99 of each (port, path), and of the same number of prebuilt bytes from
    the same server; every round asks each of them once, so all share the same noise."""
    plan = []
    for port, path in targets:
        status, size, _ = get(port, path)
        if status != 200:
            raise SystemExit(f"{path}: HTTP {status}")
        plan.append((port, path, size, f"/_bench/bytes/{size}"))
    for _ in range(5):  # warm up
        for port, path, _, baseline in plan:
            get(port, path)
            get(port, baseline)
    times: list[tuple[list[float], list[float]]] = [([], []) for _ in plan]
    for _ in range(requests):
        for (port, path, _, baseline), (feed_times, base_times) in zip(plan, times, strict=True):
            feed_times.append(get(port, path)[2])
            base_times.append(get(port, baseline)[2])
    return [
        {"bytes": size, "feed": summary(feed_times), "baseline": summary(base_times)}
        for (_, _, size, _), (feed_times, base_times) in zip(plan, times, strict=True)
    ]


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


def scenarios(client: redis.Redis, prefix: str) -> dict[str, str]:
    paths = {}
    for limit in (25, 1000):
        paths[f"head, limit {limit}"] = f"/events?limit={limit}"
        marker = entry_at(client, prefix, limit)
        paths[f"deep, limit {limit}"] = f"/events?marker={marker}&direction=backward&limit={limit}"
    paths["tenant head, limit 25"] = "/tenants/tenant-3/events?limit=25"
    return paths


def run(sizes: list[int], requests: int, redis_url: str, port: int) -> dict:
    """Fill one scratch prefix per size, serve each from its own gunicorn, measure them interleaved."""
    client = redis.Redis.from_url(redis_url)
    results: dict = {}
    prefixes = {size: f"yagibench:{uuid.uuid4().hex[:8]}:" for size in sizes}
    try:
        for size, prefix in prefixes.items():
            print(f"{size} events under {prefix}", flush=True)
            fill(client, prefix, size)
        print(f"  Redis used_memory {client.info('memory')['used_memory_human']}", flush=True)
        paths = {size: scenarios(client, prefix) for size, prefix in prefixes.items()}
        for cache in (True, False):
            ports = {size: port + n for n, size in enumerate(sizes)}
            servers = [start_server(prefixes[size], ports[size], cache, redis_url) for size in sizes]
            try:
                for name in paths[sizes[0]]:
                    count = requests if "1000" not in name else max(50, requests // 5)
                    measured = measure([(ports[size], paths[size][name]) for size in sizes], count)
                    key = f"{name}, {'cached' if cache else 'uncached'}"
                    for size, result in zip(sizes, measured, strict=True):
                        results.setdefault(key, {})[str(size)] = result
                        print(f"  {key}, {size} events: {json.dumps(result)}", flush=True)
            finally:
                for server in servers:
                    server.terminate()
                    server.wait(timeout=30)
    finally:
        for prefix in prefixes.values():
            delete_prefix(client, prefix)
    return results


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(keys), 500):
        client.unlink(*keys[start : start + 500])
    print(f"  deleted {len(keys)} scratch keys", flush=True)


def table(results: dict, sizes: list[int]) -> str:
    head = "| scenario | bytes | " + " | ".join(
        f"{s:,} events: median / p99 ms | baseline median / p99 ms | ratio" for s in sizes
    )
    lines = [head + " |", "|" + " --- |" * (2 + 3 * len(sizes))]
    for name, by_size in results.items():
        cells = [name, str(by_size[str(sizes[-1])]["bytes"])]
        for size in sizes:
            r = by_size[str(size)]
            ratio = r["feed"]["median_ms"] / r["baseline"]["median_ms"]
            cells += [
                f"{r['feed']['median_ms']:.2f} / {r['feed']['p99_ms']:.2f}",
                f"{r['baseline']['median_ms']:.2f} / {r['baseline']['p99_ms']:.2f}",
                f"{ratio:.2f}x",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    if len(sizes) > 1:
        lines.append("")
        lines.append(f"Growth of the median from {sizes[0]:,} to {sizes[-1]:,} events:")
        for name, by_size in results.items():
            small, large = by_size[str(sizes[0])]["feed"], by_size[str(sizes[-1])]["feed"]
            lines.append(f"- {name}: {(large['median_ms'] / small['median_ms'] - 1) * 100:+.0f}%")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,1000000", help="store sizes, comma separated")
    parser.add_argument("--requests", type=int, default=500, help="requests per limit-25 scenario")
    parser.add_argument(
        "--redis-url", default=os.environ.get("YAGI_BENCH_REDIS_URL", "redis://localhost:6379/15")
    )
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = run(sizes, args.requests, args.redis_url, args.port)
    print()
    print(table(results, sizes))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
