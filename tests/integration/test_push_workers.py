"""``yagi-meter push`` as real processes: several at once, and SIGTERM."""

from __future__ import annotations

import collections
import os
import signal
import sys

import pytest
from flask import Flask
from lxml import etree

from feeds.hub import init_hub
from tests.conftest import ROOT, TEST_REDIS_URL, make_config
from tests.hub_helpers import BASE, ingest, subscribe, tenant_topic, wait_until
from tests.processes import spawn
from tests.servers.subscriber import Subscriber
from yagi_meter.atom import ATOM_NS
from yagi_meter.store import open_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NS = {"a": ATOM_NS}


def start_worker(key_prefix, **settings):
    env = dict(os.environ)
    env.update(
        YAGI_CONFIG=os.devnull,
        YAGI_REDIS_URL=TEST_REDIS_URL,
        YAGI_REDIS_KEY_PREFIX=key_prefix,
        YAGI_HUB_ALLOWED_CALLBACK_NETWORKS="127.0.0.0/8",
        YAGI_HUB_POLL_INTERVAL_MS="5",
        YAGI_HUB_RETRY_MIN_SECONDS="0.05",
        YAGI_HUB_RETRY_MAX_SECONDS="0.2",
        YAGI_LOGGING_LEVEL="warning",
    )
    env.update({f"YAGI_{k.upper()}": v for k, v in settings.items()})
    return spawn([sys.executable, "-m", "yagi_meter", "push"], env=env, cwd=ROOT)


def stop(process):
    process.send_signal(signal.SIGTERM)
    return process.wait(20)


@pytest.fixture
def setup(key_prefix):
    config = make_config(
        redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, hub_allowed_callback_networks="127.0.0.0/8"
    )
    store = open_store(config)
    app = Flask(__name__)
    init_hub(app, config, store)
    return config, store, app.test_client(), store.subscriptions


def entry_ids(posts):
    return [
        e.findtext("a:id", namespaces=NS)
        for p in posts
        for e in etree.fromstring(p.body).findall("a:entry", NS)
    ]


def test_two_push_workers_at_once_send_every_entry_exactly_once(key_prefix, setup):
    config, store, client, subscriptions = setup
    workers = [start_worker(key_prefix, hub_batch_size="7") for _ in range(2)]
    try:
        with Subscriber() as subscriber:
            subscriber.delay = 0.005  # widen every window in which two workers could collide
            paths = [f"/s{i}" for i in range(12)]
            for i, path in enumerate(paths):
                topic = f"{BASE}/events" if i % 3 == 0 else tenant_topic()
                assert subscribe(client, subscriber.url(path), topic).status_code == 202
            assert wait_until(lambda: len(subscriptions.ids()) == len(paths), timeout=20)
            ids = []
            for _ in range(20):
                ids += ingest(store, config, 10)
            expected = sorted(f"urn:uuid:{i}" for i in ids)
            for path in paths:
                assert subscriber.wait_for(lambda p=path: len(entry_ids(subscriber.posts_to(p))) >= 200, 30)
            subscriber.wait_for(lambda: False, timeout=0.5)  # time for any double send to arrive
            for path in paths:
                received = entry_ids(subscriber.posts_to(path))
                doubled = [i for i, n in collections.Counter(received).items() if n > 1]
                assert doubled == [], f"{path} got {len(doubled)} entries twice"
                assert sorted(received) == expected
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0]


def test_sigterm_finishes_the_delivery_in_flight_and_exits_0(key_prefix, setup, keys, redis_server):
    config, store, client, subscriptions = setup
    worker = start_worker(key_prefix)
    with Subscriber() as subscriber:
        subscriber.delay = 1.5
        assert subscribe(client, subscriber.url("/cb"), tenant_topic()).status_code == 202
        assert wait_until(lambda: subscriptions.ids(), timeout=20)
        ids = ingest(store, config, 2)
        assert subscriber.wait_for(lambda: subscriber.attempts == 1)
        assert stop(worker) == 0
        assert entry_ids(subscriber.posts) == [f"urn:uuid:{i}" for i in ids]
        [sid] = subscriptions.ids()
        assert subscriptions.backlog(sid) == 0
        assert redis_server.zscore(keys.hub_due, sid) is None
