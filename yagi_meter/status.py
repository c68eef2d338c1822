"""What ``yagi-meter status`` reports: counts, queue depths, backlogs, last errors."""

from __future__ import annotations

import time
from typing import Any

import redis

from yagi_meter.amqp import queue_depths
from yagi_meter.config import Config
from yagi_meter.errors import ConnectionClosed, StoreError
from yagi_meter.store import Store
from yagi_meter.store.subscriptions import Subscriptions


def collect(store: Store, config: Config) -> dict[str, Any]:
    """One JSON-ready report; raises StoreError when Redis cannot be read."""
    k = store.keys
    try:
        pipe = store.client.pipeline(transaction=False)
        pipe.xlen(k.events)
        pipe.xlen(k.quarantine)
        pipe.zcard(k.outbox("push"))
        pipe.zcard(k.outbox("forward"))
        pipe.xlen(k.dead_letters)
        pipe.get(k.duplicates)
        pipe.get(k.conflicts)
        pipe.get(k.seq)
        pipe.get(k.quarantine_count)
        events, quarantined, push, forward, dead, dups, conflicts, seq, ever = pipe.execute()
        hub = hub_report(store)
        forward_oldest = _oldest_pending_seconds(store, "forward")
        errors = store.errors.recent(10)
        recent_quarantine = store.quarantine.list(count=5, after="-") if quarantined else []
    except redis.RedisError as e:
        raise StoreError(f"reading status failed: {e}") from None
    try:
        queues: dict[str, Any] = queue_depths(config)
    except ConnectionClosed as e:
        queues = {"error": str(e)}
    return {
        "events": events,
        "quarantined": quarantined,
        "quarantined_ever": int(ever or 0),
        "push_backlog": push,
        "forward_backlog": forward,
        "forward_oldest_pending_seconds": forward_oldest,
        "dead_letters": dead,
        "duplicates": int(dups or 0),
        "conflicts": int(conflicts or 0),
        "last_seq": int(seq or 0),
        **hub,
        "queues": queues,
        "last_errors": [{"at": e.at.isoformat(), "component": e.component, "text": e.text} for e in errors],
        "oldest_quarantined": [
            {"id": q.id, "at": q.at.isoformat(), "reason": q.reason} for q in recent_quarantine
        ],
    }


def _oldest_pending_seconds(store: Store, outbox: str) -> float | None:
    """How long ago the oldest event still waiting in ``outbox`` was ingested; None when empty."""
    first = store.client.zrange(store.keys.outbox_seqs(outbox), 0, 0)
    if not first:
        return None
    seq = int(first[0])
    entry = store.client.xrange(store.keys.events, f"{seq}-0", f"{seq}-0")
    if not entry:
        return None
    return round(max(0.0, time.time() - int(entry[0][1][b"t"]) / 1000), 3)


def _age(seconds: float | None) -> str:
    return "" if seconds is None else f" (oldest pending {seconds:.0f}s)"


def render(report: dict[str, Any]) -> str:
    """The report as a few human-readable lines."""
    lines = [
        f"events            {report['events']} (last seq {report['last_seq']})",
        f"duplicates        {report['duplicates']} ignored, {report['conflicts']} conflicting",
        f"quarantined       {report['quarantined']} (ever {report['quarantined_ever']})",
        f"push backlog      {report['push_backlog']}",
        f"subscriptions     {report['push_subscriptions']} "
        f"({report['push_pending_verifications']} awaiting verification)",
        f"delivery backlog  {report['push_delivery_backlog']} entries for "
        f"{report['push_subscribers_behind']} subscribers",
        f"push failures     {report['push_failed_deliveries']} failed attempts, "
        f"{report['push_dropped']} entries dropped",
        f"forward backlog   {report['forward_backlog']}{_age(report['forward_oldest_pending_seconds'])}",
        f"dead letters      {report['dead_letters']}",
    ]
    queues = report["queues"]
    if "error" in queues:
        lines.append(f"queues            RabbitMQ unreachable: {queues['error']}")
    for name, depth in sorted(q for q in queues.items() if q[0] != "error"):
        lines.append(f"queue {name:<24} {depth['messages']} waiting, {depth['consumers']} consumers")
    for sub in report["push_lagging"]:
        lines.append(
            f"subscriber {sub['callback']} ({sub['topic']}): {sub['backlog']} waiting, "
            f"{sub['attempts']} failed attempts now, {sub['failures']} ever, {sub['dropped']} dropped"
        )
    for item in report["oldest_quarantined"]:
        lines.append(f"quarantine {item['id']} {item['at']} {item['reason']}")
    for error in report["last_errors"]:
        lines.append(f"error {error['at']} {error['component']}: {error['text']}")
    return "\n".join(lines)


def hub_report(store: Store, listed: int = 10) -> dict[str, Any]:
    """WebSub state: subscriptions, per-subscriber backlog and failures, the worst ``listed``."""
    k = store.keys
    subscriptions = Subscriptions(store.client, store.keys)
    ids = subscriptions.ids()
    pipe = store.client.pipeline(transaction=False)
    for subscription_id in ids:
        pipe.zcard(k.hub_queue(subscription_id))
        pipe.hmget(
            k.hub_subscription(subscription_id), "topic", "callback", "attempts", "failures", "dropped"
        )
    pipe.zcard(k.hub_intents)
    pipe.get(k.hub_failures)
    pipe.get(k.hub_dropped)
    replies = pipe.execute()
    intents, failures, dropped = replies[-3:]
    rows = []
    for i, subscription_id in enumerate(ids):
        backlog, (topic, callback, attempts, failed, lost) = replies[2 * i], replies[2 * i + 1]
        if callback is None:
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
            }
        )
    behind = [r for r in rows if r["backlog"] or r["attempts"]]
    behind.sort(key=lambda r: (r["attempts"], r["backlog"]), reverse=True)
    return {
        "push_subscriptions": len(rows),
        "push_pending_verifications": intents,
        "push_delivery_backlog": sum(r["backlog"] for r in rows),
        "push_subscribers_behind": len(behind),
        "push_failed_deliveries": int(failures or 0),
        "push_dropped": int(dropped or 0),
        "push_lagging": behind[:listed],
    }
