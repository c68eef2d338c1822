"""The event store: atomic batched writes, dedup, lookups and retention in Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

import redis

from yagi_meter.errors import StoreError
from yagi_meter.notification import Event
from yagi_meter.store import codec
from yagi_meter.store.keys import OUTBOXES, Keys

log = logging.getLogger(__name__)

STORED, DUPLICATE, CONFLICT = 1, 2, 3
_SCAN_BATCH = 1000


@dataclass(frozen=True)
class Rejected:
    """A message that could not become an event, on its way to quarantine."""

    body: bytes
    reason: str
    source: str


@dataclass(frozen=True)
class Outcome:
    """What a write did with one event: STORED, DUPLICATE or CONFLICT, and its seq."""

    status: int
    seq: int
    event: Event


def _script(name: str) -> str:
    return resources.files("yagi_meter.store").joinpath(name).read_text()


class EventStore:
    """Every read and write of events goes through here; no other module touches their keys."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        compress: bool = True,
        push: bool = True,
        forward: Callable[[str], bool] | None = None,
    ) -> None:
        """``push``: write push outbox entries; ``forward``: which event types to forward."""
        self.client = client
        self.keys = keys
        self.compress = compress
        self.push = push
        self.forward = forward
        self._ingest = client.register_script(_script("ingest.lua"))
        self._trim_index = client.register_script(_script("trim_index.lua"))

    # -- writing -----------------------------------------------------------

    def write(
        self, events: Sequence[Event], rejected: Sequence[Rejected] = (), requeued: Sequence[str] = ()
    ) -> list[Outcome]:
        """Store events with their indexes and outbox entries, and quarantine the rejected.

        ``requeued``: quarantine entry ids these messages were taken from, removed
        in the same step.  One script call: one round trip, all of it or none.
        Raises StoreError when Redis cannot be reached; the caller retries.
        """
        k = self.keys
        keys = [
            k.seq,
            k.ids,
            k.events,
            k.by_time,
            k.indexes,
            k.outbox("push"),
            k.outbox("forward"),
            k.conflicts,
            k.duplicates,
            k.quarantine,
            k.quarantine_count,
        ]
        args: list[str | bytes | int] = [
            "1" if self.push else "0",
            len(events),
            len(rejected),
            int(time.time() * 1000),
        ]
        for event in events:
            index_keys = [k.event_type(event.event_type)]
            if event.tenant_id:
                index_keys.append(k.tenant(event.tenant_id))
                if event.resource_id:
                    index_keys.append(k.resource(event.tenant_id, event.resource_id))
            keys.extend(index_keys)
            forward = self.forward is not None and self.forward(event.event_type)
            args += [
                event.message_id,
                event.digest,
                event.event_type,
                int(event.timestamp.timestamp() * 1000),
                len(index_keys),
                "1" if forward else "0",
                codec.encode(event, self.compress),
            ]
        for reject in rejected:
            args += [reject.reason, reject.source, reject.body]
        args += list(requeued)
        replies = self._call(self._ingest, keys=keys, args=args)
        return [Outcome(status, seq, event) for (status, seq), event in zip(replies, events, strict=True)]

    # -- reading -----------------------------------------------------------

    def seq_of(self, message_id: str) -> int | None:
        """The ingest sequence of a stored message_id, or None."""
        known = self._call(self.client.hget, self.keys.ids, message_id)
        return int(known.split(b" ", 1)[0]) if known else None

    def get(self, message_id: str) -> Event | None:
        """One event by message_id, or None when unknown or expired."""
        seq = self.seq_of(message_id)
        if seq is None:
            return None
        found = self.get_many([seq])
        return found[0] if found else None

    def get_many(self, seqs: Iterable[int]) -> list[Event]:
        """Events by sequence number, in the order given; expired ones are left out."""
        seqs = list(seqs)
        pipe = self.client.pipeline(transaction=False)
        for seq in seqs:
            pipe.xrange(self.keys.events, f"{seq}-0", f"{seq}-0")
        events = []
        for seq, reply in zip(seqs, self._execute(pipe), strict=True):
            if reply:
                fields = reply[0][1]
                events.append(codec.decode(fields[b"d"], seq, int(fields[b"t"])))
        return events

    def count(self) -> int:
        return self._call(self.client.xlen, self.keys.events)

    def last_seq(self) -> int:
        return int(self._call(self.client.get, self.keys.seq) or 0)

    # -- retention ---------------------------------------------------------

    def expire(self, retention_days: float, now: float | None = None) -> int:
        """Remove events ingested more than ``retention_days`` ago; return how many.

        Index entries go first and bodies after, so no index ever points at a
        missing event. Events still waiting in an outbox are kept.
        """
        if retention_days <= 0:
            return 0
        now = time.time() if now is None else now
        cutoff_ms = int((now - retention_days * 86400) * 1000)
        last = self._last_expired_seq(cutoff_ms)
        if last == 0:
            return 0
        try:
            index_keys = list(self.client.sscan_iter(self.keys.indexes, count=_SCAN_BATCH))
        except redis.RedisError as e:
            raise StoreError(f"listing indexes failed: {e}") from None
        for key in index_keys:
            self._call(self._trim_index, keys=[key, self.keys.indexes], args=[last])
        removed = 0
        while True:
            entries = self._call(self.client.xrange, self.keys.events, "-", f"{last}-0", count=_SCAN_BATCH)
            if not entries:
                return removed
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(self.keys.by_time, *(entry_id.split(b"-", 1)[0] for entry_id, _ in entries))
            pipe.hdel(self.keys.ids, *(fields[b"m"] for _, fields in entries))
            pipe.xdel(self.keys.events, *(entry_id for entry_id, _ in entries))
            self._execute(pipe)
            removed += len(entries)
            log.info("retention removed %d events up to seq %d", removed, last)

    def _last_expired_seq(self, cutoff_ms: int) -> int:
        """Highest seq ingested before ``cutoff_ms`` and no longer needed by an outbox."""
        floor = self._outbox_floor()
        last, start = 0, "-"
        while True:
            entries = self._call(self.client.xrange, self.keys.events, start, "+", count=_SCAN_BATCH)
            for entry_id, fields in entries:
                seq = int(entry_id.split(b"-", 1)[0])
                if int(fields[b"t"]) >= cutoff_ms or (floor is not None and seq >= floor):
                    return last
                last = seq
            if len(entries) < _SCAN_BATCH:
                return last
            start = f"({last}-0"

    def _outbox_floor(self) -> int | None:
        """The oldest seq any outbox still has to deliver."""
        floor = None
        for name in OUTBOXES:
            first = self._call(self.client.zrange, self.keys.outbox_seqs(name), 0, 0)
            if first:
                seq = int(first[0])
                floor = seq if floor is None else min(floor, seq)
        return floor

    # -- plumbing ----------------------------------------------------------

    def _call(self, method: Callable, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except redis.RedisError as e:
            raise StoreError(f"{getattr(method, '__name__', 'redis call')} failed: {e}") from None

    def _execute(self, pipe: redis.client.Pipeline) -> list:
        try:
            return pipe.execute()
        except redis.RedisError as e:
            raise StoreError(f"pipeline failed: {e}") from None
