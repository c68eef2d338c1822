"""The last run-time errors of every component, kept in Redis for ``yagi-meter status``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from yagi_meter.errors import StoreError
from yagi_meter.store.keys import Keys

log = logging.getLogger(__name__)

KEEP = 200


@dataclass(frozen=True)
class RecordedError:
    at: datetime
    component: str
    text: str


class ErrorLog:
    """A capped stream of recent errors; recording never raises (it is only a report)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def record(self, component: str, text: str) -> None:
        try:
            self.client.xadd(
                self.keys.errors,
                {"component": component, "text": text, "at": str(int(time.time() * 1000))},
                maxlen=KEEP,
                approximate=True,
            )
        except redis.RedisError as e:
            log.warning("could not record error of %s in Redis: %s", component, e)

    def recent(self, count: int = 10) -> list[RecordedError]:
        """The newest ``count`` errors, newest first."""
        try:
            entries = self.client.xrevrange(self.keys.errors, "+", "-", count=count)
        except redis.RedisError as e:
            raise StoreError(f"reading the error log failed: {e}") from None
        return [
            RecordedError(
                datetime.fromtimestamp(int(f[b"at"]) / 1000, UTC),
                f[b"component"].decode(),
                f[b"text"].decode(),
            )
            for _, f in entries
        ]
