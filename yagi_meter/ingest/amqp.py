"""The boundary to RabbitMQ: the only module that imports pika.

``Consumer`` declares and binds what the configuration names, consumes with
a prefetch window and hands received messages to the caller in order;
every pika failure, and a consumer the broker cancelled, comes out as
``ConnectionClosed``.
"""

from __future__ import annotations

import bz2
import logging
import lzma
import re
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from yagi_meter.config import Config
from yagi_meter.errors import AccessRefused, ConnectionClosed
from yagi_meter.ingest.ingestor import Message, bounded

log = logging.getLogger(__name__)

# oslo.messaging's [oslo_messaging_rabbit] kombu_compression makes kombu
# compress the body and name the method in a "compression" header.
_DECOMPRESSORS: dict[str, Callable[[], Any]] = {
    "application/x-gzip": zlib.decompressobj,  # kombu's "gzip" is zlib
    "application/x-bz2": bz2.BZ2Decompressor,
    "application/x-lzma": lzma.LZMADecompressor,
}


POLL_SLICE_SECONDS = 0.01


@dataclass(frozen=True)
class Delivery:
    """One received message: its tag for acking, and the message (body and source).

    A body larger than ``[amqp] max_message_bytes`` is cut to its head on
    arrival (``ingest.bounded``): it is held until acked, so only its head,
    size and digest are.
    """

    tag: int
    message: Message


@dataclass(frozen=True)
class Binding:
    queue: str
    exchange: str
    routing_key: str


def bindings(config: Config) -> list[Binding]:
    """Every (queue, exchange, routing key) to bind.

    One routing key ``<topic>.<priority>`` per configured topic and priority,
    bound on every configured exchange to the queue named by ``[amqp] queue``
    with ``{topic}`` and ``{priority}`` filled in: by default a queue of
    yagi-meter's own (``yagi-meter.notifications.info``), so that it gets a
    copy of every notification beside Ceilometer and any other consumer.
    """
    result = []
    for topic in config.amqp.topics:
        for priority in config.amqp.priorities:
            routing_key = f"{topic}.{priority}"
            queue = config.amqp.queue.replace("{topic}", topic).replace("{priority}", priority)
            for exchange in config.amqp.exchanges:
                result.append(Binding(queue, exchange, routing_key))
    return result


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError) as e:
        raise AccessRefused(_refusal(e)) from None
    except (pika.exceptions.AMQPError, OSError) as e:
        raise ConnectionClosed(f"{what}: {e!r}") from None


def _refusal(error: pika.exceptions.AMQPConnectionError) -> str:
    """One line from pika's refusal: what was refused, in the broker's own words."""
    if isinstance(error, pika.exceptions.ProbableAuthenticationError):
        what = "RabbitMQ refused the login (user or password)"
    else:
        what = "RabbitMQ refused access to the virtual host (missing, or no permission)"
    words = re.search(r"\(\d+\) '([^']*)'", repr(error))
    return f"{what}: {words.group(1)}" if words else what


class Consumer:
    """One connection and channel consuming every configured queue."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.received: list[Delivery] = []
        self.received_bytes = 0  # of the bodies in ``received``; the caller subtracts what it takes
        # pika has no type information: to mypy these are Any, None until connect().
        self._connection: Any = None
        self._channel: Any = None
        self._queue_by_tag: dict[str, str] = {}
        self._cancelled: list[str] = []

    def connect(self) -> None:
        """Connect, declare and bind, and start consuming; raise ConnectionClosed on failure."""
        params = pika.URLParameters(self.config.amqp.url)
        params.heartbeat = self.config.amqp.heartbeat
        params.connection_attempts = 1
        params.client_properties = {"connection_name": "yagi-meter listen"}
        with _translated("connect"):
            self._connection = pika.BlockingConnection(params)
            self._channel = self._connection.channel()
            links = bindings(self.config)
            for exchange in dict.fromkeys(b.exchange for b in links):
                self._ensure("exchange", exchange)
            for queue in dict.fromkeys(b.queue for b in links):
                self._ensure("queue", queue)
            for link in links:
                self._channel.queue_bind(link.queue, link.exchange, routing_key=link.routing_key)
            self._channel.basic_qos(prefetch_count=self.config.amqp.prefetch)
            self._cancelled.clear()
            self._queue_by_tag.clear()
            self._channel.add_on_cancel_callback(self._on_cancel)
            for queue in dict.fromkeys(b.queue for b in links):
                self._queue_by_tag[self._consume(queue)] = queue

    def _consume(self, queue: str) -> str:
        """Start consuming ``queue``; each delivery reaches ``_on_message`` as soon as pika has it.

        BlockingChannel.basic_consume would park deliveries, bodies whole, until
        the next dispatch, and none comes while connect() waits for the next
        queue's consume-ok: with a backlog of big messages, a prefetch window
        of them (GBs) piled up there.  The event sink pika's own consume()
        generator uses hands each one over at once, to be cut to its bounded
        form (max_message_bytes) before the next is read.
        """
        return self._channel._basic_consume_impl(
            queue=queue,
            auto_ack=False,
            exclusive=False,
            consumer_tag=None,
            alternate_event_sink=self._on_event,
        )

    def _on_event(self, event: Any) -> None:
        if hasattr(event, "body"):
            self._on_message(self._channel, event.method, event.properties, event.body)
        else:  # cancelled by the broker
            self._cancelled.append(event.method_frame.method.consumer_tag)

    def _ensure(self, kind: str, name: str) -> None:
        """Use an existing exchange or queue as it is; declare it if missing.

        Declaring an existing one with other flags than its creator used
        (oslo.messaging's durability) would close the channel, so look first.
        """
        durable = self.config.amqp.exchange_durable if kind == "exchange" else self.config.amqp.durable
        try:
            if kind == "exchange":
                self._channel.exchange_declare(name, exchange_type="topic", passive=True)
            else:
                self._channel.queue_declare(name, passive=True)
            return
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code != 404:
                raise
        self._channel = self._connection.channel()
        if kind == "exchange":
            self._channel.exchange_declare(name, exchange_type="topic", durable=durable)
        elif self.config.amqp.queue_type == "quorum":
            self._channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
        else:
            self._channel.queue_declare(name, durable=durable)
        log.info(
            "declared %s %s (durable=%s, queue_type=%s)", kind, name, durable, self.config.amqp.queue_type
        )

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        source = f"{method.exchange}/{method.routing_key}"
        compression = (properties.headers or {}).get("compression")
        if compression:
            body = _decompressed(body, compression, self.config.amqp.max_body_bytes, source)
        message = bounded(body, source, self.config.amqp.max_message_bytes)
        self.received.append(Delivery(method.delivery_tag, message))
        self.received_bytes += len(message.body)

    def _on_cancel(self, method_frame: Any) -> None:
        # RabbitMQ cancels a consumer when its queue is deleted or the node
        # holding it fails; pika then just stops delivering, silently.
        self._cancelled.append(method_frame.method.consumer_tag)

    def _check_consumers(self) -> None:
        if self._cancelled:
            queues = ", ".join(self._queue_by_tag.get(tag, tag) for tag in self._cancelled)
            raise ConnectionClosed(f"the broker cancelled the consumer of {queues} (queue deleted?)")

    def poll(self, seconds: float) -> None:
        """Receive for up to ``seconds``; new messages are appended to ``received``.

        At most POLL_SLICE_SECONDS at a time: pika reads on until the time is
        up, and the caller stops receiving once a batch's bytes are held.
        """
        with _translated("receive"):
            self._connection.process_data_events(time_limit=min(seconds, POLL_SLICE_SECONDS))
        self._check_consumers()

    def sleep(self, seconds: float) -> None:
        """Wait while keeping the connection alive (heartbeats)."""
        with _translated("sleep"):
            self._connection.sleep(seconds)
        self._check_consumers()

    def ack_through(self, tag: int) -> None:
        """Acknowledge every message up to and including ``tag``."""
        with _translated("ack"):
            self._channel.basic_ack(delivery_tag=tag, multiple=True)

    def close(self) -> None:
        """Close the connection; unacknowledged messages go back to their queues."""
        self.received.clear()
        self.received_bytes = 0
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError) as e:
                log.warning("closing the AMQP connection: %r", e)


def _decompressed(body: bytes, compression: str | bytes, limit: int, source: str) -> bytes:
    """The body as it was before kombu compressed it.

    When that cannot be had (unknown method, bad data, larger than ``limit``)
    the body is passed on as received, so it is quarantined whole.
    """
    if isinstance(compression, bytes):
        compression = compression.decode("utf-8", errors="replace")
    decompressor = _DECOMPRESSORS.get(compression)
    if decompressor is None:
        log.warning("message from %s compressed with %s, which is not supported", source, compression)
        return body
    try:
        plain = decompressor().decompress(body, limit + 1)
    except (zlib.error, lzma.LZMAError, OSError, ValueError, EOFError) as e:
        log.warning("message from %s: %s body does not decompress: %s", source, compression, e)
        return body
    if len(plain) > limit:
        log.warning("message from %s: %s body expands past max_body_bytes %d", source, compression, limit)
        return body
    return plain


def queue_depths(config: Config) -> dict[str, dict[str, int]]:
    """Messages waiting and consumers attached per configured queue (passive look)."""
    params = pika.URLParameters(config.amqp.url)
    params.connection_attempts = 1
    params.socket_timeout = 3
    depths = {}
    with _translated("queue depths"):
        connection = pika.BlockingConnection(params)
        try:
            for queue in dict.fromkeys(b.queue for b in bindings(config)):
                channel = connection.channel()
                try:
                    ok = channel.queue_declare(queue, passive=True).method
                except pika.exceptions.ChannelClosedByBroker:
                    continue  # not declared yet
                depths[queue] = {"messages": ok.message_count, "consumers": ok.consumer_count}
                channel.close()
        finally:
            connection.close()
    return depths
