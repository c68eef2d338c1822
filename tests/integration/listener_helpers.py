"""Helpers of the listener integration tests: real processes, real RabbitMQ and Redis.

A listener runs as ``python -m yagi_meter listen`` with its configuration in
the environment and its log in a file.  Publishing uses pika with publisher
confirms, so a message counted as published is in its queue.  Every wait is
bounded and says what it was waiting for when it gives up.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pika
import redis

from tests.processes import spawn
from yagi_meter.config import Config
from yagi_meter.store import codec, open_store
from yagi_meter.store.keys import Keys
from yagi_meter.store.partitions import partition_of
from yagi_meter.store.quarantine import Quarantine

EXCHANGE = "nova"
ROUTING_KEY = "notifications.info"
# The queue a listener with the default [amqp] queue consumes for ROUTING_KEY.
QUEUE = "yagi-meter.notifications.info"
EVENT_TYPE = "compute.instance.create.end"


# -- waiting ---------------------------------------------------------------


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    details: Callable[[], str] | None = None,
    interval: float = 0.05,
) -> object:
    """Poll ``predicate`` until it is truthy and return its value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


# -- notifications ---------------------------------------------------------


def notification(tenant_id: str, index: int, message_id: str | None = None) -> dict:
    """A legacy nova notification as oslo.messaging's ``messaging`` driver sends it."""
    return {
        "message_id": message_id or str(uuid.uuid4()),
        "event_type": EVENT_TYPE,
        "publisher_id": "compute.host1",
        "priority": "INFO",
        "timestamp": "2026-11-24 15:00:00.000000",
        "payload": {
            "tenant_id": tenant_id,
            "user_id": "user-1",
            "instance_id": f"instance-{index:06d}",
            "state": "active",
        },
    }


def notifications(count: int, tenant_id: str | None = None) -> tuple[str, list[str], list[bytes]]:
    """``count`` notifications of one fresh tenant: (tenant_id, message_ids, bodies)."""
    tenant_id = tenant_id or f"tenant-{uuid.uuid4().hex[:8]}"
    messages = [notification(tenant_id, i) for i in range(count)]
    return tenant_id, [m["message_id"] for m in messages], [json.dumps(m).encode() for m in messages]


# -- RabbitMQ --------------------------------------------------------------


def vhost_of(amqp_url: str) -> str:
    return unquote(urlsplit(amqp_url).path.lstrip("/")) or "/"


def reset_vhost(amqp_url: str, config: Config) -> None:
    """Delete the queues and exchanges a listener with ``config`` uses, and the queues
    oslo.messaging declares (``<topic>.<priority>``), so a test starts clean."""
    from yagi_meter.ingest.amqp import bindings

    links = bindings(config)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for queue in dict.fromkeys([b.queue for b in links] + [b.routing_key for b in links]):
            channel.queue_delete(queue)
        for exchange in dict.fromkeys(b.exchange for b in links):
            channel.exchange_delete(exchange)
    finally:
        connection.close()


def declare_like_oslo(amqp_url: str, exchange: str = EXCHANGE, routing_key: str = ROUTING_KEY) -> None:
    """Declare what oslo.messaging's notifier declares when it sends: a topic exchange
    and a queue named after the routing key, both non-durable by default."""
    declare_bound(amqp_url, routing_key, durable=False, exchange=exchange, routing_key=routing_key)


def declare_listener_queue(amqp_url: str) -> None:
    """Declare what a listener with the default configuration declares at its first
    start (its own durable queue for ROUTING_KEY), so messages published before it
    runs wait for it there."""
    declare_bound(amqp_url, QUEUE, durable=True)


def declare_bound(
    amqp_url: str, queue: str, durable: bool, exchange: str = EXCHANGE, routing_key: str = ROUTING_KEY
) -> None:
    """A non-durable topic exchange (as oslo.messaging declares it) and ``queue`` bound to it."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange, exchange_type="topic")
        channel.queue_declare(queue, durable=durable)
        channel.queue_bind(queue, exchange, routing_key=routing_key)
    finally:
        connection.close()


class Publisher:
    """One pika connection publishing with confirms: ``publish`` returns once RabbitMQ has it."""

    def __init__(self, amqp_url: str, exchange: str = EXCHANGE, routing_key: str = ROUTING_KEY) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def publish(self, body: bytes, headers: dict | None = None) -> None:
        """Publish one body; raises when it cannot be routed to a queue."""
        self.channel.basic_publish(
            self.exchange,
            self.routing_key,
            body,
            pika.BasicProperties(content_type="application/json", delivery_mode=2, headers=headers),
            mandatory=True,
        )

    def publish_all(self, bodies: Iterable[bytes]) -> int:
        count = 0
        for body in bodies:
            self.publish(body)
            count += 1
        return count

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


class BackgroundPublisher(threading.Thread):
    """Publishes ``bodies`` from a thread at about ``rate`` messages per second (None: at once).

    ``published`` counts confirmed messages; ``paused()`` holds publishing
    still, so a reading of the queue and of ``published`` belong together.
    """

    def __init__(self, amqp_url: str, bodies: Sequence[bytes], rate: float | None = None) -> None:
        super().__init__(daemon=True)
        self.amqp_url = amqp_url
        self.bodies = bodies
        self.rate = rate
        self.published = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def run(self) -> None:
        publisher = Publisher(self.amqp_url)
        try:
            started = time.monotonic()
            for body in self.bodies:
                if self._stop_event.is_set():
                    return
                with self._lock:
                    publisher.publish(body)
                    self.published += 1
                if self.rate:
                    ahead = self.published / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except BaseException as e:  # reported by finish()
            self.error = e
        finally:
            publisher.close()

    def paused(self) -> threading.Lock:
        return self._lock

    def finish(self, timeout: float) -> int:
        """Wait for every body to be published; return how many were."""
        self.join(timeout)
        if self.is_alive():
            self._stop_event.set()
            self.join(5)
            raise AssertionError(f"publishing did not finish in {timeout}s ({self.published} published)")
        if self.error is not None:
            raise AssertionError(f"publishing failed after {self.published}: {self.error!r}")
        return self.published

    def abort(self) -> None:
        self._stop_event.set()
        self.join(10)


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def queue_counts(amqp_url: str) -> dict[str, tuple[int, int]]:
    """Every queue of the vhost: (ready, unacknowledged), read from the broker itself."""
    out = rabbitmqctl(
        "list_queues",
        "-p",
        vhost_of(amqp_url),
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "--formatter",
        "json",
    )
    return {q["name"]: (q["messages_ready"], q["messages_unacknowledged"]) for q in json.loads(out or "[]")}


def messages_in(amqp_url: str, queue: str = QUEUE) -> int:
    """Messages in ``queue`` not yet acknowledged (ready + delivered, unacked)."""
    ready, unacked = queue_counts(amqp_url).get(queue, (0, 0))
    return ready + unacked


def close_connections(amqp_url: str, connection_name: str, reason: str = "test") -> int:
    """Close, from the broker side, every connection of the vhost with this client name."""
    # Tab-separated rows: pid, vhost, client properties ({"connection_name","..."} among them).
    out = rabbitmqctl("-s", "list_connections", "pid", "vhost", "client_properties")
    vhost = vhost_of(amqp_url)
    closed = 0
    for line in out.splitlines():
        pid, row_vhost, properties = line.split("\t", 2)
        if row_vhost == vhost and f'{{"connection_name","{connection_name}"}}' in properties:
            rabbitmqctl("close_connection", pid, reason)
            closed += 1
    return closed


# -- the listener process --------------------------------------------------


def listener_env(amqp_url: str, redis_url: str, key_prefix: str, **settings: str) -> dict[str, str]:
    """Environment of a listener: nothing from a yagi.conf or the caller's YAGI_* variables."""
    from tests.conftest import child_env

    env = child_env()
    env.update(
        YAGI_CONFIG=os.devnull,
        YAGI_AMQP_URL=amqp_url,
        YAGI_REDIS_URL=redis_url,
        YAGI_REDIS_KEY_PREFIX=key_prefix,
        # Short backoff so recoveries happen within a test's time.
        YAGI_AMQP_RECONNECT_MAX_SECONDS="1",
    )
    env.update({f"YAGI_{name.upper()}": value for name, value in settings.items()})
    return env


class ListenerProcess:
    """``yagi-meter listen`` in a child process, its output in ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # closed in cleanup()
        self.process = spawn(
            [sys.executable, "-m", "yagi_meter", "listen"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return f"--- {self.log_path.name} (exit {self.process.poll()}) ---\n" + "\n".join(
            self.log().splitlines()[-lines:]
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_for_log(self, text: str, timeout: float = 20, count: int = 1) -> None:
        """Wait until ``text`` appears ``count`` times in the log; fail early if the process died."""

        def seen() -> bool:
            if self.log().count(text) >= count:
                return True
            if not self.running():
                raise AssertionError(f"listener exited before logging {text!r}\n{self.log_tail()}")
            return False

        wait_until(seen, timeout, f"{text!r} in the listener log", self.log_tail)

    def wait_consuming(self, timeout: float = 20, count: int = 1) -> None:
        self.wait_for_log("consuming; prefetch", timeout, count)

    def stopped_totals(self) -> dict[str, int]:
        """The counts the listener logged when it stopped: stored, duplicates, conflicts, quarantined."""
        found = re.search(
            r"stopped; stored (\d+), duplicates (\d+), conflicts (\d+), quarantined (\d+)", self.log()
        )
        assert found, f"no 'stopped' line in the log\n{self.log_tail()}"
        return dict(
            zip(("stored", "duplicates", "conflicts", "quarantined"), map(int, found.groups()), strict=True)
        )

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, then wait for the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"listener ignored SIGTERM for {timeout}s\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything."""
        self.process.kill()
        self.process.wait(10)

    def cleanup(self) -> None:
        if self.running():
            self.process.kill()
            self.process.wait(10)
        self._log.close()


def run_cli(env: dict[str, str], *args: str) -> str:
    """Run ``yagi-meter ARGS`` and return its standard output."""
    result = subprocess.run(
        [sys.executable, "-m", "yagi_meter", *args], env=env, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise AssertionError(f"yagi-meter {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result.stdout


def status(env: dict[str, str]) -> dict:
    return json.loads(run_cli(env, "status", "--json"))


# -- Redis -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of a test's own (append-only, so its data survives a kill)."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        persistence: tuple[str, ...] = ("--save", "", "--appendonly", "yes"),
    ) -> None:
        """``persistence``: redis-server options; the default is append-only, no snapshots."""
        self.directory = directory
        self.persistence = persistence
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> None:
        self.process = spawn(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *self.persistence,
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except (redis.ConnectionError, redis.BusyLoadingError):
                if self.process.poll() is not None:
                    raise AssertionError(f"redis-server on port {self.port} exited") from None
                return False

        wait_until(answers, timeout, f"redis-server on port {self.port}")
        client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def shutdown(self) -> None:
        """SHUTDOWN: Redis writes its append-only file and exits."""
        with redis.Redis.from_url(self.url, socket_timeout=5) as client:
            client.shutdown()
        self.process.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def suite_partitions() -> int:
    """The partition count the suite runs with (YAGI_REDIS_PARTITIONS, .ci/run's second pass)."""
    return int(os.environ.get("YAGI_REDIS_PARTITIONS", "1"))


class StoredEvents:
    """What a test's key prefix holds, read straight from Redis (every partition)."""

    def __init__(self, client: redis.Redis, key_prefix: str) -> None:
        self.client = client
        self.prefix = key_prefix
        self.parts = Keys.partitions(key_prefix, suite_partitions())
        self.keys = self.parts[0]

    @property
    def quarantine(self) -> Quarantine:
        """The quarantine under this prefix, read through the store."""
        from tests.conftest import make_config

        return open_store(make_config(redis_key_prefix=self.prefix), client=self.client).quarantine

    def count(self) -> int:
        return sum(self.client.xlen(k.events) for k in self.parts)

    def message_ids(self) -> list[str]:
        """The message_id of every entry of the events streams, in ingest order in each partition."""
        ids: list[str] = []
        for k in self.parts:
            start = "-"
            while True:
                entries = self.client.xrange(k.events, start, "+", count=5000)
                ids.extend(fields[b"m"].decode() for _, fields in entries)
                if len(entries) < 5000:
                    break
                start = "(" + entries[-1][0].decode()
        return ids

    def events(self) -> list:
        """Every stored Event, decoded."""
        return [
            codec.decode(fields[b"d"], int(entry_id.split(b"-")[0]), int(fields[b"t"]))
            for k in self.parts
            for entry_id, fields in self.client.xrange(k.events, "-", "+")
        ]

    def duplicates_counted(self) -> int:
        """Redelivered events and repeated quarantined messages, as ``status`` counts them."""
        events = sum(int(self.client.get(k.duplicates) or 0) for k in self.parts)
        return events + int(self.client.get(self.keys.quarantine_repeats) or 0)

    def assert_exactly_once(self, message_ids: Sequence[str], tenant_id: str) -> None:
        """Every one of ``message_ids`` stored exactly once, in every place, and nothing else."""
        wanted = set(message_ids)
        assert len(wanted) == len(message_ids)
        in_stream = Counter(self.message_ids())
        doubled = [m for m, n in in_stream.items() if n > 1]
        assert not doubled, f"{len(doubled)} message_ids stored twice, e.g. {doubled[:3]}"
        missing = wanted - set(in_stream)
        assert not missing, f"{len(missing)} of {len(wanted)} never stored, e.g. {sorted(missing)[:3]}"
        extra = set(in_stream) - wanted
        assert not extra, f"{len(extra)} unexpected events, e.g. {sorted(extra)[:3]}"
        assert sum(self.client.hlen(k.ids) for k in self.parts) == len(wanted)
        # A tenant's events are in one partition.
        k = self.parts[partition_of(tenant_id, len(self.parts))] if len(self.parts) > 1 else self.keys
        seqs = self.client.hmget(k.ids, list(message_ids))
        seqs = [int(value.split(b" ")[0]) for value in seqs]
        assert len(set(seqs)) == len(seqs), "two message_ids share a sequence number"
        tenant_index = k.tenant(tenant_id)
        assert self.client.zcard(tenant_index) == len(wanted)
        scores = self.client.zmscore(tenant_index, seqs)
        absent = [m for m, score in zip(message_ids, scores, strict=True) if score is None]
        assert not absent, f"{len(absent)} message_ids missing from the tenant index, e.g. {absent[:3]}"
