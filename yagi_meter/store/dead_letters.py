"""Dead letters: events the archive refused for good (4xx), kept with its answer until re-driven.

The stream is not capped: an entry leaves only when an operator re-drives it
(``yagi-meter forward dead-letters retry``), so no refused event is forgotten.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from yagi_meter.store.base import StreamLog
from yagi_meter.store.outbox import Outbox

BODY_LIMIT = 4096  # characters of the archive's answer kept: enough for any error page's point


@dataclass(frozen=True)
class DeadLetter:
    """One refused forward: which event, where to, and what the archive said."""

    id: str
    seq: int
    message_id: str
    event_type: str
    status: int
    body: str
    url: str
    at: datetime


class DeadLetters(StreamLog):
    """The refused forwards; each leaves the forward outbox as it comes in, and goes back on re-drive."""

    key_name = "dead_letters"
    what = "dead letters"

    def add(self, letter: DeadLetter, outbox: Outbox) -> None:
        """Keep ``letter`` and mark its outbox entry done (Outbox.done_with)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(
            self.key,
            {
                "seq": letter.seq,
                "message_id": letter.message_id,
                "event_type": letter.event_type,
                "status": letter.status,
                "body": letter.body[:BODY_LIMIT],
                "url": letter.url,
                "at": int(letter.at.timestamp() * 1000),
            },
        )
        outbox.done_with(pipe, [letter.seq], f"writing dead letter {letter.message_id}")

    def list(self, count: int = 100, after: str = "-") -> list[DeadLetter]:
        """Up to ``count`` dead letters, oldest first, after the entry id ``after``."""
        return [_letter(entry_id, fields) for entry_id, fields in self._after(after, count)]

    def redrive(self, letters: Sequence[DeadLetter], outbox: Outbox) -> None:
        """Put the letters' events back in the outbox and remove the letters: in one step
        with one partition, else the outbox first (a crash between them leaves a letter
        whose event is already back: re-driving it again changes nothing)."""
        if not letters:
            return
        pipe = self.client.pipeline(transaction=outbox.single)
        outbox.add(*(letter.seq for letter in letters), pipe=pipe)
        if not outbox.single:
            self._execute(pipe, "re-driving dead letters")
            pipe = self.client.pipeline(transaction=True)
        pipe.xdel(self.key, *(letter.id for letter in letters))
        self._execute(pipe, "re-driving dead letters")


def now() -> datetime:
    return datetime.fromtimestamp(time.time(), UTC)


def _letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        id=entry_id.decode(),
        seq=int(fields[b"seq"]),
        message_id=fields[b"message_id"].decode(),
        event_type=fields[b"event_type"].decode(),
        status=int(fields[b"status"]),
        body=fields[b"body"].decode("utf-8", errors="replace"),
        url=fields[b"url"].decode(),
        at=datetime.fromtimestamp(int(fields[b"at"]) / 1000, UTC),
    )
