"""The audit's own state in Redis: what it has read, what is due, who is alive, what it counted.

Every key is listed in keys.py.  All of it is bounded: ``audit:due`` by
``[audit] max_due`` plus one batch (the audit stops reading exists events once it is full),
``audit:alive:<rule>`` and ``audit:launched:<rule>`` by the resources alive
since the oldest audit period not yet checked (a resource deleted before it is
forgotten), ``audit:seen:<rule>:<period>`` by the periods not yet checked
(deleted once checked), ``audit:counts:<period>`` by ``[audit] keep_periods``.
The audit's events themselves (verdicts) are stored by the ingest path, not here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from yagi_meter.notification import Event
from yagi_meter.store import codec, partitions
from yagi_meter.store.base import Collection, Pipeline, translated
from yagi_meter.store.keys import Keys
from yagi_meter.store.nodes import Call, PendingCalls
from yagi_meter.store.scripts import Scripts

# The publisher_id of the audit's verdicts; ingest adds those to audit:verdicts.
VERDICT_PUBLISHER = "yagi-meter.audit"
VERDICT_SUFFIXES = (".verified", ".failed")
# Score of a resource in audit:alive with no deletion known (beyond any time in ms).
ALIVE = 2**52


def is_verdict(event: Event | codec.Indexed) -> bool:
    """An audit verdict, listed in the ``/audit`` feed."""
    return event.publisher_id == VERDICT_PUBLISHER and event.event_type.endswith(VERDICT_SUFFIXES)


def member(tenant_id: str, resource_id: str) -> str:
    """A resource's member name in the audit's sets."""
    return json.dumps([tenant_id, resource_id], separators=(",", ":"))


def resource_of(name: bytes | str) -> tuple[str, str]:
    tenant, resource = json.loads(name)
    return tenant, resource


@dataclass
class Tracking:
    """What the tracker learnt from one batch of one event type, written in one transaction."""

    event_type: str
    last_seq: int  # store-wide number (partitions.ref) of the last event read
    launched: dict[str, tuple[str, int]] = field(default_factory=dict)  # member -> (rule, ms), first wins
    deleted: dict[str, tuple[str, int]] = field(default_factory=dict)  # member -> (rule, ms)
    alive: list[tuple[str, str]] = field(default_factory=list)  # (rule, member) seen alive
    due: dict[int, int] = field(default_factory=dict)  # exists seq -> ms it is due
    seen: list[tuple[str, int, str]] = field(default_factory=list)  # (rule, period ms, member)
    first_period: dict[str, int] = field(default_factory=dict)  # rule -> earliest period ms


@dataclass(frozen=True)
class Lifecycle:
    """A resource's events of the wanted types, and whether a bound cut the read short."""

    events: list[Event]
    complete: bool


class AuditLedger(Collection):
    """Reads and writes of the audit's keys; nothing else touches them (``Store.audit``).

    Every read of the archive the audit makes is here too (the ``type:``
    indexes, a resource's lifecycle through lifecycle.lua), so the audit's
    code outside the store sees neither a key nor a Redis client.
    """

    what = "the audit's state"

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        scripts: Scripts,
        parts: Sequence[Keys] = (),
        spread_tenants: Iterable[str] = (),
    ) -> None:
        super().__init__(client, keys, scripts)
        self.parts = list(parts or [keys])
        self.spread_tenants = frozenset(spread_tenants)

    @property
    def partitions(self) -> int:
        return len(self.parts)

    # -- following the event-type indexes (one cursor per type and partition) --

    @staticmethod
    def _cursor_field(event_type: str, partition: int) -> str:
        return event_type if partition == 0 else f"{event_type}\x1f{partition}"

    def cursor(self, event_type: str, partition: int = 0) -> int:
        """The last seq of ``partition``'s index of ``event_type`` the audit has read."""
        field_name = self._cursor_field(event_type, partition)
        return int(self._call(self.client.hget, self.keys.audit_cursors, field_name) or 0)

    def new_seqs(self, event_type: str, after: int, count: int, partition: int = 0) -> list[int]:
        """Store-wide numbers of ``partition``'s ``event_type`` events after its seq
        ``after``, oldest first, at most ``count``."""
        index = self.parts[partition].event_type(event_type)
        found = self._call(self.client.zrangebyscore, index, f"({after}", "+inf", 0, count)
        return [partitions.ref(partition, int(seq), len(self.parts)) for seq in found]

    def record(self, tracking: Tracking, marks_floor: Callable[[str], int | None]) -> None:
        """Write one batch's tracking and move the cursor, all or nothing.

        ``marks_floor(rule)``: the rule's checked mark (None before any): a
        sighting in a period already checked is not kept.
        """
        k = self.keys
        pipe = self.client.pipeline(transaction=True)
        for name, (rule, ms) in tracking.launched.items():
            pipe.zadd(k.audit_alive(rule), {name: ALIVE}, nx=True)
            pipe.hsetnx(k.audit_launched(rule), name, ms)
        for rule, name in tracking.alive:
            pipe.zadd(k.audit_alive(rule), {name: ALIVE}, nx=True)
        for name, (rule, ms) in tracking.deleted.items():
            pipe.zadd(k.audit_alive(rule), {name: ms}, lt=True)
        if tracking.due:
            pipe.zadd(k.audit_due, {str(seq): ms for seq, ms in tracking.due.items()})
        for rule, period_ms, name in tracking.seen:
            mark = marks_floor(rule)
            if mark is None or period_ms >= mark:
                pipe.sadd(k.audit_seen(rule, period_ms), name)
        for rule, period_ms in tracking.first_period.items():
            pipe.hsetnx(k.audit_checked, rule, period_ms)
        partition, seq = partitions.split(tracking.last_seq, len(self.parts))
        pipe.hset(k.audit_cursors, self._cursor_field(tracking.event_type, partition), seq)
        self._execute(pipe)

    # -- due exists events ---------------------------------------------------

    def due_count(self) -> int:
        return int(self._call(self.client.zcard, self.keys.audit_due))

    def due(self, now_ms: int, count: int) -> list[int]:
        """Exists seqs whose grace period is over, oldest due first."""
        found = self._call(self.client.zrangebyscore, self.keys.audit_due, "-inf", now_ms, 0, count)
        return [int(seq) for seq in found]

    def done(self, seqs: Sequence[int], counts: dict[tuple[int, str], int], keep_periods: int) -> None:
        """Remove judged exists from the due set and add what their verdicts counted."""
        pipe = self.client.pipeline(transaction=True)
        if seqs:
            pipe.zrem(self.keys.audit_due, *(str(seq) for seq in seqs))
        self._count(pipe, counts)
        self._execute(pipe)
        if counts:
            self._trim_counts(keep_periods)

    def _count(self, pipe: Pipeline, counts: dict[tuple[int, str], int]) -> None:
        k = self.keys
        for (period_ms, name), n in counts.items():
            pipe.hincrby(k.audit_counts(period_ms), name, n)
            pipe.zadd(k.audit_count_periods, {str(period_ms): period_ms})

    def _trim_counts(self, keep: int) -> None:
        """Keep the newest ``keep`` periods' counts; older hashes go."""
        k = self.keys
        old = self._call(self.client.zrange, k.audit_count_periods, 0, -keep - 1)
        if old:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(*(k.audit_counts(int(period)) for period in old))
            pipe.zrem(k.audit_count_periods, *old)
            self._execute(pipe)

    def counts(self, last: int) -> list[tuple[int, dict[str, int]]]:
        """The newest ``last`` periods' counts, newest first: (period ms, {"rule|outcome|reason": n})."""
        periods = self._call(self.client.zrevrange, self.keys.audit_count_periods, 0, last - 1)
        pipe = self.client.pipeline(transaction=False)
        for period in periods:
            pipe.hgetall(self.keys.audit_counts(int(period)))
        replies = self._execute(pipe)
        return [
            (int(period), {name.decode(): int(n) for name, n in reply.items()})
            for period, reply in zip(periods, replies, strict=True)
        ]

    # -- missing exists ------------------------------------------------------

    def marks(self) -> dict[str, int]:
        """Per rule, the end (ms) of the audit periods already checked for missing exists."""
        found = self._call(self.client.hgetall, self.keys.audit_checked)
        return {name.decode(): int(ms) for name, ms in found.items()}

    def marks_text(self) -> dict[str, str]:
        """``marks`` as ISO 8601 times."""
        return {
            rule: datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")
            for rule, ms in self.marks().items()
        }

    def alive_since(self, rule: str, start_ms: int, offset: int, count: int) -> list[tuple[str, int | None]]:
        """Resources not deleted before ``start_ms``, a slice in member order, with launch ms."""
        names = self._call(
            self.client.zrangebyscore, self.keys.audit_alive(rule), start_ms, "+inf", offset, count
        )
        if not names:
            return []
        launched = self._call(self.client.hmget, self.keys.audit_launched(rule), names)
        return [
            (name.decode(), None if ms is None else int(ms)) for name, ms in zip(names, launched, strict=True)
        ]

    def seen_in(self, rule: str, period_ms: int, names: Sequence[str]) -> list[bool]:
        if not names:
            return []
        found = self._call(self.client.smismember, self.keys.audit_seen(rule, period_ms), list(names))
        return [bool(flag) for flag in found]

    def close_periods(
        self,
        rule: str,
        periods_ms: Iterable[int],
        new_mark: int,
        counts: dict[tuple[int, str], int],
        keep_periods: int,
        batch: int = 1000,
    ) -> None:
        """Periods checked up to ``new_mark``: forget their sightings and the resources deleted before it."""
        k = self.keys
        pipe = self.client.pipeline(transaction=True)
        for period_ms in periods_ms:
            pipe.delete(k.audit_seen(rule, period_ms))
        pipe.hset(k.audit_checked, rule, new_mark)
        self._count(pipe, counts)
        self._execute(pipe)
        if counts:
            self._trim_counts(keep_periods)
        while True:
            gone = self._call(
                self.client.zrangebyscore, k.audit_alive(rule), "-inf", f"({new_mark}", 0, batch
            )
            if not gone:
                return
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(k.audit_alive(rule), *gone)
            pipe.hdel(k.audit_launched(rule), *gone)
            self._execute(pipe)

    def set_mark(self, rule: str, ms: int) -> None:
        self._call(self.client.hset, self.keys.audit_checked, rule, ms)

    # -- reading a resource's lifecycle -------------------------------------

    def lifecycle_many(
        self,
        resources_: Sequence[tuple[str, str]],
        event_types: Sequence[Sequence[str]],
        budget: int,
        most: int,
    ) -> list[Lifecycle]:
        """For each (tenant, resource), its events of the given types, in one round trip:
        from the tenant's partition, or from every partition for a tenant whose events
        are spread (an owner billing other projects: events.py ``partition_of``)."""
        script = self.scripts["lifecycle"]
        calls, where = [], []
        for n, ((tenant, resource), types) in enumerate(zip(resources_, event_types, strict=True)):
            for partition in partitions.of_tenant(tenant, len(self.parts), self.spread_tenants):
                k = self.parts[partition]
                calls.append(Call(script, [k.resource(tenant, resource), k.events], [budget, most, *types]))
                where.append((n, partition))
        with translated("reading resource lifecycles"):
            replies = PendingCalls(self.client, calls).replies() if calls else []
        found = [Lifecycle([], True) for _ in resources_]
        for (n, partition), reply in zip(where, replies, strict=True):
            part = self._decode(reply, partition)
            found[n] = Lifecycle(found[n].events + part.events, found[n].complete and part.complete)
        return found

    def lifecycle(
        self, tenant: str, resource: str, event_types: Sequence[str], budget: int, most: int
    ) -> Lifecycle:
        return self.lifecycle_many([(tenant, resource)], [event_types], budget, most)[0]

    def _decode(self, reply: list[Any], partition: int) -> Lifecycle:
        complete, rest = reply[0], reply[1:]
        count = len(self.parts)
        events = [
            codec.decode(rest[i + 2], partitions.ref(partition, int(rest[i]), count), int(rest[i + 1]))
            for i in range(0, len(rest), 3)
        ]
        return Lifecycle(events, bool(complete))

    # -- starting over -------------------------------------------------------

    def reset(self, batch: int = 1000) -> int:
        """Delete every key of the audit's own (not its verdicts, which are events); return how many."""
        removed = 0
        pattern = self.keys.audit_state_pattern
        with translated("listing the audit's keys"):
            names = list(self.client.scan_iter(match=pattern, count=batch))
        names = [name for name in names if name != self.keys.audit_verdicts.encode()]
        for start in range(0, len(names), batch):
            removed += self._call(self.client.delete, *names[start : start + batch])
        return removed

    # -- plumbing ------------------------------------------------------------

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One Redis command; an error becomes StoreError through ``translated``."""
        with translated(f"audit: {getattr(method, '__name__', 'redis call')}"):
            return method(*args, **kwargs)
