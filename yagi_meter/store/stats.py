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


# Recent events the ingest rate is measured over (fewer when fewer are stored).
RATE_WINDOW_EVENTS = 10_000


def sizing(client: redis.Redis, keys: Keys, memory_bytes: int = 0) -> dict[str, float | int | str | None]:
    """Bytes per event, the current ingest rate and how many days of events the memory holds.

    - ``bytes_per_event``: INFO ``used_memory`` less ``used_memory_startup`` (an
      empty server's), over the events stored (XLEN): everything this Redis
      holds counts (outboxes, hub, quarantine; other prefixes too, on a shared
      Redis), so it is what an event costs all included.
    - ``ingest_rate``: events per second since a recent event: the seqs given out
      after the event ``RATE_WINDOW_EVENTS`` seqs before the newest (or the
      oldest stored), over the time from its ingest to now (Redis's clock), so
      it falls when ingest stops.
    - ``memory_bytes``: Redis's ``maxmemory``, else ``[redis] memory_bytes``
      (``memory_source`` says which; None when neither is set).
    - ``memory_days``: days of events that memory holds at this rate and size
      (compare with ``[redis] retention_days``); ``days_until_full``: days until
      it is full at this rate if nothing were removed.
    """
    pipe = client.pipeline(transaction=False)
    pipe.info("memory")
    pipe.xlen(keys.events)
    pipe.get(keys.seq)
    pipe.time()
    with translated("reading memory figures"):
        info, events, last_seq, now = pipe.execute()
    last_seq = int(last_seq or 0)
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    used = int(info["used_memory"])
    startup = int(info.get("used_memory_startup", 0))
    maxmemory = int(info.get("maxmemory", 0))
    bytes_per_event = (used - startup) / events if events else None
    rate = None
    if events:
        with translated("reading recent events"):
            since = client.xrange(keys.events, f"{max(1, last_seq - RATE_WINDOW_EVENTS)}-0", "+", count=1)
        if since:
            seq = int(since[0][0].split(b"-", 1)[0])
            span = (now_ms - int(since[0][1][b"t"])) / 1000
            if span > 0 and last_seq > seq:
                rate = (last_seq - seq) / span
    capacity, source = (maxmemory, "maxmemory") if maxmemory else (memory_bytes, "[redis] memory_bytes")
    if not capacity:
        capacity, source = 0, ""
    per_day = bytes_per_event * rate * 86400 if bytes_per_event and rate else None
    return {
        "used_memory": used,
        "bytes_per_event": round(bytes_per_event, 1) if bytes_per_event is not None else None,
        "ingest_rate": round(rate, 3) if rate is not None else None,
        "memory_bytes": capacity or None,
        "memory_source": source or None,
        "memory_days": capacity / per_day if capacity and per_day else None,
        "days_until_full": max(0, capacity - used) / per_day if capacity and per_day else None,
    }
