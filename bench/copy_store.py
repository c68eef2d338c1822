"""Copy benchmark: how fast `yagi-meter copy` moves a store into 12 partitions.

    .venv/bin/python bench/copy_store.py [--events 100000]

Everything runs against a private redis-server on a free loopback port
(tests/servers/redis_cluster.py's ``standalone_redis``), killed at the end.

1. Source: ``--events`` realistic nova notifications (bench/ingest.py's
   ``build_bodies``: real samples, 50 tenants, the oslo envelope, parsed
   once, each event then given a fresh message id) with a zstd dictionary
   current, written through ``EventStore.write`` (encode, the ingest script,
   batches of 500) on one partition.
2. Baseline: as many such events written the same way into a second store,
   of 12 partitions: the encoding and writing a copy cannot avoid.
3. Copy: ``yagi-meter copy`` (the real command, a process of its own) from the
   source into a third store of 12 partitions; timed from start to exit, so
   its Python start-up (~0.3 s) is in it.
4. Figures: both rates and their ratio; it fails unless the copy holds as
   many events as the source and each of the source's first 1,000.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.capacity import trained_dictionary  # noqa: E402
from bench.ingest import build_bodies  # noqa: E402
from bench.retention import make_config  # noqa: E402
from tests.servers.redis_cluster import standalone_redis  # noqa: E402
from yagi_meter.notification import Event, parse  # noqa: E402
from yagi_meter.store import Store, open_store  # noqa: E402

SOURCE, BASELINE, TARGET = "{src}:", "base:", "copy:"


def write(store: Store, templates: list[Event], count: int) -> float:
    """``count`` events (the templates in turn, each with a fresh message id) through
    ``EventStore.write`` in batches of 500, no outbox entries; events/s."""
    store.events.push = False
    started = time.perf_counter()
    for start in range(0, count, 500):
        batch = [
            replace(templates[n % len(templates)], message_id=str(uuid.uuid4()))
            for n in range(start, min(start + 500, count))
        ]
        store.events.write(batch)
    return count / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--events", type=int, default=100000)
    args = parser.parse_args(argv)
    bodies = build_bodies(20000, 50)
    dictionary = trained_dictionary(5000, 50, 3000)
    with standalone_redis() as client:
        url = f"redis://127.0.0.1:{client.connection_pool.connection_kwargs['port']}/0"
        source = open_store(make_config(url, redis_key_prefix=SOURCE, redis_partitions="1"), client=client)
        source.events.dictionaries.add(dictionary)
        templates = [parse(body, received_at=datetime.now(UTC)) for body in bodies]
        write(source, templates, args.events)
        base = open_store(make_config(url, redis_key_prefix=BASELINE, redis_partitions="12"), client=client)
        base.events.dictionaries.add(dictionary)
        baseline = write(base, templates, args.events)
        with tempfile.TemporaryDirectory() as work:
            source_file = Path(work) / "source.conf"
            source_file.write_text(f"[redis]\nurl = {url}\nkey_prefix = {SOURCE}\npartitions = 1\n")
            env = {k: v for k, v in os.environ.items() if not k.startswith("YAGI_")}
            env.update(
                YAGI_CONFIG=os.devnull,
                YAGI_REDIS_URL=url,
                YAGI_REDIS_KEY_PREFIX=TARGET,
                YAGI_REDIS_PARTITIONS="12",
                YAGI_LOGGING_LEVEL="WARNING",
            )
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "yagi_meter", "copy", "--from-config", str(source_file)],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=3600,
            )
            elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"copy failed ({done.returncode}): {done.stderr}")
        target = open_store(make_config(url, redis_key_prefix=TARGET, redis_partitions="12"), client=client)
        copied = target.events.count()
        print(done.stdout.strip())
        print(f"baseline: {args.events:,} events written into 12 partitions at {baseline:,.0f}/s")
        print(f"copy: {copied:,} events in {elapsed:.1f} s = {copied / elapsed:,.0f}/s")
        print(f"copy rate / baseline rate: {copied / elapsed / baseline:.2f}")
        sample = [fields[b"m"].decode() for _, fields in client.xrange(f"{SOURCE}events", count=1000)]
        missing = [m for m in sample if target.events.seq_of(m) is None]
        if copied != args.events or missing:
            raise SystemExit(f"the copy holds {copied} events, {len(missing)} of 1,000 sampled missing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
