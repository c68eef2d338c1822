"""What ``yagi-meter status`` reports: counts, queue depths, backlogs, last errors."""

from __future__ import annotations

import time
from typing import Any

from yagi_meter.audit.report import audit_report
from yagi_meter.config import Config
from yagi_meter.errors import BrokerError
from yagi_meter.ingest.amqp import queue_depths
from yagi_meter.store import Store


def collect(store: Store, config: Config) -> dict[str, Any]:
    """One JSON-ready report; raises StoreError when Redis cannot be read."""
    counts = store.gauges()
    sizing = store.sizing(config.redis.memory_bytes)
    hub = hub_report(store)
    forward_oldest = _oldest_pending_seconds(store, "forward")
    errors = store.errors.recent(10)
    recent_quarantine = store.quarantine.list(count=5) if counts["quarantined"] else []
    try:
        queues: dict[str, Any] = queue_depths(config)
    except BrokerError as e:  # unreachable, or refusing our credentials: report the rest anyway
        queues = {"error": str(e)}
    return {
        **counts,
        **sizing,
        "retention_days": config.redis.retention_days,
        "forward_oldest_pending_seconds": forward_oldest,
        **hub,
        "queues": queues,
        "last_errors": [{"at": e.at.isoformat(), "component": e.component, "text": e.text} for e in errors],
        "oldest_quarantined": [
            {"id": q.id, "at": q.at.isoformat(), "reason": q.reason} for q in recent_quarantine
        ],
        "audit": audit_report(store, config.audit.keep_periods),
    }


def _oldest_pending_seconds(store: Store, outbox: str) -> float | None:
    """How long ago the oldest event still waiting in ``outbox`` was ingested; None when empty."""
    seq = store.outbox(outbox).oldest()
    events = store.events.get_many([seq]) if seq is not None else []
    if not events or events[0].ingested_at is None:
        return None
    return round(max(0.0, time.time() - events[0].ingested_at.timestamp()), 3)


def _age(seconds: float | None) -> str:
    return "" if seconds is None else f" (oldest pending {seconds:.0f}s)"


def _sizing(report: dict[str, Any]) -> list[str]:
    per_event, rate = report["bytes_per_event"], report["ingest_rate"]
    memory = f"memory            {report['used_memory'] / 1e6:,.1f} MB used"
    if report["memory_bytes"]:
        memory += f" of {report['memory_bytes'] / 1e6:,.1f} MB ({report['memory_source']})"
    else:
        memory += " (no maxmemory nor [redis] memory_bytes: no days to tell)"
    lines = [memory]
    lines.append(
        "per event         "
        + (f"{per_event:,.0f} bytes (used_memory over events)" if per_event is not None else "no events yet")
        + (f", ingest {rate:,.1f} events/s now" if rate is not None else ", no ingest rate yet")
    )
    if report["memory_days"] is not None:
        lines.append(
            f"memory holds      {report['memory_days']:,.1f} days at this rate "
            f"(retention_days {report['retention_days']:g}); full in {report['days_until_full']:,.1f} days "
            "if nothing were removed"
        )
    return lines


def render(report: dict[str, Any]) -> str:
    """The report as a few human-readable lines."""
    lines = [
        f"events            {report['events']} (last seq {report['last_seq']})",
        *_sizing(report),
        f"duplicates        {report['duplicates']} ignored, {report['conflicts']} conflicting bodies kept",
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
        lines.append(f"queues            could not be read: {queues['error']}")
    for name, depth in sorted(q for q in queues.items() if q[0] != "error"):
        lines.append(f"queue {name:<24} {depth['messages']} waiting, {depth['consumers']} consumers")
    for sub in report["push_lagging"]:
        lines.append(
            f"subscriber {sub['callback']} ({sub['topic']}): {sub['backlog']} waiting, "
            f"{sub['attempts']} failed attempts now, {sub['failures']} ever, {sub['dropped']} dropped"
        )
    lines += _audit_lines(report["audit"])
    for item in report["oldest_quarantined"]:
        lines.append(f"quarantine {item['id']} {item['at']} {item['reason']}")
    for error in report["last_errors"]:
        lines.append(f"error {error['at']} {error['component']}: {error['text']}")
    return "\n".join(lines)


def _audit_lines(audit: dict[str, Any], listed: int = 5) -> list[str]:
    lines = [f"audit due         {audit['due']} exists events in their grace period"]
    for row in audit["periods"][:listed]:
        reasons = ", ".join(f"{code} {n}" for code, n in sorted(row["reasons"].items()))
        lines.append(
            f"audit {row['period']}  {row['verified']} verified, {row['failed']} failed, "
            f"{row['missing']} missing" + (f" ({reasons})" if reasons else "")
        )
    return lines


def hub_report(store: Store, listed: int = 10) -> dict[str, Any]:
    """WebSub state: subscriptions, per-subscriber backlog and failures, the worst ``listed``."""
    rows = store.subscriptions.standing()
    counts = store.hub_counts()
    behind = [r for r in rows if r["backlog"] or r["attempts"]]
    behind.sort(key=lambda r: (r["attempts"], r["backlog"]), reverse=True)
    return {
        "push_subscriptions": len(rows),
        "push_pending_verifications": counts["pending_verifications"],
        "push_delivery_backlog": sum(r["backlog"] for r in rows),
        "push_subscribers_behind": len(behind),
        "push_failed_deliveries": counts["failed_deliveries"],
        "push_dropped": counts["dropped"],
        "push_lagging": behind[:listed],
    }
