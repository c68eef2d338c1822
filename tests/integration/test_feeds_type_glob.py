"""event_type globs on the real Redis: linear-time matching, never a pattern engine a client drives."""

from __future__ import annotations

import fnmatch
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from feeds.app import create_app
from tests.conftest import make_config
from tests.integration.listener_helpers import RedisServer
from yagi_meter.config import Config
from yagi_meter.ingest.ingestor import Ingestor, Message
from yagi_meter.store import Store, open_store
from yagi_meter.store.pages import PageQuery

pytestmark = pytest.mark.integration

PATHOLOGICAL = "********Z"


def typed(event_type: str) -> Message:
    body = {
        "message_id": str(uuid.uuid4()),
        "event_type": event_type,
        "publisher_id": "compute.host1",
        "priority": "INFO",
        "timestamp": "2026-11-24 15:00:00.000000",
        "payload": {"tenant_id": "t-1", "instance_id": "i-1"},
    }
    return Message(json.dumps(body).encode(), "test")


def ingest_types(store: Store, config: Config, types: list[str]) -> None:
    ingestor = Ingestor(store, config)
    for start in range(0, len(types), 500):
        summary = ingestor.ingest([typed(t) for t in types[start : start + 500]])
        assert summary.quarantined == 0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own: a regression must freeze no one else's Redis."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


def test_a_pathological_glob_on_many_events_answers_in_bounded_time_and_redis_keeps_answering(
    own_redis: RedisServer,
) -> None:
    # The scan itself (not the matching) holds Redis for each entry examined:
    # 5,000 keeps it well under the 100 ms PING bound on a loaded 2-core machine.
    config = make_config(redis_url=own_redis.url, redis_key_prefix="glob:", feeds_scan_limit="5000")
    # A socket timeout, so a regression fails this test instead of hanging it.
    store = open_store(config, client=redis.Redis.from_url(own_redis.url, socket_timeout=20))
    types = [f"compute.instance.{'abcdefgh'[i % 8]}.create.end.with.a.longer.name" for i in range(12_000)]
    ingest_types(store, config, types)
    client = create_app(config, store).test_client()

    latencies: list[float] = []
    failures: list[str] = []
    done = threading.Event()

    def ping() -> None:
        other = redis.Redis.from_url(own_redis.url, socket_timeout=30)
        while not done.is_set():
            started = time.perf_counter()
            try:
                other.ping()
            except redis.RedisError as e:  # BUSY while a script runs too long
                failures.append(repr(e))
            latencies.append(time.perf_counter() - started)
            time.sleep(0.005)
        other.close()

    pinger = threading.Thread(target=ping, daemon=True)
    pinger.start()
    time.sleep(0.1)
    started = time.perf_counter()
    try:
        response = client.get("/events", query_string={"event_type": PATHOLOGICAL, "limit": "10"})
    finally:
        elapsed = time.perf_counter() - started
        time.sleep(0.1)
        done.set()
        pinger.join(60)
    print(
        f"glob request {elapsed * 1000:.0f} ms; PING max {max(latencies) * 1000:.1f} ms over {len(latencies)}"
    )
    assert response.status_code == 200
    assert b"<entry" not in response.data  # nothing ends in Z
    assert elapsed < 5
    assert not failures, failures[:3]
    assert max(latencies) < 0.1, f"PING took up to {max(latencies) * 1000:.0f} ms"


def test_globs_match_exactly_what_fnmatch_matches_for_star_only_patterns(
    store: Store, config: Config
) -> None:
    rng = random.Random(8)
    alphabet = "ab.%-"  # '%' and '-' were magic to the old Lua patterns
    types = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7))) for _ in range(300)})
    ingest_types(store, config, types)
    pages = store.pages
    patterns = ["*", "**", "a*", "*a", "a*a", "*a*", "a**b", "*.*", "ab*ba", "%*-", "*a*b*a*", "a*b*a*b"]
    patterns += ["".join(rng.choice(alphabet + "**") for _ in range(rng.randint(1, 8))) for _ in range(150)]
    for pattern in patterns:
        if "*" not in pattern:
            continue
        query = PageQuery(limit=1000, budget=10_000, event_type=pattern)
        _, page = pages.read(pages.everything(), query)
        got = sorted(stored.decode().event_type for stored in page.events)
        assert got == [t for t in types if fnmatch.fnmatchcase(t, pattern)], pattern
