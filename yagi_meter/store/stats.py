"""Counts read from Redis for /metrics and ``status`` (Store.gauges): the same for every process."""

from __future__ import annotations

from collections.abc import Sequence

import redis
from redis.cluster import RedisCluster

from yagi_meter.store.base import translated
from yagi_meter.store.keys import OUTBOXES, Keys


def gauges(client: redis.Redis, keys: Keys, parts: Sequence[Keys] = ()) -> dict[str, int]:
    """Archive-wide counts in one round trip (events, last seq, backlogs, ...), summed
    over the partitions ``parts`` (default: ``keys`` alone)."""
    parts = parts or [keys]
    pipe = client.pipeline(transaction=False)
    pipe.xlen(keys.quarantine)
    pipe.get(keys.quarantine_count)
    pipe.get(keys.quarantine_repeats)
    pipe.xlen(keys.dead_letters)
    for k in parts:
        pipe.xlen(k.events)
        pipe.get(k.seq)
        pipe.get(k.duplicates)
        pipe.get(k.conflicts)
        for name in OUTBOXES:
            pipe.zcard(k.outbox(name))
    with translated("reading counts"):
        replies = [int(value or 0) for value in pipe.execute()]
    quarantined, quarantined_ever, repeats, dead_letters = replies[:4]
    per_part = ["events", "last_seq", "duplicates", "conflicts"] + [f"{name}_backlog" for name in OUTBOXES]
    totals = dict.fromkeys(per_part, 0)
    for i in range(4, len(replies), len(per_part)):
        for name, value in zip(per_part, replies[i : i + len(per_part)], strict=True):
            totals[name] += value
    totals["duplicates"] += repeats
    return {
        "events": totals["events"],
        "last_seq": totals["last_seq"],
        "quarantined": quarantined,
        "quarantined_ever": quarantined_ever,
        "duplicates": totals["duplicates"],
        "conflicts": totals["conflicts"],
        "dead_letters": dead_letters,
        **{f"{name}_backlog": totals[f"{name}_backlog"] for name in OUTBOXES},
    }


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


def _memory(client: redis.Redis | RedisCluster) -> tuple[int, int, int]:
    """INFO memory's used_memory, used_memory_startup and maxmemory: on a cluster, the
    sum over its masters (the replicas hold copies)."""
    with translated("reading memory figures"):
        if isinstance(client, RedisCluster):
            infos = list(client.info("memory", target_nodes=RedisCluster.PRIMARIES).values())
        else:
            infos = [client.info("memory")]
    used, startup, maxmemory = (
        sum(int(info.get(name, 0)) for info in infos)
        for name in ("used_memory", "used_memory_startup", "maxmemory")
    )
    return used, startup, maxmemory


def sizing(
    client: redis.Redis, keys: Keys, memory_bytes: int = 0, parts: Sequence[Keys] = ()
) -> dict[str, float | int | str | None]:
    """Bytes per event, the current ingest rate and how many days of events the memory holds.

    - ``bytes_per_event``: INFO ``used_memory`` less ``used_memory_startup`` (an
      empty server's), over the events stored (XLEN): everything this Redis
      holds counts (outboxes, hub, quarantine; other prefixes too, on a shared
      Redis), so it is what an event costs all included.  On a cluster, summed
      over its masters, as ``maxmemory`` is.
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
    parts = parts or [keys]
    used, startup, maxmemory = _memory(client)
    pipe = client.pipeline(transaction=False)
    for k in parts:
        pipe.xlen(k.events)
        pipe.get(k.seq)
    with translated("reading memory figures"):
        replies = pipe.execute()
        now = client.time()
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    events = sum(int(n or 0) for n in replies[0::2])
    bytes_per_event = (used - startup) / events if events else None
    rate = None
    if events:
        pipe = client.pipeline(transaction=False)
        lasts = [int(seq or 0) for seq in replies[1::2]]
        window = max(1, RATE_WINDOW_EVENTS // len(parts))
        for k, last_seq in zip(parts, lasts, strict=True):
            pipe.xrange(k.events, f"{max(1, last_seq - window)}-0", "+", count=1)
        with translated("reading recent events"):
            sinces = pipe.execute()
        for since, last_seq in zip(sinces, lasts, strict=True):
            if since:
                seq = int(since[0][0].split(b"-", 1)[0])
                span = (now_ms - int(since[0][1][b"t"])) / 1000
                if span > 0 and last_seq > seq:
                    rate = (rate or 0.0) + (last_seq - seq) / span
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
