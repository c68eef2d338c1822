"""Counts read from Redis for /metrics and ``status`` (Store.gauges): the same for every process."""

from __future__ import annotations

import redis

from yagi_meter.store.base import translated
from yagi_meter.store.keys import OUTBOXES, Keys


def gauges(client: redis.Redis, keys: Keys) -> dict[str, int]:
    """Archive-wide counts in one round trip (events, last seq, backlogs, ...)."""
    pipe = client.pipeline(transaction=False)
    pipe.xlen(keys.events)
    pipe.get(keys.seq)
    pipe.xlen(keys.quarantine)
    pipe.get(keys.quarantine_count)
    pipe.get(keys.duplicates)
    pipe.get(keys.conflicts)
    pipe.xlen(keys.dead_letters)
    for name in OUTBOXES:
        pipe.zcard(keys.outbox(name))
    with translated("reading counts"):
        replies = pipe.execute()
    values = [int(value or 0) for value in replies]
    names = [
        "events",
        "last_seq",
        "quarantined",
        "quarantined_ever",
        "duplicates",
        "conflicts",
        "dead_letters",
    ] + [f"{name}_backlog" for name in OUTBOXES]
    return dict(zip(names, values, strict=True))


def hub_counts(client: redis.Redis, keys: Keys) -> dict[str, int]:
    """WebSub counts in one round trip: subscriptions, verifications waiting, failures, drops."""
    pipe = client.pipeline(transaction=False)
    pipe.zcard(keys.hub_leases)
    pipe.zcard(keys.hub_intents)
    pipe.zcard(keys.hub_due)
    pipe.get(keys.hub_failures)
    pipe.get(keys.hub_dropped)
    with translated("reading hub counts"):
        replies = pipe.execute()
    names = ["subscriptions", "pending_verifications", "subscribers_due", "failed_deliveries", "dropped"]
    return dict(zip(names, (int(v or 0) for v in replies), strict=True))
