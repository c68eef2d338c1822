"""``yagi-meter retention``: remove expired events in small steps, off the ingest path.

Each step reads up to ``[retention] batch`` of the oldest entries ingested
more than ``[redis] retention_days`` ago and below every outbox's oldest
pending seq, with their bodies (``EventStore.retention_head``), decoded here
for each event's index keys (as ingest computes them), then removes them,
with their index, ``by_time`` and ``ids`` entries, in one atomic script that
checks each again (``retention_remove``).  When a step was full, the next
head is read in the same round trip as its removal, so steps in a row are
one round trip each.  A body that cannot be decoded
is logged with its seq and removed without its tenant and resource entries.  A full step is
followed by the next at once; otherwise the loop waits ``[retention]
idle_seconds``.  Redis serves other clients between steps, so a listener's
batch waits at most one step.

Nothing is kept between steps but the stream itself (its head is where the
next step starts) and that head read ahead, which the removal checks again
like any other: a retention process killed at any point resumes where the
store is, and several may run at once (each event is removed once).
"""

from __future__ import annotations

import logging
import time

from yagi_meter.config import Config
from yagi_meter.daemon import Backoff, Lifecycle
from yagi_meter.errors import StoreError
from yagi_meter.store import Store
from yagi_meter.store.events import RetentionHead

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
# How often a busy retention process logs what it removed.
REPORT_EVERY_SECONDS = 60.0


class Retention:
    """Runs retention steps until ``stop()`` or SIGTERM."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.units = store.events.retention_units()
        self.lifecycle = Lifecycle("retention", store.errors)
        self.removed = 0
        self.steps = 0
        # Each partition's next head, read with its last removal when that step was
        # full (retention_remove): a busy step is one round trip.
        self.ahead: dict[int, RetentionHead] = {}

    def stop(self, *_: object) -> None:
        self.lifecycle.stop()

    def run(self) -> None:
        days = self.config.redis.retention_days
        batch = self.config.retention.batch
        idle = self.config.retention.idle_seconds
        retry = Backoff(FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS)
        if days <= 0:
            log.info("[redis] retention_days is 0: keeping every event; nothing to do")
        else:
            log.info("removing events ingested more than %s days ago, up to %d per step", days, batch)
        reported, removed_then = time.monotonic(), 0
        while not self.lifecycle.stopping:
            if days <= 0:
                self.lifecycle.wait(idle)
                continue
            more = False
            try:
                # A step per partition in turn: each is small and bounded.
                for i, unit in enumerate(self.units):
                    head = self.ahead.pop(i, None)
                    if head is None:
                        head = self.store.events.retention_head(unit, days, batch)
                    step, ahead = self.store.events.retention_remove(unit, head, days, batch)
                    if ahead is not None:
                        self.ahead[i] = ahead
                    self.steps += 1
                    self.removed += step.removed
                    more = more or step.more
            except StoreError as e:
                self.ahead.clear()
                delay = retry.next()
                log.error("retention step failed (%s); trying again in %.1fs", e, delay)
                self.lifecycle.record(f"retention step failed: {e}")
                self.lifecycle.wait(delay)
                continue
            retry.reset()
            now = time.monotonic()
            if self.removed != removed_then and (now - reported >= REPORT_EVERY_SECONDS or not more):
                log.info("retention removed %d events", self.removed - removed_then)
                reported, removed_then = now, self.removed
            if not more:
                self.lifecycle.wait(idle)
        log.info("stopped; removed %d events in %d steps", self.removed, self.steps)
