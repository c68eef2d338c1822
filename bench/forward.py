"""Benchmark: entries per second the forwarder posts to a local archive, against a bare requests loop.

The archive (tests/servers/atomhopper.py) runs in its own process.  Both
sides post the same Atom entry documents in the same run, each to its own
collection: the bare loop one by one on one keep-alive session, documents
rendered beforehand; the forwarder the whole way (claim from the outbox, read
and render each event, post with ``concurrency`` requests in flight, record
the outcome in Redis).  For reference, the same documents are also posted by
``concurrency`` bare threads (a session each): what threads in one Python
process get out of requests at all.  Bounded in count and time; deletes its
keys.

    .venv/bin/python bench/forward.py [--count 3000] [--rounds 3] [--concurrency 8]
                                      [--archive-delay 0.005]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import as_sent, load_sample, sample_paths  # noqa: E402
from yagi_meter import config as config_module  # noqa: E402
from yagi_meter.atom import entry_document  # noqa: E402
from yagi_meter.forward.forwarder import Forwarder  # noqa: E402
from yagi_meter.ingest.ingestor import Ingestor, Message  # noqa: E402
from yagi_meter.store import open_store  # noqa: E402

ENTRY_TYPE = "application/atom+xml;type=entry"


def start_archive(delay: float = 0) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    archive = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.atomhopper", "--port", "0", "--delay", str(delay)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert archive.stdout is not None
    line = archive.stdout.readline()
    if not line.startswith("listening on "):
        archive.kill()
        raise SystemExit(f"archive did not start: {line!r}")
    return archive, line.split()[-1]


def ingest(config: config_module.Config, count: int) -> list[int]:
    store = open_store(config)
    ingestor = Ingestor(store, config)
    samples = itertools.cycle([load_sample(path) for path in sample_paths()])
    messages = [
        Message(json.dumps(as_sent(sample, message_id=str(uuid.uuid4()))).encode(), "bench")
        for sample in itertools.islice(samples, count)
    ]
    for start in range(0, count, 500):
        ingestor.ingest(messages[start : start + 500])
    return list(range(1, store.events.last_seq() + 1))


def bare_loop(url: str, documents: list[bytes]) -> float:
    """Seconds to post every document, one after the other, on one keep-alive session."""
    session = requests.Session()
    started = time.perf_counter()
    for document in documents:
        response = session.post(url, data=document, headers={"Content-Type": ENTRY_TYPE}, timeout=10)
        assert response.status_code == 201, response.status_code
    elapsed = time.perf_counter() - started
    session.close()
    return elapsed


def bare_threads(url: str, documents: list[bytes], threads: int) -> float:
    """Seconds for ``threads`` threads, a session each, to post the documents between them."""
    chunks = [documents[n::threads] for n in range(threads)]
    workers = [threading.Thread(target=bare_loop, args=(url, chunk)) for chunk in chunks]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def forwarder(config: config_module.Config, limit: float, processes: int = 1) -> float:
    """Seconds for ``processes`` forwarders (one in this process, the others forked) to drain
    the outbox, as an operator runs several ``yagi-meter forward`` on one machine."""
    store = open_store(config)
    outbox = store.outbox("forward")
    go_read, go_write = os.pipe()
    children = [_fork_forwarder(config, go_read) for _ in range(processes - 1)]
    worker = Forwarder(config, store)
    thread = threading.Thread(target=worker.run)
    started = time.perf_counter()
    os.write(go_write, b"g" * len(children))
    thread.start()
    try:
        while outbox.backlog():
            if time.perf_counter() - started > limit:
                raise SystemExit(f"forwarder did not drain within {limit}s")
            time.sleep(0.005)
        return time.perf_counter() - started
    finally:
        worker.stop()
        thread.join()
        for pid in children:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        os.close(go_read)
        os.close(go_write)


def _fork_forwarder(config: config_module.Config, go: int) -> int:
    """A forked forwarder (no interpreter start-up to time) that starts on a byte from ``go``."""
    pid = os.fork()
    if pid:
        return pid
    try:
        worker = Forwarder(config, open_store(config))
        signal.signal(signal.SIGTERM, lambda *_: worker.stop())
        os.read(go, 1)
        worker.run()
    finally:
        os._exit(0)


def one_round(args: argparse.Namespace, base: str, count: int, number: int) -> tuple[int, float, float]:
    """Entries, bare seconds and forwarder seconds for ``count`` fresh events under a prefix of their own."""
    prefix = f"yagibench:{uuid.uuid4().hex[:8]}:"
    try:
        config = config_module.load(
            environ={
                "YAGI_CONFIG": os.devnull,
                "YAGI_REDIS_URL": args.redis_url,
                "YAGI_REDIS_KEY_PREFIX": prefix,
                "YAGI_FORWARD_URL": f"{base}/forwarder{number}/events",
                "YAGI_FORWARD_CONCURRENCY": str(args.concurrency),
            }
        )
        seqs = ingest(config, count)
        events = open_store(config).events.get_many(seqs)
        documents = [entry_document(event, config.base_url) for event in events]
        bare = bare_loop(f"{base}/bare{number}/events", documents)
        threaded = bare_threads(f"{base}/threads{number}/events", documents, args.concurrency)
        return len(documents), bare, threaded, forwarder(config, args.time_limit, args.processes)
    finally:
        client = redis.Redis.from_url(args.redis_url)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=3000, help="entries each side posts (at most 20000)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="bare and forwarder take turns, count/rounds each"
    )
    defaults = config_module.load(environ={"YAGI_CONFIG": os.devnull}).forward
    parser.add_argument(
        "--concurrency",
        type=int,
        default=defaults.concurrency,
        help=f"requests in flight per forwarder process (default as shipped: {defaults.concurrency})",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=defaults.processes,
        help=f"forwarder processes draining together (default as shipped: {defaults.processes})",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("YAGI_BENCH_REDIS_URL", "redis://localhost:6379/15")
    )
    parser.add_argument("--time-limit", type=float, default=120)
    parser.add_argument(
        "--archive-delay",
        type=float,
        default=0,
        help="seconds the archive takes per post (a remote one: 0.005)",
    )
    args = parser.parse_args()
    count, rounds = min(args.count, 20_000), max(1, args.rounds)
    archive, base = start_archive(args.archive_delay)
    total, bare, threaded, forwarded = 0, 0.0, 0.0, 0.0
    try:
        for number in range(rounds):
            entries, bare_s, threaded_s, forward_s = one_round(args, base, count // rounds, number)
            total, bare, threaded, forwarded = (
                total + entries,
                bare + bare_s,
                threaded + threaded_s,
                forwarded + forward_s,
            )
            print(
                f"round {number + 1}: bare {entries / bare_s:6.0f}/s, "
                f"bare threads {entries / threaded_s:6.0f}/s, forwarder {entries / forward_s:6.0f}/s"
            )
    finally:
        archive.terminate()
        archive.wait()
    c = args.concurrency
    print(f"entries:                 {total} in {rounds} rounds, archive delay {args.archive_delay:g}s")
    print(f"bare requests loop:      {total / bare:8.0f} entries/s ({bare:.2f}s)")
    print(f"bare threads ({c:>2}):       {total / threaded:8.0f} entries/s ({threaded:.2f}s)")
    p = args.processes
    print(f"forwarder ({p} x {c:>2} in flight): {total / forwarded:5.0f} entries/s ({forwarded:.2f}s)")
    print(f"ratio forwarder/bare:    {bare / forwarded:8.2f}")


if __name__ == "__main__":
    main()
