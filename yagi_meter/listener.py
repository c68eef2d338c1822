"""``yagi-meter listen``: consume notifications, store them in batches, then ack.

The loop is plain: receive until the batch is full or old enough, store it
in one Redis round trip, acknowledge it with one ``multiple`` ack.  Nothing
is acknowledged before it is stored.  Redis down: keep the batch, back off,
retry.  RabbitMQ down: drop the unacknowledged batch (the broker redelivers
it; the store ignores what it already has) and reconnect with backoff.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

from yagi_meter.amqp import Consumer
from yagi_meter.config import Config
from yagi_meter.errors import AccessRefused, ConnectionClosed, StoreError
from yagi_meter.ingest import Ingestor, Message, Summary

log = logging.getLogger(__name__)

RETENTION_EVERY_SECONDS = 600
FIRST_BACKOFF_SECONDS = 0.2
# Longest a backoff wait goes without looking whether SIGTERM asked to stop.
STOP_CHECK_SECONDS = 0.1


class Listener:
    """Moves messages from RabbitMQ into the store until ``stop()`` or SIGTERM."""

    def __init__(self, config: Config, ingestor: Ingestor, consumer: Consumer | None = None) -> None:
        self.config = config
        self.ingestor = ingestor
        self.consumer = consumer or Consumer(config)
        self.totals = Summary()
        self._stopping = False
        self._next_retention = time.monotonic()

    def stop(self, *_: object) -> None:
        """Finish the batch in hand, acknowledge it and return from ``run``."""
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        connected_once = False
        while not self._stopping:
            try:
                self.consumer.connect()
                connected_once = True
                log.info(
                    "consuming; prefetch %d, batch %d", self.config.amqp.prefetch, self.config.amqp.batch_size
                )
                backoff = FIRST_BACKOFF_SECONDS
                self._consume()
            except (AccessRefused, ConnectionClosed) as e:
                self.consumer.close()
                if isinstance(e, AccessRefused) and not connected_once:
                    raise  # wrong credentials or vhost at start: a configuration error
                if self._stopping:
                    break
                log.error("RabbitMQ connection lost (%s); reconnecting in %.1fs", e, backoff)
                self.ingestor.store.errors.record("listen", f"RabbitMQ connection lost: {e}")
                self._wait(backoff, time.sleep)
                backoff = min(backoff * 2, self.config.amqp.reconnect_max_seconds)
        self.consumer.close()
        log.info(
            "stopped; stored %d, duplicates %d, conflicts %d, quarantined %d",
            self.totals.stored,
            self.totals.duplicates,
            self.totals.conflicts,
            self.totals.quarantined,
        )

    def _consume(self) -> None:
        batch_size = self.config.amqp.batch_size
        wait = self.config.amqp.batch_wait_ms / 1000
        received = self.consumer.received
        while not self._stopping:
            deadline = time.monotonic() + wait
            while len(received) < batch_size and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.consumer.poll(remaining)
            if received:
                self._store_and_ack()
            self._maybe_expire()
        if received:
            self._store_and_ack()

    def _store_and_ack(self) -> None:
        received = self.consumer.received
        batch = list(received)
        messages = [Message(d.body, d.source) for d in batch]
        backoff = FIRST_BACKOFF_SECONDS
        while True:
            try:
                summary = self.ingestor.ingest(messages)
                break
            except StoreError as e:
                if self._stopping:
                    log.error(
                        "Redis unavailable while stopping (%s); leaving %d messages "
                        "unacknowledged for redelivery",
                        e,
                        len(batch),
                    )
                    raise ConnectionClosed("stopping without Redis") from None
                log.error(
                    "Redis unavailable (%s); holding %d messages, retry in %.1fs", e, len(batch), backoff
                )
                self._wait(backoff, self.consumer.sleep)
                backoff = min(backoff * 2, self.config.amqp.reconnect_max_seconds)
        self.consumer.ack_through(batch[-1].tag)
        del received[: len(batch)]
        self.totals.add(summary)

    def _wait(self, seconds: float, sleep: Callable[[float], None]) -> None:
        """Back off for ``seconds`` in short steps; return early once stopping.

        A signal does not cut a sleep short, so one long sleep would hold
        SIGTERM for up to reconnect_max_seconds.
        """
        deadline = time.monotonic() + seconds
        while not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            sleep(min(remaining, STOP_CHECK_SECONDS))

    def _maybe_expire(self) -> None:
        if time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + RETENTION_EVERY_SECONDS
        try:
            removed = self.ingestor.store.events.expire(self.config.redis.retention_days)
        except StoreError as e:
            log.error("retention failed: %s; trying again in %ds", e, RETENTION_EVERY_SECONDS)
            self.ingestor.store.errors.record("listen", f"retention failed: {e}")
            return
        if removed:
            log.info(
                "retention removed %d events older than %s days", removed, self.config.redis.retention_days
            )
