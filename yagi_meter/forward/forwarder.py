"""The AtomPub forwarder (``yagi-meter forward``): drain the forward outbox into the archive.

``concurrency`` worker threads post events, each with its own keep-alive
session, from a queue that whichever of them sees it run low refills: it
records what the archive accepted and claims the next batch of due events
from the outbox under a lease (a few Redis round trips for many events).
An event leaves the outbox only when the archive has it (201, or 409 already
there) or refused it for good (other 4xx: dead letter);
anything else is retried with exponential backoff and jitter, forever, and
pauses the whole forwarder for a while (queued events go back to the outbox
rather than pile onto a failing archive).  A forwarder killed mid-way loses
nothing: its leases end and the events are posted again (an archive answers
409 to the ones it already has).  Ingest never waits for any of this: it
only adds to the outbox.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from enum import StrEnum

from yagi_meter.atom import entry_document, entry_id
from yagi_meter.config import Config
from yagi_meter.daemon import Lifecycle, backoff
from yagi_meter.errors import ArchiveError, StoreError
from yagi_meter.forward.atompub import AtomPubClient, Posted, auth_from_config
from yagi_meter.forward.routes import Routes
from yagi_meter.notification import Event
from yagi_meter.store import Store
from yagi_meter.store.archived import Archived
from yagi_meter.store.dead_letters import DeadLetter

log = logging.getLogger(__name__)

COMPONENT = "forward"
IDLE_SECONDS = 0.2  # between claims while the outbox is empty
# Events claimed at once: twice the threads, at least this many, so the Redis round
# trips are shared by many events.  Up to two batches wait in the queue; the lease
# covers the wait.
MIN_BATCH = 16
REPORT_SECONDS = 60  # one summary line per minute


class Verdict(StrEnum):
    """What the archive's answer means for the event (also the names counted in the report)."""

    ARCHIVED = "archived"  # 2xx: the archive has it now
    DUPLICATE = "duplicate"  # 409: the archive had it already
    RETRY = "retry"  # try again later
    DEAD = "dead"  # refused for good: a dead letter


def classify(status: int) -> Verdict:
    """What an HTTP status means for the event."""
    if 200 <= status < 300:
        return Verdict.ARCHIVED
    if status == 409:
        return Verdict.DUPLICATE
    if 400 <= status < 500 and status not in (401, 408, 429):
        return Verdict.DEAD
    return Verdict.RETRY  # 401 after re-auth, 408, 429, 5xx, and the unexpected 1xx/3xx


class Forwarder:
    """One forwarder process; several may run at once on the same outbox."""

    def __init__(self, config: Config, store: Store, client: AtomPubClient | None = None) -> None:
        f = config.forward
        self.store = store
        self.routes = Routes.from_config(config)
        self.base_url = config.base_url
        self.client = client or AtomPubClient(auth_from_config(config), timeout=f.timeout)
        self.concurrency = f.concurrency
        self.lease_seconds = f.lease_seconds
        self.backoff_base, self.backoff_max = f.backoff_base, f.backoff_max
        self.outbox = store.outbox("forward")
        self.dead_letters = store.dead_letters
        self.archived = store.archived
        self.lifecycle = Lifecycle(COMPONENT, store.errors)
        self.counts: Counter[Verdict] = Counter()
        self._lock = threading.Lock()
        self._failures = 0  # consecutive rounds of archive trouble
        self._paused_until = 0.0  # monotonic; no claims before it
        self._last_reason = ""
        self._archived_entries: list[Archived] = []
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()  # claimed, not yet taken
        self._claiming = threading.Lock()  # one thread refills the queue at a time
        self._batch = max(2 * self.concurrency, MIN_BATCH)  # claimed at once
        self._refill_at = self._batch  # queue length below which it is refilled
        self._next_claim = 0.0  # monotonic; after an empty claim, wait a moment

    def stop(self) -> None:
        """Finish the requests in flight, give back the rest, and return from ``run``."""
        self.lifecycle.stop()

    def run(self) -> None:
        """Forward until ``stop()``; the worker threads claim, post and record."""
        threads = [
            threading.Thread(target=self._work, name=f"forward-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        log.info("forwarding to %s with %d requests in flight", self.routes.url, self.concurrency)
        started = time.monotonic()
        try:
            while not self.lifecycle.stopping:
                self.lifecycle.wait(REPORT_SECONDS - (time.monotonic() - started))
                if time.monotonic() - started >= REPORT_SECONDS:
                    self._report(time.monotonic() - started)
                    started = time.monotonic()
        finally:
            self._shut_down(threads)

    def _shut_down(self, threads: list[threading.Thread]) -> None:
        self.lifecycle.stop()  # also when run() ends by an exception
        for thread in threads:
            thread.join()
        self.client.close()
        unstarted = []
        while True:
            try:
                unstarted.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self._record_archived()
        try:
            self.outbox.release(*(event.seq for event in unstarted if event.seq is not None))
        except StoreError as e:  # their leases end soon anyway
            log.warning("forward: could not give back %d claimed events: %s", len(unstarted), e)
        log.info(
            "forwarder stopped: requests in flight finished, %d claimed events given back", len(unstarted)
        )

    # -- the worker threads --------------------------------------------------

    def _work(self) -> None:
        while not self.lifecycle.stopping:
            # The queue runs low: whichever thread sees it first refills it while the
            # others keep posting (no thread to wake up, no thread idle meanwhile).
            if self._queue.qsize() < self._refill_at and self._claiming.acquire(blocking=False):
                try:
                    self._refill()
                finally:
                    self._claiming.release()
            try:
                event = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                continue
            self._forward(event)

    def _refill(self) -> None:
        """Record what the archive accepted, then claim a batch into the queue."""
        self._record_archived()
        now = time.monotonic()
        if now < self._paused_until or now < self._next_claim:
            return
        try:
            seqs = self.outbox.claim(self._batch, self.lease_seconds)
            events = self.store.events.get_many(seqs) if seqs else []
            gone = set(seqs) - {event.seq for event in events}
            if gone:  # removed by retention before it could be sent: nothing left to send
                log.warning("forward: events %s no longer stored; dropped from the outbox", sorted(gone))
                self.outbox.done(*gone)
        except StoreError as e:
            self._trouble(f"Redis: {e}")
            return
        if not seqs:  # nothing due: look again in a moment, not at every turn of every thread
            self._next_claim = now + IDLE_SECONDS
        for event in events:
            self._queue.put(event)

    def _record_archived(self) -> None:
        """Mark what the archive accepted done, in one Redis transaction per batch.

        Until then the events stay leased in the outbox: should this process
        die first, they are posted again and the archive answers 409.
        """
        with self._lock:
            entries, self._archived_entries = self._archived_entries, []
        try:
            self.archived.add(entries, self.outbox)
        except StoreError as e:
            log.error("forward: could not mark %d archived events done: %s", len(entries), e)
            self.lifecycle.record(str(e))
            with self._lock:  # try again on the next round; the leases cover a while
                self._archived_entries[:0] = entries

    def _report(self, seconds: float) -> None:
        with self._lock:
            counts, self.counts = self.counts, Counter()
        try:
            backlog = self.outbox.backlog()
        except StoreError:
            backlog = -1
        log.info(
            "forwarded %d (%d already archived), retried %d, dead-lettered %d in %.0fs; backlog %d",
            counts[Verdict.ARCHIVED] + counts[Verdict.DUPLICATE],
            counts[Verdict.DUPLICATE],
            counts[Verdict.RETRY],
            counts[Verdict.DEAD],
            seconds,
            backlog,
        )

    def _forward(self, event: Event) -> None:
        assert event.seq is not None  # claimed from the outbox: a stored event
        url = self.routes.target(event.event_type)
        try:
            if time.monotonic() < self._paused_until:  # the archive is in trouble: don't queue up on it
                self.outbox.release(event.seq)
                return
            try:
                posted = self.client.post(url, entry_document(event, self.base_url))
            except ArchiveError as e:
                self._retry(event, str(e), None)
                self._count(Verdict.RETRY)
                return
            outcome = classify(posted.status)
            if outcome in (Verdict.ARCHIVED, Verdict.DUPLICATE):
                self._archived(event, posted)
            elif outcome == Verdict.RETRY:
                self._retry(event, f"{url} answered HTTP {posted.status}: {posted.body[:200]}", posted)
            else:
                self._dead(event, url, posted)
            self._count(outcome)
        except StoreError as e:  # the lease ends and the event is posted again (409 if it got there)
            log.error("forward: message_id %s (event_type %s): %s", event.message_id, event.event_type, e)
            self.lifecycle.record(f"{event.message_id}: {e}")
        except Exception as e:  # a bug must not kill the thread; the lease brings the event back
            log.exception("forward: message_id %s (event_type %s) failed", event.message_id, event.event_type)
            self.lifecycle.record(f"{event.message_id}: {e!r}")

    def _archived(self, event: Event, posted: Posted) -> None:
        assert event.seq is not None
        now = datetime.now(UTC)
        entry = Archived(event.seq, event.message_id, event.event_type, posted.status, posted.location, now)
        with self._lock:
            self._archived_entries.append(entry)  # the main thread records them in batches
            self._failures = 0
            self._paused_until = 0.0
        log.debug(
            "forward: message_id %s (event_type %s) archived (HTTP %d) at %s",
            event.message_id,
            event.event_type,
            posted.status,
            posted.location or "(no Location)",
        )

    def _retry(self, event: Event, reason: str, posted: Posted | None) -> None:
        assert event.seq is not None
        attempts = self.outbox.attempts(event.seq)
        delay = backoff(attempts + 1, self.backoff_base, self.backoff_max)
        if posted is not None and posted.retry_after:
            delay = max(delay, min(posted.retry_after, self.backoff_max))
        self.outbox.retry(event.seq, delay)
        self._trouble(reason)
        log.warning(
            "forward: message_id %s (event_type %s) attempt %d failed: %s; next in %.2fs",
            event.message_id,
            event.event_type,
            attempts + 1,
            reason,
            delay,
        )

    def _dead(self, event: Event, url: str, posted: Posted) -> None:
        assert event.seq is not None
        letter = DeadLetter(
            "",
            event.seq,
            event.message_id,
            event.event_type,
            posted.status,
            posted.body,
            url,
            datetime.now(UTC),
        )
        self.dead_letters.add(letter, self.outbox)
        text = (
            f"{url} refused {entry_id(event)} (message_id {event.message_id}) "
            f"with HTTP {posted.status}: {posted.body[:200]}"
        )
        log.error(
            "forward: %s (message_id %s, event_type %s) refused by %s with HTTP %d, dead-lettered: %s",
            entry_id(event),
            event.message_id,
            event.event_type,
            url,
            posted.status,
            posted.body[:200],
        )
        self.lifecycle.record(text)

    def _trouble(self, reason: str) -> None:
        """The archive (or Redis) is in trouble: pause claiming, longer each round, and record it.

        Failures while already paused belong to the same round, so a burst of
        failed requests in flight counts once; the error log gets each round's
        first reason and any different one, not one line per event.
        """
        with self._lock:
            now = time.monotonic()
            new_round = now >= self._paused_until
            if new_round:
                self._failures += 1
                pause = backoff(self._failures, self.backoff_base, self.backoff_max)
                self._paused_until = now + pause
            if not new_round and reason == self._last_reason:
                return
            self._last_reason = reason
        self.lifecycle.record(reason)

    def _count(self, outcome: Verdict) -> None:
        with self._lock:
            self.counts[outcome] += 1
