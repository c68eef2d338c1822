"""``status``'s and ``/metrics``' sizing figures, on a private redis-server of known content.

A private server (tests/servers/redis_cluster.py's ``standalone_redis``), so
INFO memory counts nothing but this test's events.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from feeds.app import create_app
from tests.conftest import make_config, need_redis_server
from tests.integration.test_store import make_event
from tests.servers.redis_cluster import standalone_redis
from yagi_meter import status
from yagi_meter.config import Config
from yagi_meter.store import Store, open_store

pytestmark = [pytest.mark.integration, pytest.mark.one_partition]

PREFIX = "sizing:"


@pytest.fixture
def private() -> Iterator[redis.Redis]:
    need_redis_server()
    with standalone_redis() as client:
        yield client


def private_config(client: redis.Redis, **settings: str) -> Config:
    port = client.connection_pool.connection_kwargs["port"]
    return make_config(redis_url=f"redis://127.0.0.1:{port}/0", redis_key_prefix=PREFIX, **settings)


def fill(store: Store, batches: int, pause: float) -> None:
    for n in range(batches):
        store.events.write(
            [make_event(f"m-{n}-{i}", tenant=f"t-{i % 5}", resource=f"vm-{i}") for i in range(100)]
        )
        time.sleep(pause)


def now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def test_bytes_per_event_rate_and_days_on_known_data(private: redis.Redis) -> None:
    config = private_config(private, redis_memory_bytes=str(2 * 10**9), redis_retention_days="30")
    store = open_store(config, client=private)
    fill(store, 10, 0.1)
    [(_, first)] = private.xrange(PREFIX + "events", "1-0", "1-0")
    before = now_ms(private)
    report = store.sizing(config.redis.memory_bytes)
    after = now_ms(private)
    info = private.info("memory")
    expected = (info["used_memory"] - info["used_memory_startup"]) / 1000
    assert report["bytes_per_event"] == pytest.approx(expected, rel=0.02)
    assert 1000 < report["bytes_per_event"] < 10000
    # Seqs 2..1000 given out since seq 1 was ingested.
    t1 = int(first[b"t"])
    # The rate is reported to 3 decimals: allow that rounding at either bound.
    assert (
        999 / ((after - t1) / 1000) - 0.0005 <= report["ingest_rate"] <= 999 / ((before - t1) / 1000) + 0.0005
    )
    assert (report["memory_bytes"], report["memory_source"]) == (2 * 10**9, "[redis] memory_bytes")
    per_day = report["bytes_per_event"] * report["ingest_rate"] * 86400
    assert report["memory_days"] == pytest.approx(2 * 10**9 / per_day, rel=0.01)
    assert report["days_until_full"] == pytest.approx((2 * 10**9 - report["used_memory"]) / per_day, rel=0.01)
    collected = status.collect(
        store,
        private_config(
            private,
            redis_memory_bytes=str(2 * 10**9),
            redis_retention_days="30",
            amqp_url="amqp://guest:guest@127.0.0.1:1/%2F",
        ),
    )
    assert collected["events"] == 1000
    assert collected["memory_source"] == report["memory_source"]
    numbers = [key for key, value in report.items() if isinstance(value, int | float)]
    assert {key: collected[key] for key in numbers} == pytest.approx(
        {key: report[key] for key in numbers}, rel=0.05
    )
    report = collected
    text = status.render(report)
    assert "of 2,000.0 MB ([redis] memory_bytes)" in text
    assert f"{report['bytes_per_event']:,.0f} bytes (used_memory over events)" in text
    assert f"memory holds      {report['memory_days']:,.1f} days at this rate (retention_days 30)" in text
    json.dumps(report)  # `status --json` prints it whole

    # maxmemory wins over [redis] memory_bytes.
    private.config_set("maxmemory", str(10**9))
    report = store.sizing(config.redis.memory_bytes)
    assert (report["memory_bytes"], report["memory_source"]) == (10**9, "maxmemory")


def test_no_memory_configured_and_no_events_say_so(private: redis.Redis) -> None:
    config = private_config(private)
    store = open_store(config, client=private)
    empty = store.sizing()
    assert empty["bytes_per_event"] is empty["ingest_rate"] is empty["memory_days"] is None
    fill(store, 2, 0.05)
    report = store.sizing()
    assert report["bytes_per_event"] and report["ingest_rate"]
    assert report["memory_bytes"] is report["memory_days"] is report["days_until_full"] is None


def test_the_ingest_rate_falls_when_ingest_stops(private: redis.Redis) -> None:
    store = open_store(private_config(private), client=private)
    fill(store, 3, 0.05)
    busy = store.sizing()["ingest_rate"]
    time.sleep(1.0)
    assert store.sizing()["ingest_rate"] < busy / 2


def test_metrics_have_the_sizing_gauges(private: redis.Redis) -> None:
    config = private_config(private, redis_memory_bytes=str(4 * 10**9))
    store = open_store(config, client=private)
    fill(store, 5, 0.05)
    body = create_app(config, store).test_client().get("/metrics").get_data(as_text=True)
    values = {
        line.split()[0]: float(line.split()[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }
    sizing = store.sizing(config.redis.memory_bytes)
    assert values["yagi_memory_bytes"] == 4 * 10**9
    assert values["yagi_bytes_per_event"] == pytest.approx(sizing["bytes_per_event"], rel=0.05)
    assert values["yagi_redis_used_memory_bytes"] == pytest.approx(sizing["used_memory"], rel=0.05)
    assert values["yagi_ingest_rate_events_per_second"] == pytest.approx(sizing["ingest_rate"], rel=0.2)
    assert values["yagi_memory_days"] > 0 and values["yagi_days_until_full"] > 0
