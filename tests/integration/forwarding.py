"""Helpers for the forwarder's tests: events from the real samples, a forwarder in a thread."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import ROOT, TEST_REDIS_URL, as_sent, load_sample, make_config, sample_paths
from tests.processes import spawn
from yagi_meter.atom import entry_uuid
from yagi_meter.config import Config
from yagi_meter.forward.forwarder import Forwarder
from yagi_meter.ingest.ingestor import Ingestor, Message
from yagi_meter.store import Store, open_store
from yagi_meter.store.outbox import Outbox

FAST = {  # quick retries and leases, so the tests take seconds
    "forward_backoff_base": "0.05",
    "forward_backoff_max": "0.3",
    "forward_timeout": "0.5",
    "forward_lease_seconds": "2",
}


def forward_config(key_prefix: str, url: str, **settings: str) -> Config:
    return make_config(
        redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, forward_url=url, **{**FAST, **settings}
    )


def ingest(config: Config, count: int) -> dict[str, str]:
    """Ingest ``count`` events made from the real samples; return entry id -> event type.

    Every fifth has a message id that is not a UUID (as replayed files have), so
    posted entries with uuid5 ids are checked too."""
    store = open_store(config)
    samples = itertools.cycle(load_sample(path) for path in sample_paths())
    messages, sent = [], {}
    for number, sample in enumerate(itertools.islice(samples, count)):
        message_id = str(uuid.uuid4()) if number % 5 else f"replayed-{number}-{uuid.uuid4().hex}"
        message = as_sent(sample, message_id=message_id)
        messages.append(Message(json.dumps(message).encode(), "test"))
        sent[f"urn:uuid:{entry_uuid(message_id)}"] = message["event_type"]
    Ingestor(store, config).ingest(messages)
    return sent


def outbox(store: Store) -> Outbox:
    return store.outbox("forward")


def free_port() -> int:
    """A port nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def running(config: Config) -> Iterator[Forwarder]:
    """A forwarder in a thread, stopped (in-flight requests finished) on the way out."""
    forwarder = Forwarder(config, open_store(config))
    thread = threading.Thread(target=forwarder.run, daemon=True)
    thread.start()
    try:
        yield forwarder
    finally:
        forwarder.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "forwarder did not stop"


def drained(config: Config) -> Callable[[], bool]:
    box = outbox(open_store(config))
    return lambda: box.backlog() == 0


def spawn_forwarder(config: Config, log: Path, **settings: str) -> subprocess.Popen:
    """``yagi-meter forward`` as its own process, configured through the environment only;
    its log goes to ``log``."""
    env = dict(os.environ, YAGI_CONFIG=os.devnull, PYTHONPATH=str(ROOT))
    env.update(
        {
            "YAGI_REDIS_URL": config.redis.url,
            "YAGI_REDIS_KEY_PREFIX": config.redis.key_prefix,
            "YAGI_FORWARD_URL": config.forward.url,
            "YAGI_FORWARD_BACKOFF_BASE": str(config.forward.backoff_base),
            "YAGI_FORWARD_BACKOFF_MAX": str(config.forward.backoff_max),
            "YAGI_FORWARD_TIMEOUT": str(config.forward.timeout),
            "YAGI_FORWARD_LEASE_SECONDS": str(config.forward.lease_seconds),
        }
    )
    env.update({f"YAGI_{name.upper()}": value for name, value in settings.items()})
    with log.open("a") as handle:  # the child keeps its own copy of the descriptor
        return spawn(
            [sys.executable, "-m", "yagi_meter", "forward"], env=env, stdout=subprocess.DEVNULL, stderr=handle
        )
