"""Outboxes: the work left to do for each stored event (WebSub push, AtomPub forward).

The ingest script adds every event's seq to an outbox in the same atomic step
that stores it.  Workers ``claim`` due entries under a lease, then either mark
them ``done`` or schedule a ``retry``.  A worker that dies mid-way loses
nothing: its lease ends and another worker takes the entries.  Several
workers never hold the same entry at once while its lease lasts.

This module owns the outbox keys (keys.py): scripts that must change an
outbox in the same atomic step as other keys (ingest.lua, fanout.lua) do it
through ``_outbox.lua``, and get every key from ``OutboxKeys``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from yagi_meter.store import partitions
from yagi_meter.store.base import Collection, Pipeline, translated
from yagi_meter.store.keys import Keys
from yagi_meter.store.nodes import Call, PendingCalls
from yagi_meter.store.scripts import Scripts

# Zero-padded, so entries due in the same ms come out in seq order; ingest.lua
# gets this format from events.py, and Lua's string.format reads it alike.
MEMBER_FORMAT = "%015d"


def member(seq: int) -> str:
    """An outbox member: the seq as MEMBER_FORMAT writes it."""
    return MEMBER_FORMAT % seq


@dataclass(frozen=True)
class OutboxKeys:
    """The three keys of one outbox: due (zset), seqs (zset) and attempts (hash)."""

    due: str
    seqs: str
    attempts: str

    @classmethod
    def of(cls, keys: Keys, name: str) -> OutboxKeys:
        return cls(keys.outbox(name), keys.outbox_seqs(name), keys.outbox_attempts(name))


class Outbox(Collection):
    """One named outbox (``push`` or ``forward``): one per partition, seen as one.

    Entries are named by store-wide event numbers (partitions.ref): with one
    partition, the seq itself.  A claim takes from every partition; ``done``
    and ``retry`` go to the partition an entry belongs to.
    """

    def __init__(
        self, client: redis.Redis, keys: Keys, scripts: Scripts, name: str, parts: Sequence[Keys] = ()
    ) -> None:
        super().__init__(client, keys, scripts)
        self.name = name
        self.what = f"outbox {name}"
        self.parts = [OutboxKeys.of(k, name) for k in (parts or [keys])]
        self.outbox_keys = self.parts[0]

    @property
    def single(self) -> bool:
        """One partition: an outbox change can join another key's transaction."""
        return len(self.parts) == 1

    def _by_partition(self, numbers: Iterable[int]) -> dict[int, list[int]]:
        grouped: dict[int, list[int]] = {}
        for number in numbers:
            partition, seq = partitions.split(number, len(self.parts))
            grouped.setdefault(partition, []).append(seq)
        return grouped

    def claim(self, count: int, lease_seconds: float) -> list[int]:
        """Up to ``count`` due entries (a few more with partitions), oldest due first in
        each partition, leased to the caller.

        Each partition is asked for its share in one round (a call per
        partition, all sent before a reply is read); when some had less, the
        ones that filled their share are asked for the rest.
        """
        lease_ms = int(lease_seconds * 1000)
        wanted = list(range(len(self.parts)))
        share = -(-count // len(self.parts))
        taken: list[int] = []
        while wanted and len(taken) < count:
            calls = [Call(self.scripts["claim"], [self.parts[i].due], [lease_ms, share]) for i in wanted]
            with translated(f"claiming from outbox {self.name}"):
                replies = PendingCalls(self.client, calls).replies()
            full = []
            for partition, seqs in zip(wanted, replies, strict=True):
                taken += [partitions.ref(partition, int(seq), len(self.parts)) for seq in seqs]
                if len(seqs) == share:
                    full.append(partition)
            if len(full) == len(wanted) or not full:
                break
            wanted, share = full, -(-(count - len(taken)) // len(full))
        return sorted(taken)

    def done(self, *seqs: int, pipe: Pipeline | None = None) -> None:
        """Forget finished entries; pass ``pipe`` to do it inside the caller's transaction
        (only with one partition: see ``done_with``)."""
        if not seqs:
            return
        own = pipe is None
        if not own and not self.single:
            raise ValueError("an outbox of several partitions cannot join a transaction")
        pipe = self.client.pipeline(transaction=self.single) if own else pipe
        for partition, local in self._by_partition(seqs).items():
            keys = self.parts[partition]
            members = [member(seq) for seq in local]
            pipe.zrem(keys.due, *members)
            pipe.zrem(keys.seqs, *members)
            pipe.hdel(keys.attempts, *members)
        if own:
            self._execute(pipe)

    def done_with(self, pipe: Pipeline, seqs: Sequence[int], what: str) -> None:
        """Run the caller's transaction ``pipe`` and forget ``seqs``: in the same
        transaction with one partition, else right after it (a crash between
        them leaves the entries to be worked again: at least once, never lost)."""
        if self.single:
            self.done(*seqs, pipe=pipe)
            self._execute(pipe, what)
            return
        self._execute(pipe, what)
        self.done(*seqs)

    def retry(self, seq: int, delay_seconds: float) -> int:
        """Make ``seq`` due again in ``delay_seconds``; return its failed attempts so far."""
        partition, local = partitions.split(seq, len(self.parts))
        keys = self.parts[partition]
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(keys.due, {member(local): int((time.time() + delay_seconds) * 1000)}, xx=True)
        pipe.hincrby(keys.attempts, member(local), 1)
        return int(self._execute(pipe)[1])

    def release(self, *seqs: int) -> None:
        """Give back claimed entries not worked on (shutdown): due now, no attempt counted."""
        if not seqs:
            return
        due = int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=False)
        for partition, local in self._by_partition(seqs).items():
            pipe.zadd(self.parts[partition].due, {member(seq): due for seq in local}, xx=True)
        self._execute(pipe, f"writing outbox {self.name}")

    def add(self, *seqs: int, pipe: Pipeline) -> None:
        """Put entries back (an operator re-drives them), due now, inside the caller's
        pipeline (a transaction only with one partition)."""
        due = int(time.time() * 1000)
        for partition, local in self._by_partition(seqs).items():
            keys = self.parts[partition]
            pipe.zadd(keys.due, {member(seq): due for seq in local})
            pipe.zadd(keys.seqs, {member(seq): seq for seq in local})
            pipe.hdel(keys.attempts, *(member(seq) for seq in local))

    def pending(self, seqs: Iterable[int]) -> set[int]:
        """Which of ``seqs`` are still in the outbox (not done)."""
        grouped = self._by_partition(seqs)
        pipe = self.client.pipeline(transaction=False)
        for partition, local in grouped.items():
            pipe.zmscore(self.parts[partition].seqs, [member(seq) for seq in local])
        replies = self._execute(pipe, f"reading outbox {self.name}")
        found: set[int] = set()
        for (partition, local), scores in zip(grouped.items(), replies, strict=True):
            found.update(
                partitions.ref(partition, seq, len(self.parts))
                for seq, score in zip(local, scores, strict=True)
                if score is not None
            )
        return found

    def attempts(self, seq: int) -> int:
        partition, local = partitions.split(seq, len(self.parts))
        with translated(f"reading outbox {self.name}"):
            return int(self.client.hget(self.parts[partition].attempts, member(local)) or 0)

    def backlog(self) -> int:
        """Entries not yet done, in every partition."""
        pipe = self.client.pipeline(transaction=False)
        for keys in self.parts:
            pipe.zcard(keys.seqs)
        return sum(self._execute(pipe, f"reading outbox {self.name}"))

    def oldest(self) -> int | None:
        """The oldest entry not yet done (the lowest seq of any partition), or None when empty."""
        pipe = self.client.pipeline(transaction=False)
        for keys in self.parts:
            pipe.zrange(keys.seqs, 0, 0, withscores=True)
        heads = [
            (int(reply[0][1]), partition)
            for partition, reply in enumerate(self._execute(pipe, f"reading outbox {self.name}"))
            if reply
        ]
        if not heads:
            return None
        seq, partition = min(heads)
        return partitions.ref(partition, seq, len(self.parts))
