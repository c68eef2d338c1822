"""WebSub subscriptions, their pending verifications and their delivery queues.

A subscription request becomes an *intent* (``hub:intent:<id>``, due in
``hub:intents``); a push worker verifies it with the subscriber and only then
stores, renews or removes the subscription.  Fan-out copies each new event's
seq into the queue of every live subscription of its topics; delivery claims
due subscriptions from ``hub:due`` with the same lease script as the
outboxes (claim.lua) and settles each attempt in one script (settle.lua).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from yagi_meter.errors import StoreError
from yagi_meter.store.base import Collection, Pipeline, translated
from yagi_meter.store.outbox import Outbox, member

_RETRIES = 10  # times a script is called again when the state it was given changed meanwhile


class HubMode(StrEnum):
    """What an intent asks the push worker to verify (its value is WebSub's hub.mode)."""

    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    DENIED = "denied"  # not verified: the callback is told it was refused


class Delivered(StrEnum):
    """How one delivery attempt ended, as settle.lua takes it."""

    OK = "ok"  # the subscriber has the entries
    RETRY = "retry"  # failed; the same entries again after a delay
    DROP = "drop"  # failed for good; the entries are given up


def subscription_id(topic_path: str, callback: str) -> str:
    """The id of the subscription of ``callback`` to a topic (WebSub: one per pair)."""
    return hashlib.sha256(f"{topic_path}\n{callback}".encode()).hexdigest()[:32]


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Intent:
    """A (un)subscription request waiting for verification, or a denial to send."""

    mode: HubMode
    topic: str  # as the subscriber gave it: echoed in verification and in rel=self
    topic_path: str  # canonical feed path (topics.py); "" when the topic names no feed
    callback: str
    secret: str = ""
    lease_seconds: int = 0
    reason: str = ""
    nonce: str = field(default_factory=lambda: secrets.token_hex(8))
    client: str = ""  # address of the requester: its pending intents are limited

    @property
    def id(self) -> str:
        return subscription_id(self.topic_path or self.topic, self.callback)

    @property
    def topic_key(self) -> str:
        """What the per-topic limit counts by: the feed, or the text when it names none."""
        return pending_topic(self.mode, self.topic_path or self.topic)


def pending_topic(mode: str, topic: str) -> str:
    """The per-topic limit's bucket: denials all share one, so that requests the
    hub will deny (an unknown topic, no right to read it) cannot use up the
    quota of a topic its readers want to subscribe to."""
    return "(denied)" if mode == HubMode.DENIED else topic


@dataclass(frozen=True)
class Subscription:
    """A verified subscription and the state of its deliveries."""

    id: str
    topic: str
    topic_path: str
    callback: str
    secret: str
    expires_ms: int
    attempts: int = 0  # failed attempts of the batch now at the head of its queue
    first_failure_ms: int | None = None
    failures: int = 0
    dropped: int = 0

    @property
    def expired(self) -> bool:
        return self.expires_ms <= _now_ms()


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


class Subscriptions(Collection):
    """Every read and write of WebSub state; no other module touches the ``hub:`` keys."""

    what = "hub state"

    # -- requests and verification --------------------------------------

    def request(self, intent: Intent, max_per_client: int, max_per_topic: int, max_total: int) -> bool:
        """Queue ``intent`` for the push worker; a newer request for the same
        topic and callback replaces one not yet verified.  False, and nothing
        queued, when its client, its topic or the hub already has its maximum
        of intents waiting for verification."""
        fields = [x for k, v in asdict(intent).items() for x in (k, str(v))]
        intent_key = self.keys.hub_intent(intent.id)
        new_keys = [
            self.keys.hub_pending_client(intent.client),
            self.keys.hub_pending_topic(intent.topic_key),
        ]
        for _ in range(_RETRIES):  # another request for the same id in between: read it again
            with translated("hub state: reading an intent"):
                nonce, client, mode = self.client.hmget(intent_key, "nonce", "client", "mode")
            # The replaced intent has the same id, so the same topic; maybe another
            # client, and another mode (a denial becoming a subscription).
            old_keys = new_keys
            if nonce is not None:
                old_topic = pending_topic((mode or b"").decode(), intent.topic_path or intent.topic)
                old_keys = [
                    self.keys.hub_pending_client((client or b"").decode()),
                    self.keys.hub_pending_topic(old_topic),
                ]
            keys = [intent_key, self.keys.hub_intents, *new_keys, *old_keys]
            old_nonce = (nonce or b"").decode()
            args = [intent.id, _now_ms(), max_per_client, max_per_topic, old_nonce, max_total, *fields]
            queued = self._run("request", keys, args)
            if queued >= 0:
                return bool(queued)
        raise StoreError(f"hub state: intent {intent.id} kept changing while it was being queued")

    def claim_intents(self, count: int, lease_seconds: float) -> list[Intent]:
        """Up to ``count`` due intents, leased to the caller."""
        ids = self._run("claim", [self.keys.hub_intents], [int(lease_seconds * 1000), count])
        intents = []
        for raw_id in ids:
            with translated("hub state: reading an intent"):
                raw = _decode(self.client.hgetall(self.keys.hub_intent(raw_id.decode())))
                if not raw:
                    self.client.zrem(self.keys.hub_intents, raw_id)
            if not raw:
                continue
            raw["lease_seconds"] = int(raw["lease_seconds"])
            raw["mode"] = HubMode(raw["mode"])
            intents.append(Intent(**raw))
        return intents

    def finish_intent(self, intent: Intent) -> None:
        """Forget a handled intent, unless a newer request replaced it meanwhile."""
        key = self.keys.hub_intent(intent.id)

        def finish(pipe: Pipeline) -> None:
            current, client = pipe.hmget(key, "nonce", "client")
            pipe.multi()
            if current is not None and current.decode() != intent.nonce:
                pipe.zadd(self.keys.hub_intents, {intent.id: _now_ms()})
            else:
                pipe.delete(key)
                pipe.zrem(self.keys.hub_intents, intent.id)
                pipe.zrem(self.keys.hub_pending_client((client or b"").decode()), intent.id)
                pipe.zrem(self.keys.hub_pending_topic(intent.topic_key), intent.id)

        with translated("hub state: finishing an intent"):
            self.client.transaction(finish, key)

    def defer_intent(self, intent: Intent, delay_seconds: float) -> None:
        """Make a claimed intent due again in ``delay_seconds`` without handling it."""
        with translated("hub state: deferring an intent"):
            due = _now_ms() + int(delay_seconds * 1000)
            self.client.zadd(self.keys.hub_intents, {intent.id: due}, xx=True)

    def activate(self, intent: Intent, expires_ms: int) -> None:
        """Store or renew a verified subscription until ``expires_ms``."""
        sid = intent.id
        key = self.keys.hub_subscription(sid)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "topic": intent.topic,
                "topic_path": intent.topic_path,
                "callback": intent.callback,
                "secret": intent.secret,
                "expires": str(expires_ms),
            },
        )
        pipe.sadd(self.keys.hub_topic(intent.topic_path), sid)
        pipe.zadd(self.keys.hub_leases, {sid: expires_ms})
        self._execute(pipe)

    def remove(self, subscription_id: str) -> bool:
        """Delete a subscription with its queue; False when there was none."""
        key = self.keys.hub_subscription(subscription_id)
        with translated("hub state: reading a subscription"):
            topic_path = self.client.hget(key, "topic_path")
        pipe = self.client.pipeline(transaction=True)
        if topic_path is not None:
            pipe.srem(self.keys.hub_topic(topic_path.decode()), subscription_id)
        pipe.delete(key, self.keys.hub_queue(subscription_id))
        pipe.zrem(self.keys.hub_leases, subscription_id)
        pipe.zrem(self.keys.hub_due, subscription_id)
        self._execute(pipe)
        return topic_path is not None

    def expire(self, limit: int = 1000) -> int:
        """Remove subscriptions whose lease has ended; return how many."""
        with translated("hub state: reading leases"):
            ids = self.client.zrangebyscore(self.keys.hub_leases, "-inf", _now_ms(), 0, limit)
        for raw_id in ids:
            self.remove(raw_id.decode())
        return len(ids)

    # -- reading ----------------------------------------------------------

    def get(self, subscription_id: str) -> Subscription | None:
        with translated("hub state: reading a subscription"):
            raw = self.client.hgetall(self.keys.hub_subscription(subscription_id))
        return self._subscription(subscription_id, raw)

    def with_pending(self, subscription_id: str, count: int) -> tuple[Subscription | None, list[int]]:
        """A subscription and its oldest ``count`` waiting seqs, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.hub_subscription(subscription_id))
        pipe.zrange(self.keys.hub_queue(subscription_id), 0, count - 1)
        raw, seqs = self._execute(pipe)
        return self._subscription(subscription_id, raw), [int(s) for s in seqs]

    def _subscription(self, subscription_id: str, raw: dict[bytes, bytes]) -> Subscription | None:
        raw = _decode(raw)
        if "callback" not in raw:
            return None
        first = raw.get("first_failure")
        return Subscription(
            id=subscription_id,
            topic=raw["topic"],
            topic_path=raw["topic_path"],
            callback=raw["callback"],
            secret=raw.get("secret", ""),
            expires_ms=int(raw["expires"]),
            attempts=int(raw.get("attempts", 0)),
            first_failure_ms=int(first) if first else None,
            failures=int(raw.get("failures", 0)),
            dropped=int(raw.get("dropped", 0)),
        )

    def ids(self) -> list[str]:
        """Every subscription id, live or not yet swept."""
        with translated("hub state: reading leases"):
            return [i.decode() for i in self.client.zrange(self.keys.hub_leases, 0, -1)]

    def of_topic(self, topic_path: str) -> list[str]:
        with translated("hub state: reading a topic"):
            return sorted(i.decode() for i in self.client.smembers(self.keys.hub_topic(topic_path)))

    def standing(self) -> list[dict[str, Any]]:
        """Every subscription's id, topic, callback, queued entries, failures and lease end
        (``expires_ms``), in one round trip."""
        ids = self.ids()
        pipe = self.client.pipeline(transaction=False)
        for subscription_id in ids:
            pipe.zcard(self.keys.hub_queue(subscription_id))
            pipe.hmget(
                self.keys.hub_subscription(subscription_id),
                "topic",
                "callback",
                "attempts",
                "failures",
                "dropped",
                "expires",
            )
        replies = self._execute(pipe)
        rows = []
        for i, subscription_id in enumerate(ids):
            backlog, (topic, callback, attempts, failed, lost, expires) = replies[2 * i], replies[2 * i + 1]
            if callback is None:  # removed since ids() was read
                continue
            rows.append(
                {
                    "id": subscription_id,
                    "topic": topic.decode(),
                    "callback": callback.decode(),
                    "backlog": backlog,
                    "attempts": int(attempts or 0),
                    "failures": int(failed or 0),
                    "dropped": int(lost or 0),
                    "expires_ms": int(expires or 0),
                }
            )
        return rows

    def backlog(self, subscription_id: str) -> int:
        """Entries waiting for delivery to one subscription."""
        with translated("hub state: reading a queue"):
            return self.client.zcard(self.keys.hub_queue(subscription_id))

    # -- fan-out and delivery ----------------------------------------------

    def fan_out(self, outbox: Outbox, entries: Sequence[tuple[int, Iterable[str]]]) -> int:
        """Queue each (seq, topic paths) for every live subscription of those topics and
        mark the outbox entries done, atomically with one partition (else right
        after: fanout.lua); return the queue entries added.

        The topics' subscribers are read first, so that fanout.lua is given every
        queue key it writes; it writes nothing when they changed meanwhile, and
        they are read again.
        """
        entries = [(seq, list(paths)) for seq, paths in entries]
        if not outbox.single:
            # Another slot: fanout.lua cannot look.  Entries another worker fanned out
            # already (its claim had lapsed) are left out here instead; one it fans out
            # between this look and the script may reach a subscriber twice.
            pending = outbox.pending(seq for seq, _ in entries)
            entries = [(seq, paths) for seq, paths in entries if seq in pending]
            if not entries:
                return 0
        topics = list(dict.fromkeys(path for _, paths in entries for path in paths))
        position = {path: i + 1 for i, path in enumerate(topics)}
        for _ in range(_RETRIES):
            pipe = self.client.pipeline(transaction=False)
            for path in topics:
                pipe.smembers(self.keys.hub_topic(path))
            subscribers = [sorted(i.decode() for i in ids) for ids in self._execute(pipe)]
            keys = [self.keys.hub_leases, self.keys.hub_due]
            args: list[str | int] = [len(topics), "1" if outbox.single else "0"]
            for path, ids in zip(topics, subscribers, strict=True):
                keys += [self.keys.hub_topic(path), *(self.keys.hub_queue(i) for i in ids)]
                args += [len(ids), *ids]
            if outbox.single:  # the outbox is in the hub's slot: done in the same step
                o = outbox.outbox_keys
                keys += [o.due, o.seqs, o.attempts]
            for seq, paths in entries:
                args += [member(seq), seq, len(paths), *(position[path] for path in paths)]
            added = int(self._run("fanout", keys, args))
            if added >= 0:
                if not outbox.single:
                    outbox.done(*(seq for seq, _ in entries))
                return added
        raise StoreError("hub state: subscriptions kept changing while entries were being fanned out")

    def claim_due(self, count: int, lease_seconds: float) -> list[str]:
        """Up to ``count`` subscriptions due for delivery, leased to the caller."""
        ids = self._run("claim", [self.keys.hub_due], [int(lease_seconds * 1000), count])
        return [i.decode() for i in ids]

    def pending(self, subscription_id: str, count: int) -> list[int]:
        """The oldest ``count`` seqs waiting for one subscription."""
        with translated("hub state: reading a queue"):
            seqs = self.client.zrange(self.keys.hub_queue(subscription_id), 0, count - 1)
        return [int(s) for s in seqs]

    def settle(
        self, subscription_id: str, outcome: Delivered, seqs: Sequence[int], delay_seconds: float = 0
    ) -> None:
        """Record a delivery attempt: OK or DROP take ``seqs`` off the queue, RETRY
        makes the subscription due again in ``delay_seconds``."""
        k = self.keys
        keys = [
            k.hub_subscription(subscription_id),
            k.hub_queue(subscription_id),
            k.hub_due,
            k.hub_failures,
            k.hub_dropped,
        ]
        args = [subscription_id, outcome, int(delay_seconds * 1000), *seqs]
        self._run("settle", keys, args)
