"""Push benchmark: WebSub delivery latency from RabbitMQ, and delivery throughput.

    .venv/bin/python bench/push.py [--rate 200] [--seconds 15] [--subscribers 100]
                                   [--fanout-subscribers 1000] [--fanout-rounds 5]

(a) Latency.  ``yagi-meter listen`` and ``yagi-meter push`` run as child
processes against a RabbitMQ vhost of this run's own.  ``--subscribers``
callbacks on a subscriber server on 127.0.0.1 subscribe through ``POST /hub``
(and are verified by the push worker).  Notifications built from the real
nova samples (oslo.messaging 2.0 envelope, exchange ``nova``, routing key
``notifications.info``) are published at ``--rate`` per second for
``--seconds``.  Latency is from ``basic_publish`` to the POST carrying the
entry arriving at the subscriber, for every (entry, subscriber) pair.  Two
layouts, each its own run:

- tenant: each subscriber follows one tenant's feed, events spread evenly over
  those tenants (every event goes to one subscriber);
- global: every subscriber follows the global feed ``/events`` (every event
  goes to all of them, batched per subscriber).

(b) Throughput.  ``--fanout-subscribers`` subscribers follow the global feed;
each round stores one event (through the same Ingestor as the listener) and
times from the store to the last of the resulting POSTs arriving.  The
baseline, in the same run and against the same server, is a bare
``requests`` loop (one keep-alive Session) POSTing the same document, with
the same headers, to the same callbacks one after another.

Isolation: a vhost and a key prefix of its own (Redis database 14 unless
--redis-url), both removed at the end; the database is never flushed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pika
import redis
import requests
from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import vhost  # noqa: E402
from feeds.hub import init_hub  # noqa: E402
from tests.servers.subscriber import Subscriber  # noqa: E402
from yagi_meter import config as config_module  # noqa: E402
from yagi_meter.atom import entry_bytes  # noqa: E402
from yagi_meter.ingest.ingestor import Ingestor, Message  # noqa: E402
from yagi_meter.store import open_store  # noqa: E402
from yagi_meter.websub.delivery import RenderedEntry, delivery_document, entry_updated  # noqa: E402
from yagi_meter.websub.push import hub_url  # noqa: E402

SAMPLE = ROOT / "tests" / "fixtures" / "notifications" / "nova-versioned" / "instance-create-end.json"
SAMPLE_TENANT = "6f70656e737461636b20342065766572"
EXCHANGE, ROUTING_KEY = "nova", "notifications.info"
ENTRY_ID = re.compile(rb"<id>urn:uuid:([0-9a-f-]{36})</id>")
DRAIN_SECONDS = 60


def body(tenant: str, message_id: str) -> bytes:
    text = SAMPLE.read_text().replace(SAMPLE_TENANT, tenant)
    message = json.loads(text)
    message.update(message_id=message_id, timestamp=str(datetime.now(UTC).replace(tzinfo=None)))
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)}).encode()


# -- infrastructure ----------------------------------------------------------------


def declare(url: str) -> None:
    """The exchange and queue oslo.messaging declares, so nothing published is lost."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=False)
    channel.queue_declare(ROUTING_KEY, durable=False)
    channel.queue_bind(ROUTING_KEY, EXCHANGE, routing_key=ROUTING_KEY)
    connection.close()


@contextmanager
def daemons(names: list[str], env: dict[str, str]) -> Iterator[None]:
    logs, children = [], []
    try:
        for name in names:
            log = tempfile.TemporaryFile()
            logs.append(log)
            children.append(
                subprocess.Popen([sys.executable, "-m", "yagi_meter", name], env=env, stdout=log, stderr=log)
            )
        yield
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for name, child, log in zip(names, children, logs, strict=True):
            try:
                code = child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
            if code != 0:
                log.seek(0)
                print(
                    f"{name} exited {code}:\n{log.read().decode(errors='replace')[-2000:]}", file=sys.stderr
                )
            log.close()


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    for key in client.scan_iter(match=prefix + "*", count=1000):
        client.delete(key)


def subscribe_all(config, store, pairs: list[tuple[str, str]]) -> None:
    """Subscribe every (callback, topic) through POST /hub and wait until all are verified."""
    app = Flask(__name__)
    init_hub(app, config, store)
    client = app.test_client()
    for callback, topic in pairs:
        data = {"hub.mode": "subscribe", "hub.callback": callback, "hub.topic": topic}
        assert client.post("/hub", data=data).status_code == 202
    subscriptions = store.subscriptions
    deadline = time.monotonic() + 60
    while len(subscriptions.ids()) < len(pairs):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(subscriptions.ids())} of {len(pairs)} subscriptions verified")
        time.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- (a) latency ---------------------------------------------------------------------


def latency(args, layout: str, url: str, env: dict[str, str], config) -> dict[str, float]:
    store = open_store(config)
    tenants = [f"bench-tenant-{i:03d}" for i in range(args.subscribers)]
    with Subscriber() as server, daemons(["listen", "push"], env):
        declare(url)
        if layout == "tenant":
            pairs = [
                (server.url(f"/t{i}"), f"{config.base_url}/tenants/{t}/events") for i, t in enumerate(tenants)
            ]
        else:
            pairs = [(server.url(f"/g{i}"), f"{config.base_url}/events") for i in range(args.subscribers)]
        subscribe_all(config, store, pairs)
        published = publish(url, tenants, args.rate, args.seconds)
        expected = len(published) * (1 if layout == "tenant" else args.subscribers)
        deadline = time.monotonic() + DRAIN_SECONDS
        while count_entries(server) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        posts = list(server.posts)
    delays = []
    seen = set()
    for post in posts:
        for match in ENTRY_ID.findall(post.body):
            message_id = match.decode()
            if (post.path, message_id) in seen:
                raise RuntimeError(f"{message_id} delivered twice to {post.path}")
            seen.add((post.path, message_id))
            delays.append(post.at - published[message_id])
    if len(delays) != expected:
        raise RuntimeError(f"{layout}: {len(delays)} of {expected} deliveries arrived")
    return {
        "deliveries": len(delays),
        "posts": len(posts),
        "median_ms": statistics.median(delays) * 1000,
        "p99_ms": percentile(delays, 0.99) * 1000,
        "max_ms": max(delays) * 1000,
    }


def count_entries(server: Subscriber) -> int:
    return sum(len(ENTRY_ID.findall(p.body)) for p in list(server.posts))


def publish(url: str, tenants: list[str], rate: int, seconds: float) -> dict[str, float]:
    """Publish ``rate`` messages a second, paced, spread over ``tenants``; message_id -> time sent."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    properties = pika.BasicProperties(content_type="application/json", content_encoding="utf-8")
    count = int(rate * seconds)
    bodies = []
    for i in range(count):
        message_id = str(uuid.uuid4())
        bodies.append((message_id, body(tenants[i % len(tenants)], message_id)))
    sent: dict[str, float] = {}
    start = time.monotonic()
    for i, (message_id, data) in enumerate(bodies):
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        sent[message_id] = time.time()
        channel.basic_publish(EXCHANGE, ROUTING_KEY, data, properties)
    connection.close()
    return sent


# -- (b) throughput ------------------------------------------------------------------


def throughput(args, env: dict[str, str], config) -> dict[str, list[float]]:
    """Rounds of push and of the bare loop, interleaved so both see the same machine load."""
    store = open_store(config)
    ingestor = Ingestor(store, config)
    rates: dict[str, list[float]] = {"push": [], "bare": []}
    with Subscriber() as server, daemons(["push"], env):
        callbacks = [server.url(f"/f{i}") for i in range(args.fanout_subscribers)]
        subscribe_all(config, store, [(c, f"{config.base_url}/events") for c in callbacks])
        for _ in range(args.fanout_rounds):
            message_id = str(uuid.uuid4())
            rates["push"].append(push_round(server, ingestor, message_id, len(callbacks)))
            rates["bare"].append(bare_round(server, callbacks, config, store.events.get(message_id)))
    return rates


def push_round(server: Subscriber, ingestor: Ingestor, message_id: str, subscribers: int) -> float:
    """Store one event; deliveries/s from the store to the last POST arriving."""
    before = len(server.posts)
    started = time.time()
    ingestor.ingest([Message(body("bench-tenant-000", message_id), "bench")])
    target = before + subscribers
    deadline = time.monotonic() + DRAIN_SECONDS
    while len(server.posts) < target and time.monotonic() < deadline:
        time.sleep(0.005)
    if len(server.posts) != target:
        raise RuntimeError(f"{len(server.posts) - before} POSTs arrived for {subscribers} subscribers")
    return subscribers / (max(p.at for p in server.posts[before:]) - started)


def bare_round(server: Subscriber, callbacks: list[str], config, event) -> float:
    """The same POSTs from one thread with one keep-alive requests Session: deliveries/s."""
    topic = f"{config.base_url}/events"
    entry = RenderedEntry(event.seq, entry_updated(event), entry_bytes(event, config.base_url))
    document = delivery_document([entry], topic, topic, "All events", hub_url(config))
    headers = {
        "Content-Type": "application/atom+xml",
        "Link": f'<{hub_url(config)}>; rel="hub", <{topic}>; rel="self"',
    }
    with requests.Session() as session:
        started = time.perf_counter()
        for callback in callbacks:
            session.post(callback, data=document, headers=headers, timeout=10).raise_for_status()
        return len(callbacks) / (time.perf_counter() - started)


# -- the run ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--fanout-subscribers", type=int, default=1000)
    parser.add_argument("--fanout-rounds", type=int, default=5)
    parser.add_argument("--layouts", default="tenant,global")
    parser.add_argument("--redis-url", default="redis://localhost:6379/14")
    parser.add_argument("--amqp-host", default="localhost:5672")
    args = parser.parse_args(argv)

    client = redis.Redis.from_url(args.redis_url)
    run_id = uuid.uuid4().hex[:8]
    print(f"{os.cpu_count()} CPUs; settings from YAGI_* in the environment reach the daemons", flush=True)
    with vhost(args.amqp_host) as url:
        for layout in [name for name in args.layouts.split(",") if name]:
            prefix = f"yagibench:push:{run_id}:{layout}:"
            env = environment(url, args.redis_url, prefix)
            try:
                result = latency(args, layout, url, env, config_module.load(environ=env))
            finally:
                delete_prefix(client, prefix)
            print(
                f"(a) {layout} feeds, {args.subscribers} subscribers, {args.rate} events/s for "
                f"{args.seconds:.0f}s: {result['deliveries']} deliveries in {result['posts']} POSTs; "
                f"latency median {result['median_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, "
                f"max {result['max_ms']:.0f} ms",
                flush=True,
            )
    if args.fanout_subscribers:
        prefix = f"yagibench:push:{run_id}:fanout:"
        env = environment("amqp://guest:guest@localhost:5672/%2F", args.redis_url, prefix)
        try:
            result = throughput(args, env, config_module.load(environ=env))
        finally:
            delete_prefix(client, prefix)
        push, bare = statistics.median(result["push"]), statistics.median(result["bare"])
        ratios = ", ".join(f"{p / b:.2f}" for p, b in zip(result["push"], result["bare"], strict=True))
        print(
            f"(b) {args.fanout_subscribers} subscribers of /events, median of {args.fanout_rounds} "
            f"interleaved rounds: push {push:,.0f} deliveries/s, bare requests loop {bare:,.0f}/s, "
            f"ratio {push / bare:.2f} (per round {ratios})",
            flush=True,
        )
    return 0


def environment(amqp_url: str, redis_url: str, prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        YAGI_CONFIG=os.devnull,
        YAGI_AMQP_URL=amqp_url,
        YAGI_REDIS_URL=redis_url,
        YAGI_REDIS_KEY_PREFIX=prefix,
        YAGI_HUB_ALLOWED_CALLBACK_NETWORKS="127.0.0.0/8",
    )
    env.setdefault("YAGI_LOGGING_LEVEL", "warning")
    # The queue declare() makes before the daemons start, as oslo.messaging declares it.
    env.setdefault("YAGI_AMQP_QUEUE", "{topic}.{priority}")
    env.setdefault("YAGI_AMQP_DURABLE", "false")
    return env


if __name__ == "__main__":
    sys.exit(main())
