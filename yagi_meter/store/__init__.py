"""Redis is yagi-meter's only state; this package owns every key and script."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis

from yagi_meter.config import Config
from yagi_meter.forward.routes import Routes
from yagi_meter.store.connection import connect
from yagi_meter.store.dictionaries import Dictionaries
from yagi_meter.store.error_log import ErrorLog
from yagi_meter.store.events import EventStore, Outcome, Rejected
from yagi_meter.store.keys import Keys
from yagi_meter.store.quarantine import Quarantine

__all__ = ["EventStore", "Keys", "Outcome", "Quarantine", "Rejected", "Store", "open_store"]


@dataclass(frozen=True)
class Store:
    """The parts of the store one process uses, sharing one client."""

    client: redis.Redis
    keys: Keys
    events: EventStore
    quarantine: Quarantine
    errors: ErrorLog


def open_store(
    config: Config, client: redis.Redis | None = None, forward: Callable[[str], bool] | None = None
) -> Store:
    """The store for ``config``; pass ``client`` to use a given Redis (tests)."""
    client = connect(config) if client is None else client
    keys = Keys(config.redis.key_prefix)
    if forward is None and config.forward.url:
        forward = Routes.from_config(config).wanted
    dictionaries = Dictionaries(
        client,
        keys,
        check_seconds=config.redis.dictionary_check_seconds,
        # Text of a body: the notification (at most max_body_bytes, re-encoded) and derived fields.
        max_text_bytes=2 * config.amqp.max_body_bytes + 65536,
    )
    events = EventStore(
        client, keys, compress=config.redis.compress, forward=forward, dictionaries=dictionaries
    )
    return Store(client, keys, events, Quarantine(client, keys), ErrorLog(client, keys))
