"""Every kind of bad message, published through RabbitMQ among good ones.

Each bad one is quarantined with its reason and acknowledged; every good one
around it is stored; the queue ends empty and ``yagi-meter status`` counts
them.  The listener never stops on one.
"""

from __future__ import annotations

import json
import uuid
import zlib

import pytest

from tests.integration.listener_helpers import (
    Publisher,
    declare_listener_queue,
    messages_in,
    notification,
    notifications,
    run_cli,
    status,
    wait_until,
)

pytestmark = pytest.mark.integration

MAX_BODY_BYTES = 4096


def bad_messages() -> dict[str, tuple[bytes, str]]:
    """kind -> (body, what its quarantine reason says)."""
    good = notification("tenant-bad", 0)

    def without(field: str) -> bytes:
        return json.dumps({k: v for k, v in good.items() if k != field}).encode()

    huge = dict(good, message_id=str(uuid.uuid4()), payload={"blob": "x" * (2 * MAX_BODY_BYTES)})
    return {
        "not JSON": (b"compute.instance.create.end tenant=1 {", "body is not JSON"),
        "not UTF-8": (b'{"event_type": "caf\xe9"}', "not UTF-8"),
        "JSON array": (json.dumps([good]).encode(), "body is not a JSON object"),
        "missing event_type": (without("event_type"), "missing event_type"),
        "missing message_id": (without("message_id"), "missing message_id"),
        "too large": (json.dumps(huge).encode(), "body too large"),
        "control character in message_id": (
            json.dumps(dict(good, message_id="abc\x01def")).encode(),
            "message_id has characters XML cannot carry",
        ),
        "envelope without JSON inside": (
            json.dumps({"oslo.version": "2.0", "oslo.message": "{not json"}).encode(),
            "oslo.message is not JSON",
        ),
    }


def test_each_bad_message_is_quarantined_with_its_reason_and_good_ones_around_it_stored(
    vhost, env, config, stored, start_listener, redis_server
):
    bad = bad_messages()
    tenant_id, good_ids, good_bodies = notifications(len(bad) + 1)
    # A control character outside the identifying fields is harmless: stored.
    harmless = json.loads(good_bodies[0])
    harmless["payload"]["display_name"] = "vm\x01\x0b\ufffe"
    good_bodies[0] = json.dumps(harmless).encode()
    interleaved = [good_bodies[0]]
    for (body, _), good_body in zip(bad.values(), good_bodies[1:], strict=True):
        interleaved += [body, good_body]

    declare_listener_queue(vhost)
    env = dict(env, YAGI_AMQP_MAX_BODY_BYTES=str(MAX_BODY_BYTES))
    listener = start_listener(env)
    listener.wait_consuming()
    publisher = Publisher(vhost)
    try:
        publisher.publish_all(interleaved)
    finally:
        publisher.close()

    quarantine = stored.quarantine
    wait_until(
        lambda: stored.count() == len(good_ids) and quarantine.count() == len(bad),
        20,
        f"{len(good_ids)} events and {len(bad)} quarantined",
        lambda: f"stored {stored.count()}, quarantined {quarantine.count()}\n{listener.log_tail()}",
    )
    wait_until(lambda: messages_in(vhost) == 0, 10, "an empty queue (everything acked)", listener.log_tail)

    stored.assert_exactly_once(good_ids, tenant_id)
    [event] = [e for e in stored.events() if e.message_id == good_ids[0]]
    assert event.notification["payload"]["display_name"] == "vm\x01\x0b\ufffe"

    entries = {entry.body: entry for entry in quarantine.list(count=100)}
    for kind, (body, reason) in bad.items():
        assert body in entries, f"{kind}: not quarantined whole"
        assert reason in entries[body].reason, f"{kind}: reason {entries[body].reason!r}"
        assert entries[body].source == "nova/notifications.info"

    report = status(env)
    assert report["quarantined"] == len(bad)
    assert report["quarantined_ever"] == len(bad)
    assert report["events"] == len(good_ids)
    listed = run_cli(env, "quarantine", "list", "--json").splitlines()
    assert sorted(json.loads(line)["reason"] for line in listed) == sorted(e.reason for e in entries.values())

    assert listener.running()
    assert listener.stop() == 0
    assert listener.stopped_totals()["quarantined"] == len(bad)


def test_compressed_bodies_that_cannot_be_undone_are_quarantined_as_received(
    vhost, env, stored, start_listener, redis_server
):
    tenant_id, good_ids, good_bodies = notifications(2)
    huge = json.dumps(notification(tenant_id, 9, "huge")).encode() + b" " * (2 * MAX_BODY_BYTES)
    bad = [
        (b"\x78\x9cnot zlib at all", {"compression": "application/x-gzip"}),
        (zlib.compress(good_bodies[0]), {"compression": "application/x-snappy"}),
        (zlib.compress(huge), {"compression": "application/x-gzip"}),
    ]
    declare_listener_queue(vhost)
    listener = start_listener(dict(env, YAGI_AMQP_MAX_BODY_BYTES=str(MAX_BODY_BYTES)))
    listener.wait_consuming()
    publisher = Publisher(vhost)
    try:
        for body, headers in bad:
            publisher.publish(body, headers)
        publisher.publish(zlib.compress(good_bodies[1]), {"compression": "application/x-gzip"})
    finally:
        publisher.close()
    quarantine = stored.quarantine
    wait_until(
        lambda: stored.count() == 1 and quarantine.count() == len(bad),
        20,
        "1 event and 3 quarantined",
        listener.log_tail,
    )
    wait_until(lambda: messages_in(vhost) == 0, 10, "an empty queue", listener.log_tail)
    assert [entry.body for entry in quarantine.list()] == [body for body, _ in bad]
    assert stored.message_ids() == [good_ids[1]]
    assert listener.stop() == 0
