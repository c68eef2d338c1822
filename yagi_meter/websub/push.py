"""``yagi-meter push``: verify subscriptions and deliver new events to WebSub subscribers.

The loop is plain: fan the push outbox out into per-subscription queues (or,
with ``[hub] external_url``, ping that hub for every updated topic), hand due
verifications and deliveries to a thread pool, sweep expired leases, sleep a
poll interval when there was nothing to do.  All state is in Redis and every
piece of work is claimed under a lease, so several workers can run at once
and a worker that dies loses nothing.  SIGTERM finishes the requests in
flight, settles them and returns.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlsplit

from yagi_meter.config import Config
from yagi_meter.daemon import Backoff, Lifecycle, backoff
from yagi_meter.errors import StoreError
from yagi_meter.store import Store
from yagi_meter.store.subscriptions import Delivered, HubMode, Intent, Subscription
from yagi_meter.websub.callbacks import Peers
from yagi_meter.websub.delivery import EntryCache, delivery_document, signature
from yagi_meter.websub.topics import TopicKind, parse_topic, topics_of

log = logging.getLogger(__name__)

FAN_OUT_BATCH = 500
OUTBOX_LEASE_SECONDS = 30
EXPIRE_EVERY_SECONDS = 5
# An intent whose callback host already has its verifications in flight waits this long.
HOST_BUSY_DELAY_SECONDS = 1.0
GONE = 410  # WebSub 7: the subscriber deleted the subscription


def callback_host(callback: str) -> str:
    """The host a callback's verification goes to (what the per-host limit counts)."""
    try:
        return (urlsplit(callback).hostname or "").lower()
    except ValueError:
        return callback


def clipped(url: str, limit: int = 200) -> str:
    """``url`` cut for a log line: callbacks may be 2 KB."""
    return url if len(url) <= limit else url[:limit] + "..."


def hub_url(config: Config) -> str:
    """The hub advertised in feeds and deliveries: external, or our own ``/hub``."""
    return config.hub.external_url or f"{config.base_url}/hub"


class PushWorker:
    """Runs until ``stop()`` or SIGTERM; ``step()`` does one pass (tests)."""

    def __init__(self, config: Config, store: Store, peers: Peers | None = None) -> None:
        self.config = config
        self.hub = config.hub
        self.store = store
        self.outbox = store.outbox("push")
        self.subscriptions = store.subscriptions
        self.entries = EntryCache(store, config.base_url)
        self.peers = peers or Peers(
            self.hub.allowed_callback_networks,
            self.hub.timeout_seconds,
            self.hub.delivery_threads,
            verify_timeout=self.hub.verify_timeout_seconds,
        )
        self.hub_url = hub_url(config)
        # A claimed delivery must outlive its request's timeouts (connect + read).
        self.lease_seconds = max(30.0, 3 * self.hub.timeout_seconds)
        self._pool = ThreadPoolExecutor(self.hub.delivery_threads, thread_name_prefix="push")
        # Verifications have their own threads: however many requests wait for
        # verification, and however slow their callbacks, deliveries go on.
        self._verify_pool = ThreadPoolExecutor(self.hub.verify_threads, thread_name_prefix="verify")
        self._in_flight = 0
        self._verifying: Counter[str] = Counter()  # callback host -> verifications in flight
        self._more_intents = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.lifecycle = Lifecycle("push", store.errors)
        self._next_expiry = 0.0
        self._next_poll = 0.0
        self._more_events = False
        self._claim_group = max(1, self.hub.delivery_threads // 4)

    def stop(self) -> None:
        """Finish the requests in flight and return from ``run`` (from another thread).

        SIGTERM sets only the lifecycle's flag (daemon.py says why); the main
        loop's waits are short enough to notice it.
        """
        self.lifecycle.stop()
        self._wake.set()

    def run(self) -> None:
        log.info(
            "pushing %s; %d delivery and %d verification threads, batch %d",
            f"pings to {self.hub.external_url}" if self.hub.external_url else "to subscribers",
            self.hub.delivery_threads,
            self.hub.verify_threads,
            self.hub.batch_size,
        )
        poll = self.hub.poll_interval_ms / 1000
        retry = Backoff(poll, self.config.amqp.reconnect_max_seconds)
        while not self.lifecycle.stopping:
            try:
                busy = self.step()
                retry.reset()
            except StoreError as e:
                delay = retry.next()
                log.error("Redis unavailable (%s); retrying in %.1fs", e, delay)
                busy = False
                self._pause(delay)
            if not busy and not self.lifecycle.stopping:
                self._wake.wait(poll)
            self._wake.clear()
        self.close()
        log.info("stopped")

    def _pause(self, seconds: float) -> None:
        """Wait up to ``seconds``, waking on new work, in steps short enough to see a stop."""
        deadline = time.monotonic() + seconds
        while not self.lifecycle.stopping and time.monotonic() < deadline:
            if self._wake.wait(min(0.1, deadline - time.monotonic())):
                return

    def close(self) -> None:
        """Wait for the requests in flight; they settle their outcome in Redis."""
        self._pool.shutdown(wait=True)
        self._verify_pool.shutdown(wait=True)

    def step(self) -> bool:
        """One pass; True when it found work, so the loop goes on without sleeping.

        New events and verifications are looked for once a poll interval (or
        at once while there are more); due deliveries whenever threads free up.
        """
        busy = False
        if self._more_events or self._more_intents or time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.hub.poll_interval_ms / 1000
            self._more_events = self._announce_to_external_hub() if self.hub.external_url else self._fan_out()
            self._more_intents = self._dispatch_intents()
            busy = self._more_events or self._more_intents
        busy = self._dispatch_deliveries() or busy
        if time.monotonic() >= self._next_expiry:
            self._next_expiry = time.monotonic() + EXPIRE_EVERY_SECONDS
            expired = self.subscriptions.expire()
            if expired:
                log.info("removed %d subscriptions whose lease ended", expired)
        return busy

    # -- fan-out -----------------------------------------------------------

    def _fan_out(self) -> bool:
        seqs = self.outbox.claim(FAN_OUT_BATCH, OUTBOX_LEASE_SECONDS)
        if not seqs:
            return False
        events = {e.seq: e for e in self.store.events.get_many(seqs)}
        # An event gone (retention) has nothing to deliver: no topics, just done.
        entries = [(seq, [t.path() for t in topics_of(events[seq])] if seq in events else []) for seq in seqs]
        added = self.subscriptions.fan_out(self.outbox, entries)
        log.debug("fanned out %d events into %d deliveries", len(seqs), added)
        return True

    def _announce_to_external_hub(self) -> bool:
        seqs = self.outbox.claim(FAN_OUT_BATCH, OUTBOX_LEASE_SECONDS)
        if not seqs:
            return False
        topics = sorted(
            {t.url(self.config.base_url) for e in self.store.events.get_many(seqs) for t in topics_of(e)}
        )
        replies = list(
            self._pool.map(lambda topic: self.peers.announce_update(self.hub.external_url, topic), topics)
        )
        failed = [(topic, r) for topic, r in zip(topics, replies, strict=True) if not r.ok]
        if not failed:
            self.outbox.done(*seqs)
            return True
        # Pings are idempotent: retry the whole batch, topics that succeeded included.
        attempts = self.outbox.attempts(seqs[0]) + 1
        delay = backoff(attempts, self.hub.retry_min_seconds, self.hub.retry_max_seconds)
        for seq in seqs:
            self.outbox.retry(seq, delay)
        text = f"ping of {len(failed)} topics to {self.hub.external_url} failed ({failed[0][1].detail})"
        log.error("%s; retry %d in %.1fs", text, attempts, delay)
        self.lifecycle.record(text)
        return True

    # -- verification and delivery in the pool ------------------------------

    def _free_threads(self) -> int:
        with self._lock:
            return self.hub.delivery_threads - self._in_flight

    def _submit(self, task: Callable[[str], None], subscription_id: str) -> None:
        with self._lock:
            self._in_flight += 1
        future = self._pool.submit(task, subscription_id)
        future.add_done_callback(self._finished)

    def _finished(self, future: Future[None]) -> None:
        with self._lock:
            self._in_flight -= 1
        self._settled(future)

    def _settled(self, future: Future[None]) -> None:
        if future.exception() is not None:
            # The claim's lease runs out and another pass takes the work again.
            log.error("push task failed: %r", future.exception(), exc_info=future.exception())
        self._wake.set()

    def _dispatch_intents(self) -> bool:
        """Claim due intents for the free verification threads; an intent whose
        callback host already has ``verify_per_host`` verifications in flight
        waits a second (one slow host holds at most that many threads)."""
        with self._lock:
            free = self.hub.verify_threads - sum(self._verifying.values())
        if self.lifecycle.stopping or free <= 0:
            return False
        intents = self.subscriptions.claim_intents(free, self.lease_seconds)
        for intent in intents:
            host = callback_host(intent.callback)
            with self._lock:
                busy = self._verifying[host] >= self.hub.verify_per_host
                if not busy:
                    self._verifying[host] += 1
            if busy:
                self.subscriptions.defer_intent(intent, HOST_BUSY_DELAY_SECONDS)
                continue
            future = self._verify_pool.submit(self._verify, intent)
            future.add_done_callback(functools.partial(self._verified, host=host))
        return bool(intents)

    def _verified(self, future: Future[None], host: str) -> None:
        with self._lock:
            self._verifying[host] -= 1
            if self._verifying[host] <= 0:
                del self._verifying[host]
        self._settled(future)

    def _dispatch_deliveries(self) -> bool:
        free = self._free_threads()
        # Claim in groups rather than one per finished request: fewer round trips.
        if (
            self.lifecycle.stopping
            or self.hub.external_url
            or free < min(self._claim_group, self.hub.delivery_threads)
        ):
            return False
        ids = self.subscriptions.claim_due(free, self.lease_seconds)
        for subscription_id in ids:
            self._submit(self._deliver, subscription_id)
        return bool(ids)

    def _verify(self, intent: Intent) -> None:
        if intent.mode == HubMode.DENIED:
            reply = self.peers.deny(intent.callback, intent.topic, intent.reason)
            log.info(
                "denied %s for %s: %s (%s)",
                clipped(intent.callback),
                clipped(intent.topic),
                intent.reason,
                reply.detail,
            )
        else:
            self._verify_intent(intent)
        self.subscriptions.finish_intent(intent)

    def _verify_intent(self, intent: Intent) -> None:
        lease = intent.lease_seconds if intent.mode == HubMode.SUBSCRIBE else None
        # The lease counts from the verification request (WebSub 5.3).
        started_ms = int(time.time() * 1000)
        reply = self.peers.verify(
            intent.callback, intent.mode, intent.topic, secrets.token_urlsafe(24), lease
        )
        if not reply.ok:
            log.warning(
                "%s of %s to %s not verified: %s",
                intent.mode,
                clipped(intent.callback),
                clipped(intent.topic),
                reply.detail,
            )
            return
        if intent.mode == HubMode.SUBSCRIBE:
            self.subscriptions.activate(intent, started_ms + intent.lease_seconds * 1000)
            log.info("subscribed %s to %s for %ds", intent.callback, intent.topic, intent.lease_seconds)
        elif intent.mode == HubMode.UNSUBSCRIBE:
            self.subscriptions.remove(intent.id)
            log.info("unsubscribed %s from %s", intent.callback, intent.topic)

    def _deliver(self, subscription_id: str) -> None:
        subscription, seqs = self.subscriptions.with_pending(subscription_id, self.hub.batch_size)
        if subscription is None or subscription.expired:
            self.subscriptions.remove(subscription_id)
            return
        entries = self.entries.get_many(seqs)
        if not entries:  # nothing queued, or only events retention removed
            self.subscriptions.settle(subscription_id, Delivered.OK, seqs)
            return
        body = delivery_document(
            entries,
            self.config.base_url + subscription.topic_path,
            self._topic_url(subscription),
            self._title(subscription),
            self.hub_url,
        )
        reply = self.peers.deliver(subscription.callback, body, self._headers(subscription, body))
        if reply.ok:
            self.subscriptions.settle(subscription_id, Delivered.OK, seqs)
            log.debug("delivered %d entries to %s", len(entries), subscription.callback)
        elif reply.status == GONE:
            self.subscriptions.remove(subscription_id)
            log.info(
                "%s answered 410 Gone; subscription to %s removed", subscription.callback, subscription.topic
            )
        else:
            self._failed(subscription, seqs, reply.detail)

    def _failed(self, subscription: Subscription, seqs: list[int], detail: str) -> None:
        attempts = subscription.attempts + 1
        first = subscription.first_failure_ms or int(time.time() * 1000)
        too_old = time.time() - first / 1000 > self.hub.max_delivery_age_seconds
        if attempts >= self.hub.max_delivery_attempts or too_old:
            self.subscriptions.settle(subscription.id, Delivered.DROP, seqs)
            text = (
                f"dropped {len(seqs)} entries (seq {seqs[0]}..{seqs[-1]}) for {subscription.callback} "
                f"({subscription.topic}) after {attempts} attempts: {detail}"
            )
            log.error("%s", text)
            self.lifecycle.record(text)
            return
        delay = backoff(attempts, self.hub.retry_min_seconds, self.hub.retry_max_seconds)
        self.subscriptions.settle(subscription.id, Delivered.RETRY, seqs, delay)
        log.warning(
            "delivery of %d entries to %s failed (%s); retry %d in %.1fs",
            len(seqs),
            subscription.callback,
            detail,
            attempts,
            delay,
        )

    def _headers(self, subscription: Subscription, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/atom+xml",
            "Link": f'<{self.hub_url}>; rel="hub", <{self._topic_url(subscription)}>; rel="self"',
        }
        if subscription.secret:
            headers["X-Hub-Signature"] = signature(self.hub.signature_algorithm, subscription.secret, body)
        return headers

    def _topic_url(self, subscription: Subscription) -> str:
        """The topic URL as subscribed (WebSub 7: rel=self): the feed's own rel=self, or any
        other spelling of the feed, comes back exactly as the subscriber knows it."""
        return subscription.topic or self.config.base_url + subscription.topic_path

    def _title(self, subscription: Subscription) -> str:
        try:
            topic = parse_topic(self.config.base_url + subscription.topic_path, self.config.base_url)
        except ValueError:
            return "yagi-meter events"
        return {
            TopicKind.ALL: "All events",
            TopicKind.TENANT: f"Events of tenant {topic.tenant_id}",
            TopicKind.RESOURCE: f"Events of resource {topic.resource_id} (tenant {topic.tenant_id})",
            TopicKind.EVENT_TYPE: f"{topic.event_type} events",
        }[topic.kind]
