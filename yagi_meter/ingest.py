"""The one path from raw message bodies to stored events, shared by listen, replay and requeue."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from yagi_meter.config import Config
from yagi_meter.errors import BadNotification
from yagi_meter.notification import Event, parse
from yagi_meter.ownership import parse_mapping
from yagi_meter.store import Store
from yagi_meter.store.events import CONFLICT, DUPLICATE, STORED, Outcome, Rejected, WriteCall

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """A raw message body and where it came from (``exchange/routing_key`` or a file)."""

    body: bytes
    source: str


@dataclass
class Summary:
    """Counts of what one ingest call did."""

    stored: int = 0
    duplicates: int = 0
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
        self.max_body_bytes = config.amqp.max_body_bytes

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
        events: list[Event] = []
        rejected: list[Rejected] = []
        for message in messages:
            try:
                events.append(
                    parse(
                        message.body,
                        received_at=received_at,
                        rules=self.rules,
                        max_body_bytes=self.max_body_bytes,
                    )
                )
            except BadNotification as e:
                log.warning("quarantined message from %s: %s", message.source, e)
                rejected.append(Rejected(message.body, str(e), message.source))
            except Exception as e:  # a bug must not stall the queue: keep the message
                log.exception("quarantined message from %s: parser failed", message.source)
                rejected.append(Rejected(message.body, f"parser failed: {e!r}", message.source))
        return Batch(self.store.events.prepare(events, rejected, requeued), len(rejected))

    def summarize(self, batch: Batch, outcomes: Sequence[Outcome]) -> Summary:
        """Count what a finished write did, and log each reused message_id."""
        summary = Summary(quarantined=batch.quarantined)
        for outcome in outcomes:
            if outcome.status == STORED:
                summary.stored += 1
            elif outcome.status == DUPLICATE:
                summary.duplicates += 1
            elif outcome.status == CONFLICT:
                summary.conflicts += 1
                log.warning(
                    "message_id %s (event_type %s) reused with a different body; "
                    "kept the one stored at seq %d",
                    outcome.event.message_id,
                    outcome.event.event_type,
                    outcome.seq,
                )
        return summary
