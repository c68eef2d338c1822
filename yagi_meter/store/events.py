"""The event store: atomic batched writes, dedup, lookups and retention steps in Redis."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import redis

from yagi_meter.errors import UndecodableEvent
from yagi_meter.notification import Event, conflict_copy
from yagi_meter.store import codec, partitions
from yagi_meter.store import entries as entries_module
from yagi_meter.store.audit import is_verdict
from yagi_meter.store.base import Collection, translated
from yagi_meter.store.dictionaries import Dictionaries
from yagi_meter.store.epoch import SeqWatch
from yagi_meter.store.keys import OUTBOXES, Keys
from yagi_meter.store.nodes import Call, Command, PendingCalls
from yagi_meter.store.outbox import MEMBER_FORMAT, OutboxKeys
from yagi_meter.store.positions import fingerprint
from yagi_meter.store.scripts import Scripts

log = logging.getLogger(__name__)


class Ingested(IntEnum):
    """What the ingest script did with one event (the numbers are its replies)."""

    STORED = 1
    DUPLICATE = 2  # this message_id with this content was already stored
    CONFLICT = 3  # this message_id was stored with other content: this body kept as a copy


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
    """One event as the ingest script takes it: its partition, index keys and arguments."""

    event: Event
    keys: list[str]
    args: list[str | bytes | int]
    # (zset, stats hash, member): the discovery catalog entries the event counts in
    catalog: tuple[tuple[str, str, str], ...] = ()
    partition: int = 0
    # The ingest time to store (ms), None for Redis's clock: only a copy keeps another (copy.py).
    ingested_ms: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What a write did with one event, and its seq (store-wide: partitions.ref)."""

    status: Ingested
    seq: int
    event: Event
    # CONFLICT: the seq of the event first stored under the message_id; ``seq`` and
    # ``event`` are then the conflicting copy's (also for a DUPLICATE of a copy).
    original_seq: int | None = None


@dataclass(frozen=True)
class PartitionCall:
    """One call of the ingest script: the events of one partition, its keys and arguments."""

    partition: int
    keys: list[str]
    args: list[str | bytes | int]
    events: list[Event]
    places: list[int]  # each event's place in the write, in arrival order


@dataclass(frozen=True)
class WriteCall:
    """One prepared write: an ingest call per partition the batch touches, and one
    quarantine call (keys, arguments) when messages were rejected or requeued."""

    parts: list[PartitionCall]
    quarantine: tuple[list[str], list[str | bytes | int]] | None = None
    copies: bool = False  # these events are conflicting copies (notification.conflict_copy)

    @property
    def events(self) -> list[Event]:
        return [event for part in self.parts for event in part.events]


@dataclass(frozen=True)
class Reused:
    """An event of a write whose message_id another partition holds, or an earlier event
    of the same write takes in another partition (EventStore.take_reused): not written
    under that id, but a duplicate (the same body) or a conflict (another body, then
    kept as a conflicting copy) of the event there."""

    event: Event
    number: int = 0  # the other event's store-wide seq, when stored before this write
    digest: str = ""  # and its digest
    first: Event | None = None  # else the event of this write it is

    def outcome(self, written: list[Outcome]) -> Outcome:
        """This event's outcome, once the write's own ``written`` outcomes are known."""
        if self.first is None:
            number, digest = self.number, self.digest
        else:
            other = next(o for o in written if o.event is self.first)
            number, digest = other.seq, self.first.digest
        status = Ingested.DUPLICATE if digest == self.event.digest else Ingested.CONFLICT
        return Outcome(status, number, self.event)


@dataclass(frozen=True)
class WriteResult:
    """What one write did: an outcome per event, and how many rejected messages
    were already in the quarantine (repeats, not added again)."""

    outcomes: list[Outcome]
    quarantine_repeats: int


class PendingWrite:
    """A write sent to Redis whose replies have not been read yet (nodes.py).

    Its connections are its own until ``result()``: the replies must be read
    (or the connections dropped) before they serve anything else.
    """

    def __init__(self, store: EventStore, call: WriteCall) -> None:
        self._store = store
        self._reused: list[Reused] = []
        if len(store.parts) > 1 and not call.copies:
            call, self._reused = store.take_reused(call)
        self._call = call
        self._pending = PendingCalls(store.client, store.calls(call), store.wait)

    def result(self) -> WriteResult:
        """The outcome of each event; raise StoreError if the write may not have happened
        (or, with ``[redis] wait_replicas``, may not be on enough replicas yet).

        Retrying a write that did happen is safe: every event is then a duplicate.
        """
        store = self._store
        outcomes = store.outcomes(self._call, self._pending.replies())
        outcomes += [reused.outcome(outcomes) for reused in self._reused]
        repeats = 0
        if self._call.quarantine is not None:
            # Only once the events are stored: the quarantine entries of requeued
            # messages are removed in this step, which must not come first.
            call = Call(store.scripts["quarantine"], *self._call.quarantine)
            [replied] = PendingCalls(store.client, [call], store.wait).replies()
            repeats = int(replied)
        conflicting = [i for i, outcome in enumerate(outcomes) if outcome.status == Ingested.CONFLICT]
        if conflicting and not self._call.copies:
            self._keep_copies(outcomes, conflicting)
        return WriteResult(outcomes, repeats)

    def _keep_copies(self, outcomes: list[Outcome], conflicting: list[int]) -> None:
        """Store each conflicting body as an event of its own, before ``result()`` returns.

        A second write, so the batch is acknowledged only once these are
        stored too.  A copy's id is derived from the message_id and the body:
        when this raises and the batch is written again, the copies already
        stored are duplicates.
        """
        store = self._store
        copies = [conflict_copy(outcomes[i].event) for i in conflicting]
        call = store.prepare([store.encode(copy) for copy in copies], copies=True)
        stored = store.outcomes(call, PendingCalls(store.client, store.calls(call), store.wait).replies())
        by_copy = {id(outcome.event): outcome for outcome in stored}
        for i, copy in zip(conflicting, copies, strict=True):
            outcome = by_copy[id(copy)]
            # STORED: a new copy (a conflict); DUPLICATE: this copy again (a redelivery).
            kept = Ingested.CONFLICT if outcome.status == Ingested.STORED else outcome.status
            outcomes[i] = Outcome(kept, outcome.seq, copy, original_seq=outcomes[i].seq)

    def abandon(self) -> None:
        """Forget the replies (the caller gave up the batch); the connections are dropped."""
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
        parts: Sequence[Keys] | None = None,
        compress: bool = True,
        push: bool = True,
        forward: Callable[[str], bool] | None = None,
        dictionaries: Dictionaries | None = None,
        wait: tuple[int, int] = (0, 0),
    ) -> None:
        """``parts``: the keys of each partition (default: ``keys``, one partition);
        ``push``: write push outbox entries; ``forward``: which event types to forward;
        ``dictionaries``: where zstd dictionaries are found (default: under ``keys``);
        ``wait``: replicas that must confirm each write, and how long they may take (ms)."""
        super().__init__(client, keys, scripts)
        self.parts = list(parts or [keys])
        self.wait = wait
        self.compress = compress
        self.push = push
        self.forward = forward
        self.watch = SeqWatch()
        self._next_order = 0  # past the merge order of this writer's last event (partitions.py)
        self.dictionaries = dictionaries or Dictionaries(client, keys, parts=self.parts)
        if self.dictionaries.watch is None:  # Redis losing data drops its cache (dictionaries.py)
            self.dictionaries.watch = self.watch

    # -- partitions --------------------------------------------------------

    def partition_of(self, event: Event) -> int:
        """The partition an event is stored in: its billed project's, else its tenant's (else
        its message_id's).  A billed project's feed is thus one partition; the feeds of the
        owners that bill others (``[notifications] billed_project_owners``) span them all."""
        if len(self.parts) == 1:
            return 0
        return partitions.partition_of(
            event.billed_tenant_id or event.tenant_id or event.message_id, len(self.parts)
        )

    def ref(self, partition: int, seq: int) -> int:
        """The store-wide number of a partition's seq (partitions.ref)."""
        return partitions.ref(partition, seq, len(self.parts))

    def split(self, number: int) -> tuple[int, int]:
        """(partition, seq) of a store-wide number."""
        return partitions.split(number, len(self.parts))

    # -- writing -----------------------------------------------------------

    def write(
        self, events: Sequence[Event], rejected: Sequence[Rejected] = (), requeued: Sequence[str] = ()
    ) -> list[Outcome]:
        """Store events with their indexes and outbox entries, and quarantine the rejected.

        ``requeued``: quarantine entry ids these messages were taken from,
        removed in the quarantine's step.  One script call per partition, all
        sent before any reply is read; then, when messages were rejected or
        requeued, one for the quarantine (after the events: a requeued
        message's entry goes only once its event is stored).
        Raises StoreError when Redis cannot be reached; the caller retries.
        """
        encoded = [self.encode(event) for event in events]
        return self.send(self.prepare(encoded, rejected, requeued)).result().outcomes

    def encode(self, event: Event) -> EncodedEvent:
        """One event's partition, index keys and script arguments (CPU only; at most once
        every ``[redis] dictionary_check_seconds`` one GET of ``dict:current``, which never raises).

        Raises whatever encoding the event raises (e.g. UnicodeEncodeError):
        the caller quarantines that one message and goes on with the others.
        """
        partition = self.partition_of(event)
        k = self.parts[partition]
        index_keys = self.keys_of(event, k)
        catalog = [(k.catalog_types, event.event_type)]
        for tenant_id in event.tenants:  # the owner, and a billed project
            catalog += [(k.catalog_tenants, tenant_id), (k.catalog_tenant_types(tenant_id), event.event_type)]
            if event.resource_id:
                catalog.append((k.catalog_resources(tenant_id), event.resource_id))
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
        catalog_entries = tuple((key, k.stats(key), m) for key, m in catalog)
        return EncodedEvent(event, index_keys, args, catalog_entries, partition)

    @staticmethod
    def keys_of(event: Event | codec.Indexed, keys: Keys) -> list[str]:
        """An event's index zsets: its type's, its tenants' and resources', and the
        audit's verdicts for a verdict.  Ingest adds the event to these and
        retention removes it from them, both computed here: they cannot disagree."""
        index_keys = [
            keys.event_type(event.event_type),
            *keys.owner_indexes(event.tenants, event.resource_id),
        ]
        if is_verdict(event):
            index_keys.append(keys.audit_verdicts)
        return index_keys

    def prepare(
        self,
        events: Sequence[EncodedEvent],
        rejected: Sequence[Rejected] = (),
        requeued: Sequence[str] = (),
        *,
        copies: bool = False,
    ) -> WriteCall:
        """Put encoded events into one ingest call per partition, and rejected messages
        and requeued entries into one quarantine call (no I/O).

        ``copies``: the events are conflicting copies, each one stored is counted
        in ``conflicts`` (PendingWrite stores them itself)."""
        by_partition: dict[int, list[EncodedEvent]] = {}
        places: dict[int, list[int]] = {}
        for place, encoded in enumerate(events):
            by_partition.setdefault(encoded.partition, []).append(encoded)
            places.setdefault(encoded.partition, []).append(place)
        # With partitions, each event's merge order: this batch's time and its place in it,
        # after this writer's batch before (ingest.lua keeps each partition's growing too).
        first_order = None
        if len(self.parts) > 1:
            first_order = partitions.batch_order(int(time.time() * 1000), self._next_order)
            self._next_order = first_order + len(events)
        parts = [
            self._partition_call(i, mine, copies, places[i], first_order)
            for i, mine in sorted(by_partition.items())
        ]
        quarantine = None
        if rejected or requeued:
            k = self.keys
            q_keys = [k.quarantine, k.quarantine_count, k.quarantine_digests, k.quarantine_repeats]
            q_args: list[str | bytes | int] = [int(time.time() * 1000), len(rejected)]
            for reject in rejected:
                q_args += [
                    reject.reason.encode("utf-8", "backslashreplace"),
                    reject.source.encode("utf-8", "backslashreplace"),
                    reject.body,
                    reject.digest,
                    reject.whole_size,
                    "1" if reject.truncated else "0",
                ]
            q_args += list(requeued)
            quarantine = (q_keys, q_args)
        return WriteCall(parts, quarantine, copies)

    def _partition_call(
        self,
        partition: int,
        events: list[EncodedEvent],
        copies: bool,
        places: list[int],
        first_order: int | None,
    ) -> PartitionCall:
        k = self.parts[partition]
        push, forward = OutboxKeys.of(k, "push"), OutboxKeys.of(k, "forward")
        keys = [
            k.seq,
            k.ids,
            k.events,
            push.due,
            push.seqs,
            forward.due,
            forward.seqs,
            k.conflicts,
            k.duplicates,
            k.epoch,
        ]
        seen_epoch, seen_seq = self.watch.seen(partition)
        args: list[str | bytes | int] = [
            "1" if self.push else "0",
            len(events),
            uuid.uuid4().hex,
            seen_epoch,
            seen_seq,
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
        for encoded, mine_numbers, place in zip(events, numbers, places, strict=True):
            keys.extend(encoded.keys)
            args.extend(encoded.args)
            args.append(mine_numbers)
            args.append("" if first_order is None else first_order + place)
            args.append("" if encoded.ingested_ms is None else encoded.ingested_ms)
        keys += catalog_keys
        return PartitionCall(partition, keys, args, [encoded.event for encoded in events], places)

    def calls(self, call: WriteCall) -> list[Call]:
        """The ingest calls of a prepared write, one per partition (the quarantine's call
        is made by PendingWrite once they are done)."""
        ingest = self.scripts["ingest"]
        return [Call(ingest, part.keys, part.args) for part in call.parts]

    def outcomes(self, call: WriteCall, replies: Sequence[Any]) -> list[Outcome]:
        """An outcome per event of ``call`` (in ``call.events`` order), from its calls' replies."""
        outcomes = []
        for part, reply in zip(call.parts, replies, strict=True):
            results, epoch, last_seq = reply
            self.watch.observe(epoch, last_seq, "ingest", part.partition)
            for (status, seq), event in zip(results, part.events, strict=True):
                outcomes.append(Outcome(Ingested(status), self.ref(part.partition, seq), event))
        return outcomes

    def take_reused(self, call: WriteCall) -> tuple[WriteCall, list[Reused]]:
        """``call`` without the events whose message_id is another partition's (one HMGET
        of the write's message_ids per partition), or an earlier event's of the write
        in another partition; and those events (Reused).

        A message_id reused by another tenant lands in another partition, whose
        ``ids`` ingest.lua cannot see: without this it would be stored there
        under the same id, and a merged feed would list two entries of one
        atom:id.  This way it is a duplicate or a conflicting copy, as on one
        partition.  Two writers storing one reused id in two partitions at the
        same instant can both miss the other (README, Limitations).
        """
        events = call.events
        if not events:
            return call, []
        ids = [event.message_id for event in events]
        pipe = self.client.pipeline(transaction=False)
        for k in self.parts:
            pipe.hmget(k.ids, ids)
        stored = self._execute(pipe, "reading event ids")
        # (place in the write, partition) of each of ``events``, which ``stored`` follows
        where = [(place, part.partition) for part in call.parts for place in part.places]
        kept: list[Event] = []
        reused: list[Reused] = []
        first: dict[str, tuple[int, Event]] = {}  # message_id -> (partition, event) in this write
        for i in sorted(range(len(events)), key=lambda i: where[i][0]):  # in arrival order
            event, partition = events[i], where[i][1]
            # Held in its own partition too (a redelivery): ingest.lua tells.
            mine = stored[partition][i] is not None
            other = None if mine else next((q for q, found in enumerate(stored) if found[i]), None)
            earlier = first.get(event.message_id)
            if other is not None:
                seq, _, digest = stored[other][i].decode().partition(" ")
                reused.append(Reused(event, self.ref(other, int(seq)), digest))
            elif earlier is not None and earlier[0] != partition:
                reused.append(Reused(event, first=earlier[1]))
            else:
                first.setdefault(event.message_id, (partition, event))
                kept.append(event)
        if not reused:
            return call, []
        again = self.prepare([self.encode(event) for event in kept])
        return WriteCall(again.parts, call.quarantine, call.copies), reused

    def send(self, call: WriteCall) -> PendingWrite:
        """Send a prepared write without waiting for Redis; ``result()`` waits.

        So a caller can prepare its next batch while Redis executes this one.
        """
        return PendingWrite(self, call)

    # -- reading -----------------------------------------------------------

    def seq_of(self, message_id: str) -> int | None:
        """The store-wide number of a stored message_id, or None.

        A message_id does not tell its partition (its tenant does): every
        partition's ``ids`` is asked, in one pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        for k in self.parts:
            pipe.hget(k.ids, message_id)
        for partition, known in enumerate(self._execute(pipe, "reading an event id")):
            if known:
                return self.ref(partition, int(known.split(b" ", 1)[0]))
        return None

    def get(self, message_id: str) -> Event | None:
        """One event by message_id, or None when unknown or expired."""
        seq = self.seq_of(message_id)
        if seq is None:
            return None
        found = self.get_many([seq])
        return found[0] if found else None

    def get_many(self, seqs: Iterable[int]) -> list[Event]:
        """Events by store-wide number, in the order given; expired ones are left out."""
        seqs = list(seqs)
        pipe = self.client.pipeline(transaction=False)
        for number in seqs:
            partition, seq = self.split(number)
            pipe.xrange(self.parts[partition].events, f"{seq}-0", f"{seq}-0")
        events = []
        for number, reply in zip(seqs, self._execute(pipe, "reading events"), strict=True):
            if reply:
                fields = reply[0][1]
                events.append(codec.decode(fields[b"d"], number, int(fields[b"t"]), self.dictionaries))
        return events

    def stored_after(self, partition: int, after: int, count: int) -> list[StoredEntry]:
        """Up to ``count`` of ``partition``'s events stored after its seq ``after`` (0: from
        the first), oldest first, each decoded with its ingest time and merge order: what
        ``yagi-meter copy`` reads.  A body that cannot be decoded gives ``event`` None
        and the reason."""
        start = f"({after}-0" if after else "-"
        with translated("reading events"):
            entries = self.client.xrange(self.parts[partition].events, start, "+", count=count)
        stored = []
        for entry_id, fields in entries:
            seq, ingested_ms = int(entry_id.split(b"-")[0]), int(fields[b"t"])
            order = partitions.merge_order(int(fields.get(b"o", 0)), ingested_ms)
            number = self.ref(partition, seq)
            try:
                event, error = codec.decode(fields[b"d"], number, ingested_ms, self.dictionaries), ""
            except UndecodableEvent as e:
                event, error = None, str(e)
            stored.append(StoredEntry(partition, seq, number, ingested_ms, order, event, error))
        return stored

    def partition_epochs(self) -> list[str]:
        """Each partition's epoch ("" before its first event)."""
        pipe = self.client.pipeline(transaction=False)
        for k in self.parts:
            pipe.get(k.epoch)
        return [(epoch or b"").decode() for epoch in self._execute(pipe, "reading the epochs")]

    def copy_progress(self, sources: Sequence[str]) -> list[int]:
        """The last seq copied here (``yagi-meter copy``) from each of ``sources`` (a source
        partition's epoch, keys.py ``copied``), 0 for none."""
        with translated("reading the copy progress"):
            values = self.client.hmget(self.keys.copied, list(sources))
        return [int(value or 0) for value in values]

    def save_copy_progress(self, progress: dict[str, int]) -> None:
        """Record the last seq copied from source partitions (only once their events are stored)."""
        if progress:
            with translated("recording the copy progress"):
                self.client.hset(self.keys.copied, mapping=progress)

    def count(self) -> int:
        """Events stored, in every partition."""
        pipe = self.client.pipeline(transaction=False)
        for k in self.parts:
            pipe.xlen(k.events)
        return sum(self._execute(pipe, "counting events"))

    def last_seq(self) -> int:
        """The sum of every partition's last seq: events ever stored (with one partition, the seq)."""
        pipe = self.client.pipeline(transaction=False)
        for k in self.parts:
            pipe.get(k.seq)
        return sum(int(seq or 0) for seq in self._execute(pipe, "reading the last seq"))

    def position(self) -> tuple[str, int]:
        """The store's epoch ("" before the first write; with partitions, a fingerprint
        of theirs) and last seq (their sum), each partition checked by ``watch``."""
        pipe = self.client.pipeline(transaction=False)
        for k in self.parts:
            pipe.get(k.epoch)
            pipe.get(k.seq)
        replies = self._execute(pipe, "reading the store position")
        epochs, total = [], 0
        for partition in range(len(self.parts)):
            raw_epoch, raw_seq = replies[2 * partition], replies[2 * partition + 1]
            epoch, seq = (raw_epoch.decode() if raw_epoch else ""), int(raw_seq or 0)
            self.watch.observe(epoch, seq, "read", partition)
            epochs.append(epoch)
            total += seq
        if len(self.parts) == 1:
            return epochs[0], total
        return (fingerprint(epochs) if any(epochs) else ""), total

    # -- retention ---------------------------------------------------------

    def retention_units(self) -> list[RetentionUnit]:
        """The keys each retention step works on: one unit per partition."""
        return [RetentionUnit.of(k) for k in self.parts]

    def retention_step(
        self, unit: RetentionUnit, retention_days: float, limit: int, now: float | None = None
    ) -> Step:
        """Remove up to ``limit`` of the oldest events ingested more than ``retention_days``
        ago and below every outbox's oldest pending seq; two round trips
        (``retention_head``, then ``retention_remove``)."""
        head = self.retention_head(unit, retention_days, limit, now)
        step, _ = self.retention_remove(unit, head, retention_days, limit, now, read_next=False)
        return step

    def retention_head(
        self, unit: RetentionUnit, retention_days: float, limit: int, now: float | None = None
    ) -> RetentionHead:
        """Read up to ``limit`` of the oldest expired events, with their bodies; one
        round trip, read only (``RetentionHead.commands``)."""
        replies = PendingCalls(self.client, RetentionHead.commands(unit, limit)).replies()
        return RetentionHead.of(replies, retention_days, limit, now)

    def retention_remove(
        self,
        unit: RetentionUnit,
        head: RetentionHead,
        retention_days: float,
        limit: int,
        now: float | None = None,
        *,
        read_next: bool = True,
    ) -> tuple[Step, RetentionHead | None]:
        """Remove the events ``head`` read; with ``read_next``, when the head was full
        (more may be waiting), read the next one in the same round trip, after
        the removal (the retention daemon's steps are one round trip each).

        The derived fields of each body are decoded here with the store's
        codec and dictionaries (``codec.decode_indexed``), and its index keys
        computed from them by ``keys_of``, as at ingest.  The removal is one
        atomic script (retention.lua), which checks each event again: any
        number of processes may run steps at once, a head read a while ago is
        still safe to remove, and a step cut short by a crash changed nothing.

        A body that cannot be decoded (its dictionary is gone or damaged) is
        logged with its seq and removed all the same, with what is known
        without it: its stream, ``ids`` and ``by_time`` entries and its
        event-type index entry (from the entry's ``e``) and any audit verdict
        entry; its tenant and resource index entries stay (readers skip an
        index entry whose event is gone).  Retention never stalls on it.
        StoreError (Redis cannot be asked for a dictionary) ends the step.
        """
        if not head.entries:
            return Step(0, 0, 0, head.cutoff_ms, head.floor, False), None
        seqs: list[int] = []
        message_ids: list[bytes] = []
        index_keys_seen: dict[str, None] = {}  # every index zset of these events, once
        undecodable = 0
        entries = head.entries
        for i in range(0, len(entries), 4):
            seq, message_id, event_type, body = entries[i : i + 4]
            try:
                index_keys = self.keys_of(codec.decode_indexed(body, seq, self.dictionaries), unit.keys)
            except UndecodableEvent as e:
                undecodable += 1
                log.error(
                    "retention: the event at seq %d cannot be decoded (%s); removing it without "
                    "its tenant and resource index entries",
                    seq,
                    e,
                )
                # A seq a zset does not hold is not removed from it: the verdicts
                # index is named in case this was a verdict.
                index_keys = [unit.keys.event_type(event_type.decode()), unit.keys.audit_verdicts]
            seqs.append(seq)
            message_ids.append(message_id)
            index_keys_seen.update(dict.fromkeys(index_keys))
        calls = [
            Call(
                self.scripts["retention"],
                [unit.events, unit.ids, unit.by_time, *unit.outbox_seqs, *index_keys_seen],
                [len(unit.outbox_seqs), len(seqs), *seqs, *message_ids],
            )
        ]
        ahead = read_next and head.full
        replies = PendingCalls(
            self.client, calls + (RetentionHead.commands(unit, limit) if ahead else [])
        ).replies()
        removed, index_entries, last = replies[0]
        step = Step(removed, index_entries, last, head.cutoff_ms, head.floor, head.full, undecodable)
        return step, (RetentionHead.of(replies[1:], retention_days, limit, now) if ahead else None)

    def expire(self, retention_days: float, now: float | None = None, limit: int = 1000) -> int:
        """Remove every event ingested more than ``retention_days`` ago, in steps of
        ``limit`` (``retention_step``); return how many.  Events still waiting in
        an outbox are kept.  The retention daemon (retention.py) runs the steps."""
        if retention_days <= 0:
            return 0
        removed = 0
        for unit in self.retention_units():
            while True:
                step = self.retention_step(unit, retention_days, limit, now)
                removed += step.removed
                if not step.more:
                    break
        return removed


@dataclass(frozen=True)
class RetentionUnit:
    """Every key one retention step reads or writes, named explicitly (all in KEYS):
    the events stream, ``ids``, ``by_time`` and the outboxes' seqs of one partition
    (its index keys come from ``keys``)."""

    keys: Keys
    events: str
    ids: str
    by_time: str
    outbox_seqs: tuple[str, ...]

    @classmethod
    def of(cls, keys: Keys) -> RetentionUnit:
        outboxes = tuple(keys.outbox_seqs(name) for name in OUTBOXES)
        return cls(keys, keys.events, keys.ids, keys.by_time, outboxes)


@dataclass(frozen=True)
class StoredEntry:
    """One stored event as ``stored_after`` read it."""

    partition: int
    seq: int  # the partition's own
    number: int  # store-wide (partitions.ref)
    ingested_ms: int
    order: int  # merge order (partitions.merge_order): the merged feeds' order
    event: Event | None  # None when its body cannot be decoded
    error: str = ""  # why not


@dataclass(frozen=True)
class RetentionHead:
    """The oldest events retention may remove, with their bodies: the stream's first
    entries while ingested before the cutoff (Redis's clock) and below every
    outbox's oldest pending seq (the floor), flat: seq, message_id, event type
    (``e``), body (``d``), ...

    Read with plain commands in one round trip (``commands``): TIME, the head
    of each outbox's ``:seqs`` zset, and XRANGE of ``limit`` entries; not
    atomically, and that is safe: retention.lua checks every event again (its
    identity and the floor), and an entry ingested after TIME is not
    expired by it.  The bodies are what the caller decodes the index keys
    from (events.py keys_of, the function ingest computes them with), which
    the entry holds nowhere else.
    """

    cutoff_ms: int  # events ingested before this are expired
    floor: int | None  # the oldest seq an outbox still needs, None when none
    entries: list[Any]
    full: bool  # ``limit`` entries were expired: more may be waiting

    @staticmethod
    def commands(unit: RetentionUnit, limit: int) -> list[Call | Command]:
        """TIME, then ZRANGE of each outbox's seqs, then XRANGE; all on the unit's node."""
        on = [unit.events]
        return [
            Command(on, ("TIME",)),
            *(Command(on, ("ZRANGE", seqs, 0, 0, "WITHSCORES")) for seqs in unit.outbox_seqs),
            Command(on, ("XRANGE", unit.events, "-", "+", "COUNT", limit)),
        ]

    @classmethod
    def of(cls, replies: list[Any], retention_days: float, limit: int, now: float | None) -> RetentionHead:
        """The head from the replies to ``commands``; ``now`` (seconds) instead of Redis's TIME."""
        clock, *heads, stream = replies
        now_ms = int(clock[0]) * 1000 + int(clock[1]) // 1000 if now is None else int(now * 1000)
        cutoff_ms = now_ms - int(retention_days * 86_400_000)
        # ZRANGE WITHSCORES: [member, score] in RESP2, [[member, score]] in RESP3.
        scores = [int(float(head[0][1] if isinstance(head[0], list) else head[1])) for head in heads if head]
        floor = min(scores, default=None)
        entries: list[Any] = []
        for entry_id, flat in stream:
            fields, seq = entries_module.fields_of(flat), entries_module.seq_of(entry_id)
            if int(fields.t) >= cutoff_ms or (floor is not None and seq >= floor):
                break
            entries += (seq, fields.m, fields.e, fields.d)
        return cls(cutoff_ms, floor, entries, len(entries) // 4 == limit)


@dataclass(frozen=True)
class Step:
    """What one retention step did."""

    removed: int  # events removed
    index_entries: int  # index zset members removed
    last_seq: int  # the last seq removed, 0 for none
    cutoff_ms: int  # events ingested before this (Redis's clock) were expired
    floor: int | None  # the oldest seq an outbox still needs, None when none
    more: bool  # a full step was read: more may be waiting
    undecodable: int = 0  # bodies that could not be decoded: removed without their owner indexes
