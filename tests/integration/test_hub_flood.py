"""A flood of subscription requests to a tarpit callback, against real servers on
127.0.0.1 and real Redis: it must not delay a verified subscriber's deliveries,
and the Redis memory it takes is bounded."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis

from tests.conftest import TEST_REDIS_URL
from tests.hub_helpers import tenant_topic, wait_until
from tests.integration.test_hub import Hub, hub_config
from tests.servers.subscriber import Subscriber

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLOOD = 2000
CLIENTS = 10  # distinct client addresses: 10 x max_pending_per_client (20) > max_pending_per_topic
PENDING_PER_TOPIC = 100  # the default [hub] max_pending_per_topic
# Redis bytes the flood may take under the hub's keys: max_pending_per_topic intents
# of ~2 KB callbacks, at most 6 KB each (MEMORY USAGE, zset entries included).
MEMORY_BOUND = PENDING_PER_TOPIC * 6144


class Tarpit:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._thread.join(5)
        for connection in self.accepted:
            connection.close()


def hub_memory(client: redis.Redis, prefix: str) -> int:
    """Bytes Redis holds for the hub's keys under ``prefix`` (MEMORY USAGE of each)."""
    return sum(client.memory_usage(key) or 0 for key in client.scan_iter(match=f"{prefix}hub:*", count=1000))


def delivery_latency(hub: Hub, subscriber: Subscriber, samples: int = 3) -> float:
    """The slowest of ``samples`` times from ingest to the subscriber's receipt, in seconds."""
    worst = 0.0
    for _ in range(samples):
        before = len(subscriber.posts)
        started = time.time()
        hub.ingest(1)
        assert subscriber.wait_for(lambda before=before: len(subscriber.posts) > before, timeout=20), (
            "not delivered"
        )
        worst = max(worst, subscriber.posts[before].at - started)
    return worst


def test_a_flood_to_a_tarpit_neither_delays_a_subscriber_nor_grows_redis_unbounded(key_prefix):
    tarpit = Tarpit()
    hub = Hub(hub_config(key_prefix)).start()
    redis_client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        with Subscriber() as subscriber:
            hub.subscribe(subscriber, "/legit", tenant_topic())
            quiet = delivery_latency(hub, subscriber)
            memory_before = hub_memory(redis_client, key_prefix)

            padding = "p" * 1900
            statuses: dict[int, int] = {}
            for i in range(FLOOD):
                callback = f"http://127.0.0.1:{tarpit.port}/f{i}?pad={padding}"
                response = hub.client.post(
                    "/hub",
                    data={"hub.mode": "subscribe", "hub.callback": callback, "hub.topic": tenant_topic()},
                    environ_base={"REMOTE_ADDR": f"127.0.1.{i % CLIENTS}"},
                )
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            grown = hub_memory(redis_client, key_prefix) - memory_before
            # The tarpit is being verified (its connections held open) while we measure.
            assert wait_until(lambda: len(tarpit.accepted) >= 1)
            flooded = delivery_latency(hub, subscriber)
            print(
                f"\nflood: {statuses}; hub keys grew {grown} bytes; delivery "
                f"{quiet * 1000:.0f} ms quiet, {flooded * 1000:.0f} ms under the flood; "
                f"tarpit connections {len(tarpit.accepted)}"
            )
            assert flooded - quiet < 1.0
            assert grown < MEMORY_BOUND
            # Verifications that time out meanwhile free a place or two for the flood.
            assert set(statuses) == {202, 429} and statuses[429] >= FLOOD - 2 * PENDING_PER_TOPIC
            assert redis_client.zcard(hub.keys.hub_intents) <= PENDING_PER_TOPIC
    finally:
        tarpit.close()
        hub.stop()
        redis_client.close()
