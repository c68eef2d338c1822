"""The event store: atomic batched writes, dedup, lookups and retention in Redis."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

import redis

from yagi_meter.notification import Event, conflict_copy
from yagi_meter.store import codec
from yagi_meter.store.audit import is_verdict
from yagi_meter.store.base import Collection, translated
from yagi_meter.store.dictionaries import Dictionaries
from yagi_meter.store.epoch import SeqWatch
from yagi_meter.store.keys import OUTBOXES, Keys
from yagi_meter.store.nodes import Call, PendingCalls
from yagi_meter.store.outbox import MEMBER_FORMAT, OutboxKeys
from yagi_meter.store.scripts import Scripts

log = logging.getLogger(__name__)


class Ingested(IntEnum):
    """What the ingest script did with one event (the numbers are its replies)."""

    STORED = 1
    DUPLICATE = 2  # this message_id with this content was already stored
    CONFLICT = 3  # this message_id was stored with other content: this body kept as a copy


_SCAN_BATCH = 1000


@dataclass(frozen=True)
class Rejected:
    """A message that could not become an event, on its way to quarantine.

    ``body`` is the whole raw message, or only its head when ``size`` says it
    was larger (then ``sha256`` is the digest of the whole, computed on arrival).
    The quarantine holds a raw message once: ``sha256`` says which.
    """

    body: bytes
    reason: str
    source: str
    size: int | None = None
    sha256: str | None = None

    @property
    def whole_size(self) -> int:
        return len(self.body) if self.size is None else self.size

    @property
    def digest(self) -> str:
        return self.sha256 or hashlib.sha256(self.body).hexdigest()

    @property
    def truncated(self) -> bool:
        return self.whole_size > len(self.body)


@dataclass(frozen=True)
class EncodedEvent:
    """One event as the ingest script takes it: its index keys and its arguments."""

    event: Event
    keys: list[str]
    args: list[str | bytes | int]
    # (zset, stats hash, member): the discovery catalog entries the event counts in
    catalog: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class Outcome:
    """What a write did with one event, and its seq."""

    status: Ingested
    seq: int
    event: Event
    # CONFLICT: the seq of the event first stored under the message_id; ``seq`` and
    # ``event`` are then the conflicting copy's (also for a DUPLICATE of a copy).
    original_seq: int | None = None


@dataclass(frozen=True)
class WriteCall:
    """One prepared call of the ingest script: its keys and arguments."""

    keys: list[str]
    args: list[str | bytes | int]
    events: list[Event]
    copies: bool = False  # these events are conflicting copies (notification.conflict_copy)


@dataclass(frozen=True)
class WriteResult:
    """What one write did: an outcome per event, and how many rejected messages
    were already in the quarantine (repeats, not added again)."""

    outcomes: list[Outcome]
    quarantine_repeats: int


class PendingWrite:
    """A write sent to Redis whose reply has not been read yet (nodes.py).

    Its connection is its own until ``result()``: the reply must be read (or the
    connection dropped) before the connection serves anything else.
    """

    def __init__(self, store: EventStore, call: WriteCall) -> None:
        self._store = store
        self._call = call
        script = store.scripts["ingest"]
        self._pending = PendingCalls(store.client, [Call(script, call.keys, call.args)], store.wait)

    def result(self) -> WriteResult:
        """The outcome of each event; raise StoreError if the write may not have happened
        (or, with ``[redis] wait_replicas``, may not be on enough replicas yet).

        Retrying a write that did happen is safe: every event is then a duplicate.
        """
        [replies] = self._pending.replies()
        results, repeats, epoch, last_seq = replies
        self._store.watch.observe(epoch, last_seq, "ingest")
        outcomes = [
            Outcome(Ingested(status), seq, event)
            for (status, seq), event in zip(results, self._call.events, strict=True)
        ]
        conflicting = [i for i, outcome in enumerate(outcomes) if outcome.status == Ingested.CONFLICT]
        if conflicting and not self._call.copies:
            self._keep_copies(outcomes, conflicting)
        return WriteResult(outcomes, repeats)

    def _keep_copies(self, outcomes: list[Outcome], conflicting: list[int]) -> None:
        """Store each conflicting body as an event of its own, before ``result()`` returns.

        A second call of the ingest script, so the batch is acknowledged only
        once these are stored too.  A copy's id is derived from the message_id
        and the body: when this raises and the batch is written again, the
        copies already stored are duplicates.
        """
        store = self._store
        copies = [conflict_copy(outcomes[i].event) for i in conflicting]
        call = store.prepare([store.encode(copy) for copy in copies], copies=True)
        script = store.scripts["ingest"]
        [replies] = PendingCalls(store.client, [Call(script, call.keys, call.args)], store.wait).replies()
        results, _, epoch, last_seq = replies
        store.watch.observe(epoch, last_seq, "ingest")
        for i, copy, (status, seq) in zip(conflicting, copies, results, strict=True):
            # STORED: a new copy (a conflict); DUPLICATE: this copy again (a redelivery).
            kept = Ingested.CONFLICT if status == Ingested.STORED else Ingested(status)
            outcomes[i] = Outcome(kept, seq, copy, original_seq=outcomes[i].seq)

    def abandon(self) -> None:
        """Forget the reply (the caller gave up the batch); the connection is dropped."""
        self._pending.abandon()


class EventStore(Collection):
    """Every read and write of events goes through here; no other module touches their keys."""

    what = "events"

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        scripts: Scripts,
        *,
        compress: bool = True,
        push: bool = True,
        forward: Callable[[str], bool] | None = None,
        dictionaries: Dictionaries | None = None,
        wait: tuple[int, int] = (0, 0),
    ) -> None:
        """``push``: write push outbox entries; ``forward``: which event types to forward;
        ``dictionaries``: where zstd dictionaries are found (default: under ``keys``);
        ``wait``: replicas that must confirm each write, and how long they may take (ms)."""
        super().__init__(client, keys, scripts)
        self.wait = wait
        self.compress = compress
        self.push = push
        self.forward = forward
        self.watch = SeqWatch()
        self.dictionaries = dictionaries or Dictionaries(client, keys)
        if self.dictionaries.watch is None:  # Redis losing data drops its cache (dictionaries.py)
            self.dictionaries.watch = self.watch

    # -- writing -----------------------------------------------------------

    def write(
        self, events: Sequence[Event], rejected: Sequence[Rejected] = (), requeued: Sequence[str] = ()
    ) -> list[Outcome]:
        """Store events with their indexes and outbox entries, and quarantine the rejected.

        ``requeued``: quarantine entry ids these messages were taken from, removed
        in the same step.  One script call: one round trip, all of it or none.
        Raises StoreError when Redis cannot be reached; the caller retries.
        """
        encoded = [self.encode(event) for event in events]
        return self.send(self.prepare(encoded, rejected, requeued)).result().outcomes

    def encode(self, event: Event) -> EncodedEvent:
        """One event's index keys and script arguments (CPU only; at most once every
        ``[redis] dictionary_check_seconds`` one GET of ``dict:current``, which never raises).

        Raises whatever encoding the event raises (e.g. UnicodeEncodeError):
        the caller quarantines that one message and goes on with the others.
        """
        k = self.keys
        index_keys = [k.event_type(event.event_type)]
        catalog = [(k.catalog_types, event.event_type)]
        for tenant_id in event.tenants:  # the owner, and a billed project
            index_keys.append(k.tenant(tenant_id))
            catalog += [(k.catalog_tenants, tenant_id), (k.catalog_tenant_types(tenant_id), event.event_type)]
            if event.resource_id:
                index_keys.append(k.resource(tenant_id, event.resource_id))
                catalog.append((k.catalog_resources(tenant_id), event.resource_id))
        if is_verdict(event):
            index_keys.append(k.audit_verdicts)
        forward = self.forward is not None and self.forward(event.event_type)
        args: list[str | bytes | int] = [
            event.message_id.encode(),
            event.digest,
            event.event_type.encode(),
            int(event.timestamp.timestamp() * 1000),
            len(index_keys),
            "1" if forward else "0",
            codec.encode(event, self.compress, self.dictionaries.current() if self.compress else None),
            (event.user_id or "").encode(),
        ]
        return EncodedEvent(event, index_keys, args, tuple((key, k.stats(key), m) for key, m in catalog))

    def prepare(
        self,
        events: Sequence[EncodedEvent],
        rejected: Sequence[Rejected] = (),
        requeued: Sequence[str] = (),
        *,
        copies: bool = False,
    ) -> WriteCall:
        """Put encoded events and rejected messages into one call of the ingest script (no I/O).

        ``copies``: the events are conflicting copies, each one stored is counted
        in ``conflicts`` (PendingWrite stores them itself)."""
        k = self.keys
        push, forward = OutboxKeys.of(k, "push"), OutboxKeys.of(k, "forward")
        keys = [
            k.seq,
            k.ids,
            k.events,
            k.by_time,
            k.indexes,
            push.due,
            push.seqs,
            forward.due,
            forward.seqs,
            k.conflicts,
            k.duplicates,
            k.quarantine,
            k.quarantine_count,
            k.quarantine_digests,
            k.epoch,
        ]
        args: list[str | bytes | int] = [
            "1" if self.push else "0",
            len(events),
            len(rejected),
            int(time.time() * 1000),
            uuid.uuid4().hex,
            self.watch.epoch,
            self.watch.seq,
            MEMBER_FORMAT,
            "1" if copies else "0",
        ]
        # Catalog entries once per batch: events name them by number.
        entries: dict[tuple[str, str], int] = {}
        catalog_keys: list[str] = []
        members: list[str | bytes | int] = []
        numbers: list[bytes] = []
        for encoded in events:
            mine = []
            for zset, stats, member in encoded.catalog:
                number = entries.get((zset, member))
                if number is None:
                    number = entries[(zset, member)] = len(entries) + 1
                    catalog_keys += [zset, stats]
                    members.append(member.encode())
                mine.append(str(number))
            numbers.append(" ".join(mine).encode())
        args.append(len(entries))
        args += members
        for encoded, mine_numbers in zip(events, numbers, strict=True):
            keys.extend(encoded.keys)
            args.extend(encoded.args)
            args.append(mine_numbers)
        keys += catalog_keys
        for reject in rejected:
            args += [
                reject.reason.encode("utf-8", "backslashreplace"),
                reject.source.encode("utf-8", "backslashreplace"),
                reject.body,
                reject.digest,
                reject.whole_size,
                "1" if reject.truncated else "0",
            ]
        args += list(requeued)
        return WriteCall(keys, args, [encoded.event for encoded in events], copies)

    def send(self, call: WriteCall) -> PendingWrite:
        """Send a prepared write without waiting for Redis; ``result()`` waits.

        So a caller can prepare its next batch while Redis executes this one.
        """
        return PendingWrite(self, call)

    # -- reading -----------------------------------------------------------

    def seq_of(self, message_id: str) -> int | None:
        """The ingest sequence of a stored message_id, or None."""
        with translated("reading an event id"):
            known = self.client.hget(self.keys.ids, message_id)
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
        for seq, reply in zip(seqs, self._execute(pipe, "reading events"), strict=True):
            if reply:
                fields = reply[0][1]
                events.append(codec.decode(fields[b"d"], seq, int(fields[b"t"]), self.dictionaries))
        return events

    def count(self) -> int:
        with translated("counting events"):
            return self.client.xlen(self.keys.events)

    def last_seq(self) -> int:
        with translated("reading the last seq"):
            return int(self.client.get(self.keys.seq) or 0)

    def position(self) -> tuple[str, int]:
        """The store's epoch ("" before the first write) and last seq, checked by ``watch``."""
        with translated("reading the store position"):
            epoch, seq = self.client.mget([self.keys.epoch, self.keys.seq])
        position = (epoch.decode() if epoch else "", int(seq or 0))
        self.watch.observe(*position, "read")
        return position

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
        with translated("listing indexes"):
            index_keys = list(self.client.sscan_iter(self.keys.indexes, count=_SCAN_BATCH))
        for key in index_keys:
            self._run("trim_index", [key, self.keys.indexes], [last])
        removed = 0
        while True:
            entries = self._range("-", f"{last}-0")
            if not entries:
                return removed
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(self.keys.by_time, *(entry_id.split(b"-", 1)[0] for entry_id, _ in entries))
            pipe.hdel(self.keys.ids, *(fields[b"m"] for _, fields in entries))
            pipe.xdel(self.keys.events, *(entry_id for entry_id, _ in entries))
            self._execute(pipe, "removing expired events")
            removed += len(entries)
            log.info("retention removed %d events up to seq %d", removed, last)

    def _last_expired_seq(self, cutoff_ms: int) -> int:
        """Highest seq ingested before ``cutoff_ms`` and no longer needed by an outbox."""
        floor = self._outbox_floor()
        last, start = 0, "-"
        while True:
            entries = self._range(start, "+")
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
            with translated(f"reading outbox {name}"):
                first = self.client.zrange(self.keys.outbox_seqs(name), 0, 0)
            if first:
                seq = int(first[0])
                floor = seq if floor is None else min(floor, seq)
        return floor

    def _range(self, start: str, end: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        with translated("reading events"):
            return self.client.xrange(self.keys.events, start, end, count=_SCAN_BATCH)
