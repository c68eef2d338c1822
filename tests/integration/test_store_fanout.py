"""Fan-out gives fanout.lua every queue key it writes, and stays right when subscribers change."""

from __future__ import annotations

import time

import pytest
import redis

from tests.integration.test_store import make_event
from yagi_meter.store import Store, open_store
from yagi_meter.store.keys import Keys
from yagi_meter.store.subscriptions import HubMode, Intent

pytestmark = pytest.mark.integration

TOPIC = "/tenants/t/events"


@pytest.fixture
def store(config, redis_server: redis.Redis) -> Store:
    return open_store(config, client=redis_server)


def subscribe(store: Store, callback: str) -> str:
    intent = Intent(HubMode.SUBSCRIBE, f"http://127.0.0.1{TOPIC}", TOPIC, callback, lease_seconds=3600)
    store.subscriptions.activate(intent, expires_ms=int(time.time() * 1000) + 3_600_000)
    return intent.id


def test_a_subscriber_added_while_fanning_out_gets_the_entry(
    store: Store, redis_server: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = subscribe(store, "http://127.0.0.1/first")
    [outcome] = store.events.write([make_event("m-1")])
    push = store.outbox("push")
    assert push.claim(10, lease_seconds=30) == [outcome.seq]

    # Between reading the topic's subscribers and running the script, another
    # subscription to the topic is verified: the script must not use the stale list.
    subscriptions = store.subscriptions
    read = subscriptions._execute
    added: list[str] = []

    def read_then_subscribe(pipe, what=""):
        replies = read(pipe, what)
        monkeypatch.undo()  # once
        added.append(subscribe(store, "http://127.0.0.1/second"))
        return replies

    monkeypatch.setattr(subscriptions, "_execute", read_then_subscribe)
    assert subscriptions.fan_out(push, [(outcome.seq, [TOPIC])]) == 2
    assert subscriptions.pending(first, 10) == subscriptions.pending(added[0], 10) == [outcome.seq]
    assert push.backlog() == 0
    assert redis_server.zscore(keys.hub_due, added[0]) is not None


def test_an_entry_already_fanned_out_is_not_queued_again(store: Store) -> None:
    sid = subscribe(store, "http://127.0.0.1/only")
    [outcome] = store.events.write([make_event("m-1")])
    push = store.outbox("push")
    push.claim(10, lease_seconds=30)
    assert store.subscriptions.fan_out(push, [(outcome.seq, [TOPIC])]) == 1
    store.subscriptions.settle(sid, "ok", [outcome.seq])
    assert store.subscriptions.fan_out(push, [(outcome.seq, [TOPIC])]) == 0
    assert store.subscriptions.pending(sid, 10) == []
