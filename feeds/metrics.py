"""Prometheus metrics, read from Redis at scrape time.

Every value comes from the store, not from process memory, so any gunicorn
worker answers a scrape with the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

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
    "conflicts": ("yagi_conflicts", "Reused message_ids whose body differed."),
}


class StoreCollector(Collector):
    """Yields the store's counts on each collect()."""

    def __init__(self, store: Store) -> None:
        self.store = store

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


def registry(store: Store) -> CollectorRegistry:
    """A registry of this app's own (no process globals), holding the store collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(store))
    return reg
