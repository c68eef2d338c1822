"""``yagi-meter listen``: consume notifications, store them in batches, then ack.

The loop is plain: receive until the batch is full or old enough, store it
in one Redis round trip, acknowledge it with one ``multiple`` ack.  While
Redis executes one batch the next is received and parsed (the write is sent
and its reply read later), so the two overlap.  Nothing is acknowledged
before it is stored.  Redis down: keep the batch, back off,
retry.  RabbitMQ down: drop the unacknowledged batch (the broker redelivers
it; the store ignores what it already has) and reconnect with backoff.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass

from yagi_meter.config import Config
from yagi_meter.daemon import Backoff, Lifecycle
from yagi_meter.errors import AccessRefused, ConnectionClosed, StoreError
from yagi_meter.ingest.amqp import Consumer, Delivery
from yagi_meter.ingest.ingestor import Batch, Ingestor, Summary
from yagi_meter.store.events import PendingWrite

log = logging.getLogger(__name__)

GC_THRESHOLD = 50_000
FIRST_BACKOFF_SECONDS = 0.2


@dataclass
class _InFlight:
    """A batch sent to Redis and not yet acknowledged."""

    batch: Batch
    last_tag: int
    pending: PendingWrite | None  # None: to be sent (again)


class Listener:
    """Moves messages from RabbitMQ into the store until ``stop()`` or SIGTERM."""

    def __init__(self, config: Config, ingestor: Ingestor, consumer: Consumer | None = None) -> None:
        self.config = config
        self.ingestor = ingestor
        self.consumer = consumer or Consumer(config)
        self.totals = Summary()
        self.lifecycle = Lifecycle("listen", ingestor.store.errors)

    def stop(self, *_: object) -> None:
        """Finish the batch in hand, acknowledge it and return from ``run``."""
        self.lifecycle.stop()

    def run(self) -> None:
        # Parsing allocates many short-lived dicts: the cyclic collector's default
        # (a pass every 700 allocations) costs ~8% of ingest.  Objects made at
        # start are frozen out of its passes; passes still run, just less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 20, 100)
        reconnect = Backoff(FIRST_BACKOFF_SECONDS, self.config.amqp.reconnect_max_seconds)
        connected_once = False
        while not self.lifecycle.stopping:
            try:
                self.consumer.connect()
                connected_once = True
                log.info(
                    "consuming; prefetch %d, batch %d", self.config.amqp.prefetch, self.config.amqp.batch_size
                )
                reconnect.reset()
                self._consume()
            except (AccessRefused, ConnectionClosed) as e:
                self.consumer.close()
                if isinstance(e, AccessRefused) and not connected_once:
                    raise  # wrong credentials or vhost at start: a configuration error
                if self.lifecycle.stopping:
                    break
                delay = reconnect.next()
                log.error("RabbitMQ connection lost (%s); reconnecting in %.1fs", e, delay)
                self.lifecycle.record(f"RabbitMQ connection lost: {e}")
                self.lifecycle.wait(delay)
        self.consumer.close()
        log.info(
            "stopped; stored %d, duplicates %d, conflicts %d, quarantined %d",
            self.totals.stored,
            self.totals.duplicates,
            self.totals.conflicts,
            self.totals.quarantined,
        )

    def _consume(self) -> None:
        """Receive batch N+1 while Redis stores batch N; ack N once Redis has it."""
        batch_size = self.config.amqp.batch_size
        max_bytes = self.config.amqp.max_batch_bytes
        wait = self.config.amqp.batch_wait_ms / 1000
        consumer = self.consumer
        received = consumer.received
        lifecycle = self.lifecycle
        flight: _InFlight | None = None
        try:
            while True:
                deadline = time.monotonic() + wait
                # Not receiving while a batch's worth of bytes is held: pika
                # then reads no more from the socket, and RabbitMQ waits.
                while (
                    not lifecycle.stopping
                    and len(received) < batch_size
                    and consumer.received_bytes < max_bytes
                ):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    consumer.poll(remaining)
                if received:
                    taken = self._take(received, batch_size, max_bytes)
                    batch = self.ingestor.prepare([d.message for d in taken])
                    if flight is not None:
                        self._finish(flight)
                    flight = self._send(batch, taken[-1].tag)
                elif flight is not None:
                    self._finish(flight)
                    flight = None
                if lifecycle.stopping and not received:
                    break
            if flight is not None:
                self._finish(flight)
                flight = None
        finally:
            if flight is not None and flight.pending is not None:
                flight.pending.abandon()  # not acknowledged: the broker redelivers it

    def _take(self, received: list[Delivery], count: int, max_bytes: int) -> list[Delivery]:
        """The oldest deliveries up to ``count`` and ``max_bytes`` of bodies (at least one)."""
        size = 0
        end = 0
        while end < min(count, len(received)):
            size += len(received[end].message.body)
            if end and size > max_bytes:
                size -= len(received[end].message.body)
                break
            end += 1
        taken = received[:end]
        del received[:end]
        self.consumer.received_bytes -= size
        return taken

    def _send(self, batch: Batch, last_tag: int) -> _InFlight:
        try:
            pending = self.ingestor.store.events.send(batch.call)
        except StoreError:
            pending = None  # _finish retries it
        return _InFlight(batch, last_tag, pending)

    def _finish(self, flight: _InFlight) -> None:
        """Wait until Redis has the batch (retrying while it is down), then acknowledge it."""
        retry = Backoff(FIRST_BACKOFF_SECONDS, self.config.amqp.reconnect_max_seconds)
        while True:
            try:
                if flight.pending is None:
                    flight.pending = self.ingestor.store.events.send(flight.batch.call)
                result = flight.pending.result()
                break
            except StoreError as e:
                flight.pending = None
                if self.lifecycle.stopping:
                    log.error(
                        "Redis unavailable while stopping (%s); leaving %d messages "
                        "unacknowledged for redelivery",
                        e,
                        len(flight.batch.call.events) + flight.batch.quarantined,
                    )
                    raise ConnectionClosed("stopping without Redis") from None
                delay = retry.next()
                log.error(
                    "Redis unavailable (%s); holding %d messages, retry in %.1fs",
                    e,
                    len(flight.batch.call.events) + flight.batch.quarantined,
                    delay,
                )
                self.lifecycle.wait(delay, self.consumer.sleep)
        flight.pending = None
        self.consumer.ack_through(flight.last_tag)
        self.totals.add(self.ingestor.summarize(flight.batch, result))
