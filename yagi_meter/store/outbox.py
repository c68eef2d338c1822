"""Outboxes: the work left to do for each stored event (WebSub push, AtomPub forward).

The ingest script adds every event's seq to an outbox in the same atomic step
that stores it.  Workers ``claim`` due entries under a lease, then either mark
them ``done`` or schedule a ``retry``.  A worker that dies mid-way loses
nothing: its lease ends and another worker takes the entries.  Several
workers never hold the same entry at once while its lease lasts.
"""

from __future__ import annotations

import time
from importlib import resources

import redis

from yagi_meter.errors import StoreError
from yagi_meter.store.keys import Keys


def member(seq: int) -> str:
    """An outbox member: the seq zero-padded as the ingest script writes it."""
    return f"{seq:015d}"


class Outbox:
    """One named outbox (``push`` or ``forward``)."""

    def __init__(self, client: redis.Redis, keys: Keys, name: str) -> None:
        self.client = client
        self.name = name
        self.due_key = keys.outbox(name)
        self.seqs_key = keys.outbox_seqs(name)
        self.attempts_key = keys.outbox_attempts(name)
        source = resources.files("yagi_meter.store").joinpath("claim.lua").read_text()
        self._claim = client.register_script(source)

    def claim(self, count: int, lease_seconds: float) -> list[int]:
        """Up to ``count`` due seqs, oldest due first, leased to the caller."""
        try:
            seqs = self._claim(keys=[self.due_key], args=[int(lease_seconds * 1000), count])
        except redis.RedisError as e:
            raise StoreError(f"claiming from outbox {self.name} failed: {e}") from None
        return sorted(int(seq) for seq in seqs)

    def done(self, *seqs: int, pipe: redis.client.Pipeline | None = None) -> None:
        """Forget finished entries; pass ``pipe`` to do it inside the caller's transaction."""
        if not seqs:
            return
        own = pipe is None
        pipe = self.client.pipeline(transaction=True) if own else pipe
        members = [member(seq) for seq in seqs]
        pipe.zrem(self.due_key, *members)
        pipe.zrem(self.seqs_key, *members)
        pipe.hdel(self.attempts_key, *members)
        if own:
            self._execute(pipe)

    def retry(self, seq: int, delay_seconds: float) -> int:
        """Make ``seq`` due again in ``delay_seconds``; return its failed attempts so far."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(self.due_key, {member(seq): int((time.time() + delay_seconds) * 1000)}, xx=True)
        pipe.hincrby(self.attempts_key, member(seq), 1)
        return int(self._execute(pipe)[1])

    def release(self, *seqs: int) -> None:
        """Give back claimed entries not worked on (shutdown): due now, no attempt counted."""
        if not seqs:
            return
        due = int(time.time() * 1000)
        try:
            self.client.zadd(self.due_key, {member(seq): due for seq in seqs}, xx=True)
        except redis.RedisError as e:
            raise StoreError(f"outbox {self.name} write failed: {e}") from None

    def add(self, *seqs: int, pipe: redis.client.Pipeline) -> None:
        """Put entries back (an operator re-drives them), due now, inside the caller's transaction."""
        due = int(time.time() * 1000)
        pipe.zadd(self.due_key, {member(seq): due for seq in seqs})
        pipe.zadd(self.seqs_key, {member(seq): seq for seq in seqs})
        pipe.hdel(self.attempts_key, *(member(seq) for seq in seqs))

    def attempts(self, seq: int) -> int:
        try:
            return int(self.client.hget(self.attempts_key, member(seq)) or 0)
        except redis.RedisError as e:
            raise StoreError(f"reading outbox {self.name} failed: {e}") from None

    def backlog(self) -> int:
        """Entries not yet done."""
        try:
            return self.client.zcard(self.seqs_key)
        except redis.RedisError as e:
            raise StoreError(f"reading outbox {self.name} failed: {e}") from None

    def oldest(self) -> int | None:
        """The lowest seq not yet done, or None when the outbox is empty."""
        try:
            first = self.client.zrange(self.seqs_key, 0, 0)
        except redis.RedisError as e:
            raise StoreError(f"reading outbox {self.name} failed: {e}") from None
        return int(first[0]) if first else None

    def _execute(self, pipe: redis.client.Pipeline) -> list:
        try:
            return pipe.execute()
        except redis.RedisError as e:
            raise StoreError(f"outbox {self.name} write failed: {e}") from None
