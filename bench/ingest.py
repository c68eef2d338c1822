"""Ingest benchmark: `yagi-meter listen` against a bare pika consumer that only acks.

    .venv/bin/python bench/ingest.py [--messages 20000] [--rounds 3]

Builds realistic nova notifications from tests/fixtures/notifications/nova-versioned
(unique message_id and timestamp, tenants spread over --tenants projects, a
nova request context), wrapped in the oslo.messaging 2.0 envelope exactly as
the messagingv2 driver publishes them, to exchange ``nova`` with routing key
``notifications.info``, in a RabbitMQ vhost of its own.

Each round fills the queue and times four consumers in turn (the bare one
first, then the listeners in an order rotated each round), each starting on
a full queue of the same messages:

- bare: a pika consumer in this process that acks as the listener does (one ``multiple``
  ack per ``[amqp] batch_size`` messages or ``batch_wait_ms``), nothing else;
- listen: ``python -m yagi_meter listen`` storing into Redis (compressed, zlib:
  no dictionary exists, and the listener's automatic training is off);
- listen, dictionary: the same with a zstd dictionary current from the start
  (trained once per run on 3,000 other messages, as ``yagi-meter dictionary
  train`` trains: 64 KB, zstd's fastcover), stored under the run's prefix;
- listen, YAGI_REDIS_COMPRESS=false.

Rates are counted from the first message stored (acked) to the last: for the
listener from the ingest times Redis stamps on the first and the last batch
(messages of the first batch not counted), for the bare consumer from its
first ack to its last.  Interpreter start and connection set-up are left out
of both.  Redis memory per event is MEMORY USAGE summed over the run's keys.
Settings such as YAGI_AMQP_BATCH_SIZE or YAGI_AMQP_PREFETCH in the
environment reach the listener; the bare consumer uses the same prefetch.

Isolation: a vhost and a key prefix of its own, both removed at the end
(keys are deleted by prefix; the database is never flushed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika
import redis

from yagi_meter import config as config_module

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "fixtures" / "notifications" / "nova-versioned"
EXCHANGE = "nova"
ROUTING_KEY = "notifications.info"
# Ids the samples use for the project and the instance; replaced per message.
SAMPLE_PROJECT = "6f70656e737461636b20342065766572"
SAMPLE_INSTANCE = "178b0921-8f85-4257-88b6-2e743b5a975c"
INSTANCES_PER_TENANT = 20
DRAIN_TIMEOUT_SECONDS = 300
FILL_TIMEOUT_SECONDS = 120
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Timing:
    """Messages/s over the timed span, and the consumer's own CPU time per message in it."""

    rate: float
    cpu_us: float


# -- messages ----------------------------------------------------------------


def nova_context(tenant: str, user: str, request_id: str, now: datetime) -> dict:
    """A nova RequestContext as its to_dict() gives it after oslo's redaction."""
    return {
        "user": user,
        "project_id": tenant,
        "system_scope": None,
        "project": tenant,
        "domain": None,
        "user_domain": "default",
        "project_domain": "default",
        "is_admin": False,
        "read_only": False,
        "show_deleted": False,
        "auth_token": None,
        "request_id": request_id,
        "global_request_id": None,
        "resource_uuid": None,
        "roles": ["member", "reader"],
        "user_identity": f"{user} {tenant} - default default",
        "is_admin_project": True,
        "user_id": user,
        "read_deleted": "no",
        "remote_address": "10.0.0.12",
        "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%f"),
        "quota_class": None,
        "user_name": "demo",
        "service_catalog": [
            {
                "type": "volumev3",
                "name": "cinderv3",
                "endpoints": [{"region": "RegionOne", "publicURL": f"http://10.0.0.5/volume/v3/{tenant}"}],
            }
        ],
        "project_name": "demo",
    }


def build_bodies(count: int, tenants: int, seed: int = 1) -> list[bytes]:
    """``count`` message bodies as oslo.messaging's messagingv2 driver publishes them."""
    rng = random.Random(seed)
    samples = [json.dumps(json.loads(p.read_text())) for p in sorted(SAMPLES.glob("*.json"))]
    if not samples:
        raise SystemExit(f"no notification samples in {SAMPLES}")
    projects = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(tenants)]
    users = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(tenants)]
    start = datetime.now(UTC).replace(tzinfo=None)
    bodies = []
    for i in range(count):
        t = rng.randrange(tenants)
        instance = str(uuid.UUID(int=t * INSTANCES_PER_TENANT + rng.randrange(INSTANCES_PER_TENANT)))
        text = rng.choice(samples).replace(SAMPLE_PROJECT, projects[t]).replace(SAMPLE_INSTANCE, instance)
        now = start + timedelta(milliseconds=i)
        # The notifier's own fields, then the driver's _unique_id and packed context.
        message = json.loads(text)
        message.update(message_id=str(uuid.uuid4()), timestamp=str(now))
        message["_unique_id"] = uuid.uuid4().hex
        context = nova_context(projects[t], users[t], f"req-{uuid.uuid4()}", now)
        message.update((f"_context_{key}", value) for key, value in context.items())
        envelope = {"oslo.version": "2.0", "oslo.message": json.dumps(message)}
        bodies.append(json.dumps(envelope).encode())
    return bodies


# -- RabbitMQ ------------------------------------------------------------------


@contextmanager
def vhost(host: str) -> Iterator[str]:
    """A vhost of this run's own for guest, deleted afterwards; yields its AMQP URL."""
    name = f"yagi-bench-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{host}/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def fill(url: str, bodies: list[bytes]) -> None:
    """Publish every body and wait until the queue holds them all, as oslo declares it."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=False)
        channel.queue_declare(ROUTING_KEY, durable=False)
        channel.queue_bind(ROUTING_KEY, EXCHANGE, routing_key=ROUTING_KEY)
        properties = pika.BasicProperties(
            content_type="application/json", content_encoding="utf-8", delivery_mode=2
        )
        for body in bodies:
            channel.basic_publish(EXCHANGE, ROUTING_KEY, body, properties)
        deadline = time.monotonic() + FILL_TIMEOUT_SECONDS
        while channel.queue_declare(ROUTING_KEY, passive=True).method.message_count < len(bodies):
            if time.monotonic() > deadline:
                raise RuntimeError(f"queue did not reach {len(bodies)} messages")
            connection.sleep(0.05)
    finally:
        connection.close()


def bare_consume(url: str, count: int, prefetch: int, batch_size: int, batch_wait_ms: int) -> Timing:
    """Consume ``count`` messages and ack them as the listener does: one ``multiple`` ack per
    ``batch_size`` messages, or when the oldest unacked one has waited ``batch_wait_ms``.

    The fair baseline: the same protocol work as the listener (prefetch, batched acks),
    without parsing or storing.  Timed from the first message to the last ack.
    """
    connection = pika.BlockingConnection(pika.URLParameters(url))
    received = acked = 0
    last_tag = 0
    batch_started = 0.0
    first = last = first_cpu = last_cpu = 0.0

    def ack_batch(channel) -> None:
        nonlocal acked, batch_started
        channel.basic_ack(last_tag, multiple=True)
        acked = received
        batch_started = 0.0

    def on_message(channel, method, properties, body):
        nonlocal received, last_tag, first, first_cpu, batch_started
        received += 1
        last_tag = method.delivery_tag
        if received == 1:
            first, first_cpu = time.perf_counter(), time.process_time()
        if not batch_started:
            batch_started = time.monotonic()
        if received - acked >= batch_size:
            ack_batch(channel)

    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=prefetch)
        channel.basic_consume(ROUTING_KEY, on_message)
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while acked < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"bare consumer acked only {acked} of {count}")
            connection.process_data_events(time_limit=batch_wait_ms / 1000)
            if received > acked and time.monotonic() - batch_started >= batch_wait_ms / 1000:
                ack_batch(channel)
        last, last_cpu = time.perf_counter(), time.process_time()
    finally:
        connection.close()
    return Timing((count - 1) / (last - first), (last_cpu - first_cpu) / (count - 1) * 1e6)


# -- the listener ----------------------------------------------------------------


def trained_dictionary(tenants: int) -> bytes:
    """A 64 KB dictionary trained on 3,000 other messages' stored text (codec.py's)."""
    import zstandard

    from yagi_meter.notification import parse
    from yagi_meter.store import codec

    received_at = datetime.now(UTC)
    texts = [
        codec.text_of(parse(body, received_at=received_at)) for body in build_bodies(3000, tenants, seed=2)
    ]
    return zstandard.train_dictionary(codec.DICTIONARY_BYTES, texts, threads=1).as_bytes()


def listen(
    url: str,
    redis_url: str,
    prefix: str,
    count: int,
    compress: bool,
    dictionary: bytes | None = None,
    tree: str | None = None,
) -> Timing:
    """Run ``yagi-meter listen`` until ``count`` events are stored, timed from the first batch to the last."""
    client = redis.Redis.from_url(redis_url)
    if dictionary is not None:
        from yagi_meter.store.dictionaries import Dictionaries
        from yagi_meter.store.keys import Keys

        Dictionaries(client, Keys(prefix)).add(dictionary)
    env = dict(
        os.environ,
        YAGI_CONFIG=os.devnull,
        YAGI_AMQP_URL=url,
        YAGI_REDIS_URL=redis_url,
        YAGI_REDIS_KEY_PREFIX=prefix,
        YAGI_REDIS_COMPRESS="true" if compress else "false",
        # No training during a timed run: the dictionary run brings its own.
        YAGI_REDIS_DICTIONARY_TRAIN_AFTER="0",
    )
    # The queue the bare consumer reads, as oslo.messaging declares it (non-durable): not
    # the listener's own default queues, which a pre-filled vhost would leave empty.
    env.setdefault("YAGI_AMQP_QUEUE", "{topic}.{priority}")
    env.setdefault("YAGI_AMQP_DURABLE", "false")
    if tree is not None:  # --baseline: the listener's code from another source tree
        env["PYTHONPATH"] = tree  # and run from there: -m puts the working directory first
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "yagi_meter", "listen"], env=env, stdout=log, stderr=log, cwd=tree
        )
        try:
            cpu_us = _wait_stored(client, prefix, count, child)
        finally:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        log.seek(0)
        output = log.read().decode(errors="replace")
    if child.returncode != 0:
        raise RuntimeError(f"listener exited with {child.returncode}:\n{output[-2000:]}")
    _check_store(client, prefix, count, output)
    return Timing(_batch_rate(client, prefix, count), cpu_us)


def _wait_stored(client: redis.Redis, prefix: str, count: int, child: subprocess.Popen) -> float:
    """Wait until ``count`` events are stored; the listener's CPU us per message meanwhile
    (from /proc, sampled every 20 ms from the first stored batch on)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    first_stored = first_cpu = None
    while (stored := client.xlen(prefix + "events")) < count:
        if child.poll() is not None:
            raise RuntimeError(f"listener died with {child.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"listener stored only {stored} of {count}")
        if stored and first_stored is None:
            first_stored, first_cpu = stored, _cpu_seconds(child.pid)
        time.sleep(0.02)
    if first_stored is None:  # all in one batch
        return float("nan")
    return (_cpu_seconds(child.pid) - first_cpu) / (count - first_stored) * 1e6


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _check_store(client: redis.Redis, prefix: str, count: int, output: str) -> None:
    stored = client.xlen(prefix + "events")
    quarantined = int(client.get(prefix + "quarantine:count") or 0)
    duplicates = int(client.get(prefix + "duplicates") or 0)
    if stored != count or quarantined or duplicates:
        raise RuntimeError(
            f"stored {stored} of {count}, quarantined {quarantined}, duplicates {duplicates}:\n"
            + output[-2000:]
        )


def _batch_rate(client: redis.Redis, prefix: str, count: int) -> float:
    """Messages/s between the first and the last batch, from the ms Redis stamped on each."""
    head = client.xrange(prefix + "events", count=5000)
    first_ms = int(head[0][1][b"t"])
    in_first = sum(1 for _, fields in head if int(fields[b"t"]) == first_ms)
    last_ms = int(client.xrevrange(prefix + "events", count=1)[0][1][b"t"])
    return (count - in_first) / ((last_ms - first_ms) / 1000)


# -- Redis memory ------------------------------------------------------------------


def memory_of(client: redis.Redis, prefix: str) -> dict[str, int]:
    """Bytes Redis uses for the keys under ``prefix`` (exact: SAMPLES 0), by kind of key:
    events, ids, by_time, indexes (tenant/resource/type zsets), outboxes."""
    kinds = {"tenant": "indexes", "resource": "indexes", "type": "indexes", "outbox": "outboxes"}
    usage: dict[str, int] = {}
    for key in client.scan_iter(match=prefix + "*", count=1000):
        kind = key.decode()[len(prefix) :].split(":", 1)[0]
        kind = kinds.get(kind, kind)
        usage[kind] = usage.get(kind, 0) + (client.memory_usage(key, samples=0) or 0)
    return usage


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    for key in client.scan_iter(match=prefix + "*", count=1000):
        client.delete(key)


# -- the run -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--redis-url", default="redis://localhost:6379/14")
    parser.add_argument("--amqp-host", default="localhost:5672")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also time a zlib listener run from the yagi_meter package in DIR (e.g. a "
        "`git archive main yagi_meter` export), alternating with this tree's in every round",
    )
    args = parser.parse_args(argv)

    amqp = config_module.load(environ={**os.environ, "YAGI_CONFIG": os.devnull}).amqp
    prefetch = amqp.prefetch
    bodies = build_bodies(args.messages, args.tenants)
    raw = statistics.mean(len(b) for b in bodies)
    inner = statistics.mean(len(json.loads(b)["oslo.message"]) for b in bodies)
    client = redis.Redis.from_url(args.redis_url)
    print(
        f"{args.messages} messages, mean body {raw:.0f} bytes (notification inside the envelope "
        f"{inner:.0f}), {args.tenants} tenants, prefetch {prefetch}, batch {amqp.batch_size}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )

    dictionary = trained_dictionary(args.tenants)
    variants: tuple[tuple[str, bool, bytes | None, str | None], ...] = (
        ("listen", True, None, None),
        ("listen, dictionary", True, dictionary, None),
        ("listen, no compression", False, None, None),
    )
    if args.baseline:
        variants += (("listen, baseline", True, None, args.baseline),)
    results: dict[str, list[Timing]] = {"bare": [], **{name: [] for name, _, _, _ in variants}}
    memory: dict[str, dict[str, int]] = {}
    run_id = uuid.uuid4().hex[:8]
    with vhost(args.amqp_host) as url:
        for number in range(1, args.rounds + 1):
            fill(url, bodies)
            results["bare"].append(
                bare_consume(url, args.messages, prefetch, amqp.batch_size, amqp.batch_wait_ms)
            )
            # The listeners' order rotates from round to round: the machine's load drifts.
            shift = (number - 1) % len(variants)
            for variant, (name, compress, use, tree) in enumerate(variants[shift:] + variants[:shift]):
                prefix = f"yagibench:{run_id}:{number}:{variant}:"
                try:
                    fill(url, bodies)
                    results[name].append(
                        listen(url, args.redis_url, prefix, args.messages, compress, use, tree)
                    )
                    memory[name] = memory_of(client, prefix)
                finally:
                    delete_prefix(client, prefix)
            print(
                f"round {number}: "
                + ", ".join(
                    f"{name} {timings[-1].rate:,.0f}/s ({timings[-1].cpu_us:.0f} us CPU/msg)"
                    for name, timings in results.items()
                ),
                flush=True,
            )

    rate = {name: statistics.median(t.rate for t in timings) for name, timings in results.items()}
    cpu = {name: statistics.median(t.cpu_us for t in timings) for name, timings in results.items()}
    ratios = [lst.rate / bare.rate for lst, bare in zip(results["listen"], results["bare"], strict=True)]
    cpu_ratios = [
        lst.cpu_us / bare.cpu_us for lst, bare in zip(results["listen"], results["bare"], strict=True)
    ]
    print(f"\nmedian of {args.rounds} rounds (first message stored or acked to last):")
    print(f"  {'':<24} {'messages/s':>10}  {'consumer CPU us/msg':>19}")
    for name in results:
        print(f"  {name:<24} {rate[name]:>10,.0f}  {cpu[name]:>19.0f}")
    print(
        f"  ratio listen/bare        {rate['listen'] / rate['bare']:>10.2f}  "
        f"(per round: {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    print(
        f"  CPU per message listen/bare {cpu['listen'] / cpu['bare']:>7.2f}  "
        f"(per round: {', '.join(f'{r:.2f}' for r in cpu_ratios)}; target at most 2.5)"
    )
    if args.baseline:
        versus = [
            lst.cpu_us / base.cpu_us
            for lst, base in zip(results["listen"], results["listen, baseline"], strict=True)
        ]
        print(
            f"  CPU per message listen/baseline {cpu['listen'] / cpu['listen, baseline']:.2f}  "
            f"(per round: {', '.join(f'{r:.2f}' for r in versus)})"
        )
    with_dict = [
        d.rate / bare.rate for d, bare in zip(results["listen, dictionary"], results["bare"], strict=True)
    ]
    dict_cpu = [
        d.cpu_us / bare.cpu_us for d, bare in zip(results["listen, dictionary"], results["bare"], strict=True)
    ]
    print(
        f"  ratio listen, dictionary/bare {rate['listen, dictionary'] / rate['bare']:>5.2f}  "
        f"(per round: {', '.join(f'{r:.2f}' for r in with_dict)}); dictionary/zlib listener "
        f"{rate['listen, dictionary'] / rate['listen']:.2f}"
    )
    print(
        f"  CPU per message listen, dictionary/bare {cpu['listen, dictionary'] / cpu['bare']:.2f}  "
        f"(per round: {', '.join(f'{r:.2f}' for r in dict_cpu)})"
    )
    print(f"\nRedis memory per event (MEMORY USAGE of every key / {args.messages}):")
    for name in memory:
        per_event = sum(memory[name].values()) / args.messages
        parts = ", ".join(
            f"{kind} {size / args.messages:,.0f}"
            for kind, size in sorted(memory[name].items(), key=lambda item: -item[1])
            if size / args.messages >= 1
        )
        print(f"  {name:<24} {per_event:>7,.0f} bytes  ({per_event / raw:.2f} x the raw body): {parts}")
    print(f"  raw body (envelope)      {raw:>7,.0f} bytes; notification alone {inner:,.0f} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
