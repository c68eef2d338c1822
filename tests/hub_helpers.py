"""Helpers shared by the WebSub tests: events from real samples, subscription requests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

from tests.conftest import SAMPLES, as_sent, load_sample
from yagi_meter.config import Config
from yagi_meter.ingest.ingestor import Ingestor, Message
from yagi_meter.store import Store

SAMPLE_TENANT = "6f70656e737461636b20342065766572"
SAMPLE_RESOURCE = "178b0921-8f85-4257-88b6-2e743b5a975c"
SAMPLE = SAMPLES / "instance-create-end.json"
BASE = "http://127.0.0.1:8080"


def message(tenant: str = SAMPLE_TENANT) -> tuple[str, Message]:
    """A real nova notification as sent, moved to ``tenant``; returns (message_id, message)."""
    message_id = str(uuid.uuid4())
    text = json.dumps(as_sent(load_sample(SAMPLE), message_id=message_id)).replace(SAMPLE_TENANT, tenant)
    return message_id, Message(text.encode(), "test")


def ingest(store: Store, config: Config, count: int = 1, tenant: str = SAMPLE_TENANT) -> list[str]:
    """Store ``count`` new events of ``tenant`` through the listener's path; their message ids."""
    made = [message(tenant) for _ in range(count)]
    summary = Ingestor(store, config).ingest([m for _, m in made])
    assert summary.stored == count
    return [message_id for message_id, _ in made]


def tenant_topic(tenant: str = SAMPLE_TENANT) -> str:
    return f"{BASE}/tenants/{tenant}/events"


def subscribe(client, callback: str, topic: str, mode: str = "subscribe", **extra: str):
    """POST a subscription request to the hub of a Flask test client."""
    data = {"hub.mode": mode, "hub.callback": callback, "hub.topic": topic}
    data.update({f"hub.{k}": v for k, v in extra.items()})
    return client.post("/hub", data=data)


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
