"""The one path from raw message bodies to stored events, shared by listen, replay and requeue."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from yagi_meter.config import Config
from yagi_meter.errors import BadNotification
from yagi_meter.notification import Event, parse
from yagi_meter.ownership import Billing, parse_mapping
from yagi_meter.store import Store
from yagi_meter.store.events import (
    EncodedEvent,
    Ingested,
    Rejected,
    WriteCall,
    WriteResult,
)

log = logging.getLogger(__name__)

# How much of a too large message the quarantine keeps: enough to see what it was.
HEAD_BYTES = 4096


@dataclass(frozen=True)
class Message:
    """A raw message body and where it came from (``exchange/routing_key`` or a file).

    A message larger than ``[amqp] max_message_bytes`` is held in bounded form
    from arrival on (see ``bounded``): ``body`` is its head, ``size`` its
    whole length and ``sha256`` the digest of the whole.
    """

    body: bytes
    source: str
    size: int | None = None
    sha256: str | None = None

    @property
    def too_large(self) -> bool:
        return self.size is not None and self.size > len(self.body)


def bounded(body: bytes, source: str, limit: int) -> Message:
    """A message of ``body``, cut to its head with size and digest when longer than ``limit``."""
    if len(body) <= limit:
        return Message(body, source)
    return Message(body[:HEAD_BYTES], source, len(body), hashlib.sha256(body).hexdigest())


@dataclass
class Summary:
    """Counts of what one ingest call did."""

    stored: int = 0
    duplicates: int = 0  # events already stored, and messages already in the quarantine
    conflicts: int = 0
    quarantined: int = 0

    def add(self, other: Summary) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.conflicts += other.conflicts
        self.quarantined += other.quarantined


@dataclass(frozen=True)
class Batch:
    """A parsed and encoded batch, ready to be written."""

    call: WriteCall
    quarantined: int


class Ingestor:
    """Parses a batch, quarantines what cannot be parsed, stores the rest in one write."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.rules = parse_mapping(config.notifications.mapping)
        self.billing = Billing(
            config.notifications.billed_project_key, frozenset(config.notifications.billed_project_owners)
        )
        self.max_body_bytes = config.amqp.max_body_bytes
        self.max_message_bytes = config.amqp.max_message_bytes

    def ingest(self, messages: Sequence[Message], requeued: Sequence[str] = ()) -> Summary:
        """Store every message as an event or in quarantine; raise StoreError if Redis fails.

        When this returns, everything in ``messages`` is safely in Redis.
        ``requeued``: the quarantine entries these messages came from, removed
        in the same atomic write (a message still bad is quarantined anew).
        """
        batch = self.prepare(messages, requeued)
        return self.summarize(batch, self.store.events.send(batch.call).result())

    def prepare(self, messages: Sequence[Message], requeued: Sequence[str] = ()) -> Batch:
        """Parse and encode a batch for one write (CPU only, nothing is stored yet)."""
        received_at = datetime.now(UTC)
        parsed: list[tuple[Message, Event]] = []
        events: list[EncodedEvent] = []
        rejected: list[Rejected] = []
        for message in messages:
            if len(message.body) > self.max_message_bytes:  # replay and requeue; the listener cuts on arrival
                message = bounded(message.body, message.source, self.max_message_bytes)
            if message.too_large:
                reason = f"too large: {message.size} bytes > max_message_bytes {self.max_message_bytes}"
                log.warning(
                    "quarantined message from %s: %s (sha256 %s)", message.source, reason, message.sha256
                )
                rejected.append(Rejected(message.body, reason, message.source, message.size, message.sha256))
                continue
            # Everything that turns one message into an event is in here and in
            # the encoding below: whatever fails, only this message goes to the
            # quarantine and the rest of the batch is stored.
            try:
                parsed.append((message, self._parse(message, received_at)))
            except BadNotification as e:
                log.warning("quarantined message from %s: %s", message.source, e)
                rejected.append(Rejected(message.body, str(e), message.source))
            except Exception as e:  # a bug must not stall the queue: keep the message
                log.exception("quarantined message from %s: parser failed", message.source)
                rejected.append(Rejected(message.body, f"parser failed: {e!r}", message.source))
        # Encoded one after another, not between parses: a dictionary's tables
        # (~1 MB) stay in the CPU caches, which parsing would evict; cold, zstd
        # with a dictionary costs twice what zlib does (docs/performance.md).
        for message, event in parsed:
            try:
                events.append(self.store.events.encode(event))
            except Exception as e:  # e.g. UnicodeEncodeError: this message only
                log.exception("quarantined message from %s: encoding failed", message.source)
                rejected.append(Rejected(message.body, f"parser failed: {e!r}", message.source))
        return Batch(self.store.events.prepare(events, rejected, requeued), len(rejected))

    def _parse(self, message: Message, received_at: datetime) -> Event:
        return parse(
            message.body,
            received_at=received_at,
            rules=self.rules,
            max_body_bytes=self.max_body_bytes,
            billing=self.billing,
        )

    def summarize(self, batch: Batch, result: WriteResult) -> Summary:
        """Count what a finished write did, and log each reused message_id.

        A rejected message already in the quarantine (the same raw bytes) is
        counted as a duplicate, not as quarantined.
        """
        repeats = result.quarantine_repeats
        summary = Summary(quarantined=batch.quarantined - repeats, duplicates=repeats)
        for outcome in result.outcomes:
            if outcome.status == Ingested.STORED:
                summary.stored += 1
            elif outcome.status == Ingested.DUPLICATE:
                summary.duplicates += 1
            elif outcome.status == Ingested.CONFLICT:
                summary.conflicts += 1
                log.warning(
                    "message_id %s (event_type %s) reused with a different body; "
                    "kept the one stored at seq %d",
                    outcome.event.message_id,
                    outcome.event.event_type,
                    outcome.seq,
                )
        return summary
