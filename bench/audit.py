"""Audit benchmark: exists verdicts per second against the ingest rate measured in the same run.

    .venv/bin/python bench/audit.py [--resources 100000]

Builds --resources nova instances from the real-shaped legacy templates in
tests/fixtures/audit/nova-legacy.json: each gets a ``compute.instance.create.end``
and a ``compute.instance.exists`` for the hourly audit period it was launched
in (about 3.3 KB each, as nova sends them).  Then, under a Redis key prefix
of its own:

1. ingest: every notification through ``Ingestor.ingest`` in batches of
   ``[amqp] batch_size``, the listener's own write path without RabbitMQ (so
   a stricter baseline than ``bench/ingest.py``'s listener rate);
2. audit: ``Auditor.check`` (track the type indexes, judge each exists
   against its resource's archived lifecycle, store the verdict through the
   ingest path, check the finished periods for missing exists), shipped
   settings but ``period = hour`` and ``grace_seconds = 0``.

It prints events/s ingested, verdicts/s (one per exists), their ratio, and
the ratio against what 10x the exists rate of a 10,000-instance cloud with
hourly exists needs (10 * 10000 / 3600 = 27.8/s), plus the Redis memory the
audit's own keys held per live resource.  Keys are deleted by prefix at the
end; the database is never flushed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from yagi_meter import config as config_module  # noqa: E402
from yagi_meter.audit.daemon import Auditor  # noqa: E402
from yagi_meter.ingest.ingestor import Ingestor, Message  # noqa: E402
from yagi_meter.store import open_store  # noqa: E402
from yagi_meter.store.keys import Keys  # noqa: E402

TEMPLATES = json.loads((ROOT / "tests" / "fixtures" / "audit" / "nova-legacy.json").read_text())
NEEDED = 10 * 10_000 / 3600  # verdicts/s: 10x the hourly exists of 10,000 instances
TENANTS = 500


def messages(first: int, count: int, base: datetime) -> list[bytes]:
    """create.end then exists for instances ``first`` to ``first + count - 1``."""
    bodies = []
    for n in range(first, first + count):
        tenant = f"tenant-{n % TENANTS:04d}"
        instance = str(uuid.UUID(int=n + 1))
        launched = base + timedelta(seconds=n % 3000)
        for event_type, when in (
            ("compute.instance.create.end", launched),
            ("compute.instance.exists", base + timedelta(minutes=59)),
        ):
            message = copy.deepcopy(TEMPLATES[event_type])
            message["message_id"] = str(uuid.uuid4())
            message["timestamp"] = when.strftime("%Y-%m-%d %H:%M:%S.%f")
            message["_context_project_id"] = message["_context_tenant"] = tenant
            payload = message["payload"]
            payload.update(
                tenant_id=tenant,
                instance_id=instance,
                launched_at=launched.strftime("%Y-%m-%dT%H:%M:%S.000000"),
            )
            if event_type.endswith("exists"):
                payload["audit_period_beginning"] = base.strftime("%Y-%m-%d %H:%M:%S")
                payload["audit_period_ending"] = (base + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
            bodies.append(json.dumps(message).encode())
    return bodies


def memory_of(client: redis.Redis, pattern: str) -> int:
    return sum(client.memory_usage(key) or 0 for key in client.scan_iter(match=pattern, count=1000))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resources", type=int, default=100_000, help="instances, one exists each")
    parser.add_argument(
        "--redis-url", default=os.environ.get("YAGI_BENCH_REDIS_URL", "redis://localhost:6379/15")
    )
    args = parser.parse_args()
    prefix = f"yagibench:audit:{uuid.uuid4().hex[:8]}:"
    config = config_module.load(
        environ={
            "YAGI_CONFIG": os.devnull,
            "YAGI_REDIS_URL": args.redis_url,
            "YAGI_REDIS_KEY_PREFIX": prefix,
            "YAGI_AUDIT_PERIOD": "hour",
            "YAGI_AUDIT_GRACE_SECONDS": "0",
        }
    )
    client = redis.Redis.from_url(args.redis_url)
    # The launches' hour is the one just finished: it alone is checked for missing exists.
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    try:
        store = open_store(config)
        ingestor = Ingestor(store, config)
        per_batch = config.amqp.batch_size // 2  # two events per instance
        ingest_seconds, ingested = 0.0, 0
        for first in range(0, args.resources, per_batch):
            # Built batch by batch (not held all at once), and not timed.
            bodies = messages(first, min(per_batch, args.resources - first), base)
            started = time.perf_counter()
            ingestor.ingest([Message(body, "bench") for body in bodies])
            ingest_seconds += time.perf_counter() - started
            ingested += len(bodies)
        ingest_rate = ingested / ingest_seconds
        print(f"ingest: {ingested} events in {ingest_seconds:.1f}s = {ingest_rate:,.0f} events/s")

        auditor = Auditor(config, store)
        started = time.perf_counter()
        tracked = auditor.track()
        while not tracked.caught_up:
            tracked = auditor.track()
        track_seconds = time.perf_counter() - started
        audit_keys = memory_of(client, f"{prefix}audit:*")
        report = auditor.check(since=base)
        audit_seconds = time.perf_counter() - started
        verdicts = report.judged
        assert verdicts == args.resources and report.stored == args.resources and not report.missing, report
        failed = client.zcard(Keys(prefix).event_type("compute.instance.exists.failed"))
        assert failed == 0, f"{failed} failed verdicts on complete lifecycles"
        rate = verdicts / audit_seconds
        print(
            f"audit: {verdicts} verdicts (all verified) in {audit_seconds:.1f}s "
            f"(tracking {track_seconds:.1f}s) = {rate:,.0f} verdicts/s"
        )
        print(f"audit/ingest: {rate / ingest_rate:.2f} (verdicts/s per ingested event/s)")
        print(
            f"audit/needed: {rate / NEEDED:,.0f}x the {NEEDED:.1f} verdicts/s of 10x a 10,000-instance cloud"
        )
        print(f"audit keys while tracking: {audit_keys / args.resources:.0f} bytes per live resource")
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)


if __name__ == "__main__":
    main()
