"""The last run-time errors of every component, kept in Redis for ``yagi-meter status``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from yagi_meter.store.base import StreamLog

log = logging.getLogger(__name__)

KEEP = 200


@dataclass(frozen=True)
class RecordedError:
    at: datetime
    component: str
    text: str


class ErrorLog(StreamLog):
    """A capped stream of recent errors; recording never raises (it is only a report)."""

    key_name = "errors"
    what = "the error log"

    def record(self, component: str, text: str) -> None:
        try:
            self.client.xadd(
                self.key,
                {"component": component, "text": text, "at": str(int(time.time() * 1000))},
                maxlen=KEEP,
                approximate=True,
            )
        except redis.RedisError as e:  # a report only: logged, never raised
            log.warning("could not record error of %s in Redis: %s", component, e)

    def recent(self, count: int = 10) -> list[RecordedError]:
        """The newest ``count`` errors, newest first."""
        return [
            RecordedError(
                datetime.fromtimestamp(int(f[b"at"]) / 1000, UTC),
                f[b"component"].decode(),
                f[b"text"].decode(),
            )
            for _, f in self._newest(count)
        ]
