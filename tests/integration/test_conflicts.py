"""No notification is dropped: a later body of a known message_id is kept as an event of its own.

The corpus is shaped like the real one of issue 11: a test generator that gave
few message ids to many different notifications.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from lxml import etree

from tests.feeds_support import assert_valid_atom, atom_ids, tenant_message
from tests.integration.listener_helpers import (
    Publisher,
    declare_listener_queue,
    messages_in,
    run_cli,
    status,
    wait_until,
)
from yagi_meter.ingest.ingestor import Message, Summary
from yagi_meter.notification import CONFLICT_NAMESPACE, parse

pytestmark = pytest.mark.integration

ATOM = "{http://www.w3.org/2005/Atom}"
SHARED_IDS = [str(uuid.UUID(int=n + 1)) for n in range(4)]  # 4 message ids for 30 notifications


def corpus(tenant: str = "alpha", count: int = 30) -> list[Message]:
    """``count`` different notifications (each its own time), sharing 4 message ids."""
    return [
        tenant_message(
            tenant,
            n,
            resource_id=f"resource-{n % 3}",
            timestamp=f"2017-07-06 16:58:{n:02d}.000000",
            message_id=SHARED_IDS[n % len(SHARED_IDS)],
        )[1]
        for n in range(count)
    ]


def expected_ids(messages: list[Message]) -> list[str]:
    """The id each message is stored under: its own the first time, else the derived one."""
    ids, seen = [], set()
    for message in messages:
        event = parse(message.body, received_at=datetime.now(UTC))
        if event.message_id in seen:
            ids.append(str(uuid.uuid5(CONFLICT_NAMESPACE, f"{event.message_id}\n{event.digest}")))
        else:
            seen.add(event.message_id)
            ids.append(event.message_id)
    return ids


def ingest_in_batches(ingestor, messages: list[Message], size: int = 7) -> Summary:
    total = Summary()
    for start in range(0, len(messages), size):
        total.add(ingestor.ingest(messages[start : start + size]))
    return total


def test_every_notification_of_a_corpus_reusing_message_ids_is_kept_and_served(
    ingestor, store, client, redis_server, keys
):
    messages = corpus()
    ids = expected_ids(messages)
    assert len(set(ids)) == len(messages)
    summary = ingest_in_batches(ingestor, messages)
    assert (summary.stored, summary.conflicts, summary.duplicates) == (4, 26, 0)
    assert store.events.count() == 30
    assert redis_server.get(keys.conflicts) == b"26"
    for message, message_id in zip(messages, ids, strict=True):
        sent = json.loads(message.body)
        response = client.get(f"/events/{message_id}", query_string={"format": "json"})
        assert response.status_code == 200, message_id
        event = response.get_json()["entry"]["event"]
        assert event["timestamp_raw"] == sent["timestamp"]  # this body, not another's
        if message_id in SHARED_IDS:
            assert "conflict_of" not in event
        else:
            assert event["conflict_of"] == sent["message_id"]
            entry = client.get(f"/events/{message_id}")
            assert_valid_atom(entry.data)
            [category] = [
                c
                for c in etree.fromstring(entry.data).iter(ATOM + "category")
                if c.get("label") == "conflict_of"
            ]
            assert category.get("term") == sent["message_id"]
    for feed in ("/events", "/tenants/alpha/events"):
        page = client.get(feed, query_string={"limit": 100})
        assert_valid_atom(page.data)
        assert sorted(atom_ids(page.data)) == sorted(ids), feed
    by_type = client.get("/event_types/instance.delete.start/events")  # samples 3 and 4
    assert sorted(atom_ids(by_type.data)) == sorted(ids[3:5])
    per_resource = client.get("/tenants/alpha/resources/resource-1/events", query_string={"limit": 100})
    assert sorted(atom_ids(per_resource.data)) == sorted(ids[1::3])
    # The whole corpus again: nothing changes but the duplicates counter.
    again = ingest_in_batches(ingestor, messages, size=11)
    assert (again.stored, again.conflicts, again.duplicates) == (0, 0, 30)
    assert (store.events.count(), redis_server.get(keys.conflicts)) == (30, b"26")


def test_the_listener_keeps_every_conflicting_body_and_a_second_delivery_changes_nothing(
    vhost, env, stored, start_listener, tmp_path
):
    bodies = [m.body for m in corpus("gamma")]
    declare_listener_queue(vhost)
    publisher = Publisher(vhost)
    try:
        publisher.publish_all(bodies)
        listener = start_listener(env)
        wait_until(lambda: stored.count() == 30, 60, "30 events", listener.log_tail)
        wait_until(lambda: messages_in(vhost) == 0, 30, "an empty queue", listener.log_tail)
        publisher.publish_all(bodies)
        wait_until(lambda: messages_in(vhost) == 0, 30, "an empty queue again", listener.log_tail)
        wait_until(lambda: stored.duplicates_counted() == 30, 30, "30 duplicates", listener.log_tail)
    finally:
        publisher.close()
    assert listener.stop() == 0
    totals = listener.stopped_totals()
    assert (totals["stored"], totals["conflicts"], totals["duplicates"]) == (4, 26, 30)
    assert sorted(stored.message_ids()) == sorted(expected_ids([Message(b, "") for b in bodies]))
    assert status(env)["conflicts"] == 26
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"\n".join(bodies))
    assert "stored 0, duplicates 30, conflicts 0, quarantined 0" in run_cli(env, "replay", str(path))
    assert stored.count() == 30
