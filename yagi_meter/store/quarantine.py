"""The quarantine: messages that could not become events, kept whole with the reason."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import UTC, datetime

from yagi_meter.store.base import StreamLog, translated


@dataclass(frozen=True)
class QuarantinedMessage:
    """One quarantined message as it arrived, with why and where from."""

    id: str
    reason: str
    source: str
    at: datetime
    body: bytes  # the whole message, or its head when truncated
    size: int  # bytes of the whole message
    sha256: str  # of the whole message ("" for entries older than digests)

    @property
    def truncated(self) -> bool:
        """Only the head is kept (the message was too large): it cannot be requeued."""
        return self.size > len(self.body)


class Quarantine(StreamLog):
    """Reads and removals; entries are added atomically with events by EventStore.write
    (ingest.lua, through _quarantine.lua)."""

    key_name = "quarantine"
    what = "the quarantine"

    def list(self, count: int = 100, after: str = "-") -> list[QuarantinedMessage]:
        """Up to ``count`` entries, oldest first, after the entry id ``after``."""
        return [
            QuarantinedMessage(
                id=entry_id.decode(),
                reason=fields[b"reason"].decode(),
                source=fields[b"source"].decode(),
                at=datetime.fromtimestamp(int(fields[b"at"]) / 1000, UTC),
                body=fields[b"body"],
                size=int(fields.get(b"size", len(fields[b"body"]))),
                sha256=fields.get(b"sha256", b"").decode(),
            )
            for entry_id, fields in self._after(after, count)
        ]

    def last_id(self) -> str | None:
        """The newest entry's id, or None when the quarantine is empty."""
        newest = self._newest(1)
        return newest[0][0].decode() if newest else None

    def remove(self, entry_id: str) -> None:
        """Remove one entry and its digest (the same message may then be quarantined again)."""
        with translated(f"removing quarantined {entry_id}"):
            found = self.client.xrange(self.key, entry_id, entry_id)
            pipe = self.client.pipeline(transaction=True)
            if found and b"sha256" in found[0][1]:
                pipe.hdel(self.keys.quarantine_digests, found[0][1][b"sha256"])
            pipe.xdel(self.key, entry_id)
            pipe.execute()

    def delete(self, entry_ids: builtins.list[str]) -> builtins.list[str]:
        """Remove the given entries; return the ids that were there (the others are unknown)."""
        pipe = self.client.pipeline(transaction=False)
        for entry_id in entry_ids:
            pipe.xdel(self.key, entry_id)
        removed = self._execute(pipe, "deleting quarantined messages")
        return [entry_id for entry_id, n in zip(entry_ids, removed, strict=True) if n]

    def delete_through(self, last: str, batch: int = 1000) -> int:
        """Remove every entry up to and including ``last``, ``batch`` at a time; return how many.

        Entries quarantined after ``last`` (while this runs) are kept.
        """
        deleted = 0
        while True:
            entries = self._after("-", batch, last)
            if not entries:
                return deleted
            deleted += len(self.delete([entry_id.decode() for entry_id, _ in entries]))
