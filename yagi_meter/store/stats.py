"""Counts read from Redis for /metrics and /health: the same for every process."""

from __future__ import annotations

import time

import redis

from yagi_meter.errors import StoreError
from yagi_meter.store.keys import OUTBOXES, Keys


def ping(client: redis.Redis) -> float:
    """Round-trip time to Redis in seconds; raises StoreError when unreachable."""
    started = time.perf_counter()
    try:
        client.ping()
    except redis.RedisError as e:
        raise StoreError(f"Redis unreachable: {e}") from None
    return time.perf_counter() - started


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
    try:
        replies = pipe.execute()
    except redis.RedisError as e:
        raise StoreError(f"reading counts failed: {e}") from None
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
    try:
        replies = pipe.execute()
    except redis.RedisError as e:
        raise StoreError(f"reading hub counts failed: {e}") from None
    names = ["subscriptions", "pending_verifications", "subscribers_due", "failed_deliveries", "dropped"]
    return dict(zip(names, (int(v or 0) for v in replies), strict=True))
