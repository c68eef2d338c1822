"""The recent forwards the archive accepted, with the Location it gave each entry.

Capped at ``KEEP`` entries: its cost stays bounded whatever the traffic.  It
answers "where did the archive put event X?" for recent events; for older
ones the archive itself is the record (we send ``urn:uuid:<message_id>`` as
the entry id, so the archive can be searched by it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from yagi_meter.store.base import StreamLog
from yagi_meter.store.outbox import Outbox

KEEP = 10_000  # ~2 MB of Redis at most


@dataclass(frozen=True)
class Archived:
    """One accepted forward: the event, the status (201, or 409 already there) and where it lives."""

    seq: int
    message_id: str
    event_type: str
    status: int
    location: str
    at: datetime


class ArchivedLog(StreamLog):
    """The accepted forwards, newest kept; each marks its forward outbox entry done."""

    key_name = "forwarded"
    what = "forwarded entries"

    def add(self, entries: Sequence[Archived], outbox: Outbox) -> None:
        """Record ``entries`` and mark their outbox entries done (Outbox.done_with)."""
        if not entries:
            return
        pipe = self.client.pipeline(transaction=True)
        for entry in entries:
            fields = {
                "seq": entry.seq,
                "message_id": entry.message_id,
                "event_type": entry.event_type,
                "status": entry.status,
                "location": entry.location,
                "at": int(entry.at.timestamp() * 1000),
            }
            pipe.xadd(self.key, fields, maxlen=KEEP, approximate=True)
        outbox.done_with(pipe, [entry.seq for entry in entries], f"marking {len(entries)} events forwarded")

    def recent(self, count: int = 100) -> list[Archived]:
        """The newest ``count`` forwards, newest first."""
        return [
            Archived(
                seq=int(f[b"seq"]),
                message_id=f[b"message_id"].decode(),
                event_type=f[b"event_type"].decode(),
                status=int(f[b"status"]),
                location=f[b"location"].decode(),
                at=datetime.fromtimestamp(int(f[b"at"]) / 1000, UTC),
            )
            for _, f in self._newest(count)
        ]
