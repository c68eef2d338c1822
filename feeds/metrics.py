"""Prometheus metrics, read from Redis at scrape time.

Every value comes from the store, not from process memory, so any gunicorn
worker answers a scrape with the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from yagi_meter.audit.report import OUTCOMES, audit_report
from yagi_meter.audit.verifier import MISSING_EXISTS
from yagi_meter.errors import StoreError
from yagi_meter.store import Store

_GAUGES = {
    "events": ("yagi_events", "Events stored now (after retention)."),
    "quarantined": ("yagi_quarantined", "Messages in quarantine now."),
    "dead_letters": ("yagi_dead_letters", "Forwards the archive refused for good."),
    "push_backlog": ("yagi_push_backlog", "Events waiting to be pushed to WebSub subscribers."),
    "forward_backlog": ("yagi_forward_backlog", "Events waiting to be forwarded to the archive."),
}
_COUNTERS = {
    "last_seq": ("yagi_events_ingested", "Events ever stored (the last ingest sequence number)."),
    "quarantined_ever": ("yagi_quarantined_ever", "Messages ever quarantined."),
    "duplicates": ("yagi_duplicates", "Redelivered or replayed messages already stored."),
    "conflicts": ("yagi_conflicts", "Later bodies of a stored message_id, kept as events of their own."),
}


class StoreCollector(Collector):
    """Yields the store's counts on each collect()."""

    def __init__(self, store: Store, audit_periods: int = 48, memory_bytes: int = 0) -> None:
        self.store = store
        self.audit_periods = audit_periods
        self.memory_bytes = memory_bytes

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily("yagi_redis_up", "1 when Redis answered this scrape.")
        try:
            latency = self.store.ping()
            values = self.store.gauges()
        except StoreError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("yagi_redis_ping_seconds", "Redis round trip at scrape time.", value=latency)
        for key, (name, text) in _GAUGES.items():
            yield GaugeMetricFamily(name, text, value=values[key])
        for key, (name, text) in _COUNTERS.items():
            yield CounterMetricFamily(name, text, value=values[key])
        yield from _hub_metrics(self.store)
        yield from _audit_metrics(self.store, self.audit_periods)
        yield from _sizing_metrics(self.store, self.memory_bytes)


_SIZING_GAUGES = {
    "used_memory": ("yagi_redis_used_memory_bytes", "Redis INFO used_memory."),
    "bytes_per_event": (
        "yagi_bytes_per_event",
        "used_memory less used_memory_startup, over the events stored.",
    ),
    "ingest_rate": ("yagi_ingest_rate_events_per_second", "Events/s over the last 10,000 seqs, up to now."),
    "memory_bytes": ("yagi_memory_bytes", "maxmemory, else [redis] memory_bytes."),
    "memory_days": ("yagi_memory_days", "Days of events the memory holds at the current rate."),
    "days_until_full": ("yagi_days_until_full", "Days until memory is full at this rate, nothing removed."),
}


def _sizing_metrics(store: Store, memory_bytes: int) -> Iterator[GaugeMetricFamily]:
    try:
        values = store.sizing(memory_bytes)
    except StoreError:
        return
    for key, (name, text) in _SIZING_GAUGES.items():
        value = values[key]
        if isinstance(value, int | float):  # None: not known yet (no events, no rate, no memory set)
            yield GaugeMetricFamily(name, text, value=value)


_HUB_GAUGES = {
    "subscriptions": ("yagi_push_subscriptions", "WebSub subscriptions (verified, lease not swept yet)."),
    "pending_verifications": (
        "yagi_push_pending_verifications",
        "Subscription requests awaiting verification.",
    ),
    "subscribers_due": (
        "yagi_push_subscribers_due",
        "Subscriptions with deliveries due, retrying or in flight.",
    ),
}
_HUB_COUNTERS = {
    "failed_deliveries": ("yagi_push_failed_deliveries", "Delivery attempts to subscribers that failed."),
    "dropped": ("yagi_push_dropped", "Entries given up after [hub] max_delivery_attempts or max age."),
}


def _hub_metrics(store: Store) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    try:
        values = store.hub_counts()
    except StoreError:
        return
    for key, (name, text) in _HUB_GAUGES.items():
        yield GaugeMetricFamily(name, text, value=values[key])
    for key, (name, text) in _HUB_COUNTERS.items():
        yield CounterMetricFamily(name, text, value=values[key])


def _audit_metrics(store: Store, periods: int) -> Iterator[GaugeMetricFamily]:
    try:
        report = audit_report(store, periods)
    except StoreError:
        return
    yield GaugeMetricFamily(
        "yagi_audit_due", "Exists events archived, waiting for their grace period.", value=report["due"]
    )
    verdicts = GaugeMetricFamily(
        "yagi_audit_verdicts",
        "Audit verdicts stored per audit period (start, UTC), outcome (verified, failed, missing) "
        "and reason (empty: all).",
        labels=["period", "outcome", "reason"],
    )
    for row in report["periods"]:
        for outcome in OUTCOMES:
            verdicts.add_metric([row["period"], outcome, ""], row[outcome])
        for reason, n in sorted(row["reasons"].items()):
            outcome = "missing" if reason == MISSING_EXISTS else "failed"
            verdicts.add_metric([row["period"], outcome, reason], n)
    yield verdicts


def registry(store: Store, audit_periods: int = 48, memory_bytes: int = 0) -> CollectorRegistry:
    """A registry of this app's own (no process globals), holding the store collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(store, audit_periods, memory_bytes))
    return reg
