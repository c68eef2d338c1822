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
from dataclasses import dataclass

import redis

from yagi_meter.store.base import Collection, Pipeline, translated
from yagi_meter.store.keys import Keys
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
    """One named outbox (``push`` or ``forward``)."""

    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts, name: str) -> None:
        super().__init__(client, keys, scripts)
        self.name = name
        self.what = f"outbox {name}"
        self.outbox_keys = OutboxKeys.of(keys, name)

    def claim(self, count: int, lease_seconds: float) -> list[int]:
        """Up to ``count`` due seqs, oldest due first, leased to the caller."""
        args = [int(lease_seconds * 1000), count]
        seqs = self._run("claim", [self.outbox_keys.due], args, f"claiming from outbox {self.name}")
        return sorted(int(seq) for seq in seqs)

    def done(self, *seqs: int, pipe: Pipeline | None = None) -> None:
        """Forget finished entries; pass ``pipe`` to do it inside the caller's transaction."""
        if not seqs:
            return
        own = pipe is None
        pipe = self.client.pipeline(transaction=True) if own else pipe
        members = [member(seq) for seq in seqs]
        pipe.zrem(self.outbox_keys.due, *members)
        pipe.zrem(self.outbox_keys.seqs, *members)
        pipe.hdel(self.outbox_keys.attempts, *members)
        if own:
            self._execute(pipe)

    def retry(self, seq: int, delay_seconds: float) -> int:
        """Make ``seq`` due again in ``delay_seconds``; return its failed attempts so far."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(self.outbox_keys.due, {member(seq): int((time.time() + delay_seconds) * 1000)}, xx=True)
        pipe.hincrby(self.outbox_keys.attempts, member(seq), 1)
        return int(self._execute(pipe)[1])

    def release(self, *seqs: int) -> None:
        """Give back claimed entries not worked on (shutdown): due now, no attempt counted."""
        if not seqs:
            return
        due = int(time.time() * 1000)
        with translated(f"writing outbox {self.name}"):
            self.client.zadd(self.outbox_keys.due, {member(seq): due for seq in seqs}, xx=True)

    def add(self, *seqs: int, pipe: Pipeline) -> None:
        """Put entries back (an operator re-drives them), due now, inside the caller's transaction."""
        due = int(time.time() * 1000)
        pipe.zadd(self.outbox_keys.due, {member(seq): due for seq in seqs})
        pipe.zadd(self.outbox_keys.seqs, {member(seq): seq for seq in seqs})
        pipe.hdel(self.outbox_keys.attempts, *(member(seq) for seq in seqs))

    def attempts(self, seq: int) -> int:
        with translated(f"reading outbox {self.name}"):
            return int(self.client.hget(self.outbox_keys.attempts, member(seq)) or 0)

    def backlog(self) -> int:
        """Entries not yet done."""
        with translated(f"reading outbox {self.name}"):
            return self.client.zcard(self.outbox_keys.seqs)

    def oldest(self) -> int | None:
        """The lowest seq not yet done, or None when the outbox is empty."""
        with translated(f"reading outbox {self.name}"):
            first = self.client.zrange(self.outbox_keys.seqs, 0, 0)
        return int(first[0]) if first else None
