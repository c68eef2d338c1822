"""Redis is yagi-meter's only state; this package owns every key and script.

``Store`` is the boundary: the rest of yagi-meter calls its collections and
methods and never sees a Redis client, a key name or a Redis exception
(every one becomes StoreError, base.py).  Which module writes which key is
in keys.py's table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import redis

from yagi_meter.config import Config
from yagi_meter.errors import ConfigError
from yagi_meter.forward.routes import Routes
from yagi_meter.store import connection, stats
from yagi_meter.store.archived import ArchivedLog
from yagi_meter.store.audit import AuditLedger
from yagi_meter.store.base import translated
from yagi_meter.store.catalog import Catalog
from yagi_meter.store.dead_letters import DeadLetters
from yagi_meter.store.dictionaries import Dictionaries
from yagi_meter.store.error_log import ErrorLog
from yagi_meter.store.events import EventStore, Outcome, Rejected
from yagi_meter.store.keys import OUTBOXES, Keys
from yagi_meter.store.outbox import Outbox
from yagi_meter.store.pages import Pages
from yagi_meter.store.quarantine import Quarantine
from yagi_meter.store.scripts import Scripts
from yagi_meter.store.subscriptions import Subscriptions

__all__ = ["EventStore", "Outcome", "Quarantine", "Rejected", "Store", "open_store"]


class Store:
    """Every collection one process uses, over one client, with the scripts registered once."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        compress: bool = True,
        forward: Callable[[str], bool] | None = None,
        dictionaries: Dictionaries | None = None,
        wait: tuple[int, int] = (0, 0),
        partitions: Sequence[Keys] = (),
        spread_tenants: Sequence[str] = (),
    ) -> None:
        """``wait``: (replicas, timeout ms) that must confirm every event write ([redis] wait_replicas);
        ``partitions``: the keys of each partition (default: ``keys``, the one partition);
        ``spread_tenants``: tenants whose events are in every partition (Pages)."""
        self._client = client
        self._keys = keys
        self._parts = list(partitions or [keys])
        scripts = Scripts.register(client)
        parts = (client, keys, scripts)
        self.events = EventStore(
            *parts,
            parts=self._parts,
            compress=compress,
            forward=forward,
            dictionaries=dictionaries,
            wait=wait,
        )
        self.quarantine = Quarantine(*parts)
        self.errors = ErrorLog(*parts)
        self.dead_letters = DeadLetters(*parts)
        self.archived = ArchivedLog(*parts)
        self.subscriptions = Subscriptions(*parts)
        self.audit = AuditLedger(*parts, parts=self._parts, spread_tenants=spread_tenants)
        self.catalog = Catalog(*parts, parts=self._parts, spread_tenants=spread_tenants)
        # Feed reads note a seq gone back in the same watch as the writes (epoch.py).
        self.pages = Pages(
            *parts,
            watch=self.events.watch,
            dictionaries=self.events.dictionaries,
            parts=self._parts,
            spread_tenants=spread_tenants,
        )
        self._outboxes = {name: Outbox(*parts, name, self._parts) for name in OUTBOXES}

    def outbox(self, name: str) -> Outbox:
        """The outbox ``push`` or ``forward``."""
        if name not in self._outboxes:
            raise ValueError(f"no outbox {name!r}")
        return self._outboxes[name]

    def ping(self) -> float:
        """Round-trip time to Redis in seconds; raises StoreError when Redis does not answer."""
        started = time.perf_counter()
        with translated("cannot reach Redis: ping"):
            self._client.ping()
        return time.perf_counter() - started

    def gauges(self) -> dict[str, int]:
        """Archive-wide counts in one round trip (events, last seq, backlogs, ...)."""
        return stats.gauges(self._client, self._keys, self._parts)

    def sizing(self, memory_bytes: int = 0) -> dict[str, float | int | str | None]:
        """Bytes per event, ingest rate, memory and the days of events it holds (stats.sizing)."""
        return stats.sizing(self._client, self._keys, memory_bytes, self._parts)

    def hub_counts(self) -> dict[str, int]:
        """WebSub counts in one round trip: subscriptions, verifications waiting, failures, drops."""
        return stats.hub_counts(self._client, self._keys)

    @property
    def partitions(self) -> int:
        """How many partitions the events are split into ([redis] partitions)."""
        return len(self._parts)

    def check_layout(self) -> None:
        """Record the partition count in a new store, or check it against the stored one.

        Raises ConfigError when the store was written with another count (its
        events would not be found where this process looks), StoreError when
        Redis cannot be asked.
        """
        count = len(self._parts)
        with translated("reading the store layout"):
            stored = self._client.get(self._keys.layout)
            if stored is None and count > 1 and self._client.exists(self._keys.base + "seq"):
                raise ConfigError(
                    f"[redis] partitions: {count}, but the store under {self._keys.base!r} was written "
                    "with one partition (keys without hash tags); set partitions = 1, or start an "
                    "empty store (see README, Redis Cluster)"
                )
            if stored is None:
                self._client.set(self._keys.layout, count, nx=True)
                stored = self._client.get(self._keys.layout)
        if int(stored or count) != count:
            raise ConfigError(
                f"[redis] partitions: {count}, but the store under {self._keys.base!r} was written with "
                f"{int(stored or 0)} partitions; set partitions = {int(stored or 0)}"
            )

    def warn_if_evicting(self) -> None:
        """Log a warning when Redis may evict keys: an evicted key is a lost event."""
        connection.warn_if_evicting(self._client)

    def socket_url(self) -> str | None:
        """unix:// URL of an embedded server, for child processes to share it; else None."""
        return connection.socket_url(self._client)


def open_store(
    config: Config, client: redis.Redis | None = None, forward: Callable[[str], bool] | None = None
) -> Store:
    """The store for ``config``; pass ``client`` to use a given Redis (tests)."""
    client = connection.connect(config) if client is None else client
    if forward is None and config.forward.url:
        forward = Routes.from_config(config).wanted
    parts = Keys.partitions(config.redis.key_prefix, config.redis.partition_count)
    keys = parts[0]
    dictionaries = Dictionaries(
        client,
        keys,
        check_seconds=config.redis.dictionary_check_seconds,
        # Text of a body: the notification (at most max_body_bytes, re-encoded) and derived fields.
        max_text_bytes=2 * config.amqp.max_body_bytes + 65536,
        parts=parts,
    )
    return Store(
        client,
        keys,
        compress=config.redis.compress,
        forward=forward,
        dictionaries=dictionaries,
        wait=(config.redis.wait_replicas, config.redis.wait_timeout_ms),
        partitions=parts,
        # With a billed project, an owner's events are in the billed project's partition.
        spread_tenants=config.notifications.billed_project_owners
        if config.notifications.billed_project_key
        else (),
    )
