"""Hostile messages through the real RabbitMQ: one bad message hurts no other, big ones are
held in bounded form, a redelivered bad message is quarantined once."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path

import pytest

from tests.integration.listener_helpers import (
    Publisher,
    declare_listener_queue,
    messages_in,
    notification,
    notifications,
    run_cli,
    wait_until,
)

pytestmark = pytest.mark.integration


def publish(vhost: str, bodies: list[bytes]) -> None:
    publisher = Publisher(vhost)
    try:
        publisher.publish_all(bodies)
    finally:
        publisher.close()


def drained(vhost, stored, quarantine, listener, events: int, quarantined: int, timeout: float) -> None:
    """Wait for ``events`` stored, ``quarantined`` in the quarantine and an empty queue."""
    wait_until(
        lambda: stored.count() == events and quarantine.count() == quarantined,
        timeout,
        f"{events} events and {quarantined} quarantined",
        lambda: f"stored {stored.count()}, quarantined {quarantine.count()}\n{listener.log_tail()}",
    )
    wait_until(lambda: messages_in(vhost) == 0, 30, "an empty queue (everything acked)", listener.log_tail)


def poison(tenant_id: str) -> bytes:
    """A message whose priority is a lone surrogate, as a JSON escape: it parses, it cannot be encoded."""
    return json.dumps(dict(notification(tenant_id, 0), priority="\ud800")).encode()


def versioned_poison() -> bytes:
    """A versioned nova payload with a lone surrogate in action_initiator_user."""
    message = dict(notification("tenant-v", 0), event_type="instance.create.end")
    message["payload"] = {
        "nova_object.name": "InstanceActionPayload",
        "nova_object.namespace": "nova",
        "nova_object.version": "1.8",
        "nova_object.data": {"uuid": "i-1", "tenant_id": "tenant-v", "action_initiator_user": "u\udfff"},
    }
    return json.dumps(message).encode()


def test_a_poison_message_among_thousands_is_quarantined_once_and_all_others_are_stored(
    vhost, env, stored, start_listener, redis_server
):
    tenant_id, good_ids, bodies = notifications(2000)
    bodies[700:700] = [poison(tenant_id)]
    bodies[1500:1500] = [versioned_poison()]
    declare_listener_queue(vhost)
    listener = start_listener(env)
    listener.wait_consuming()
    publish(vhost, bodies)
    quarantine = stored.quarantine
    drained(vhost, stored, quarantine, listener, 2000, 2, 60)
    stored.assert_exactly_once(good_ids, tenant_id)
    reasons = sorted(entry.reason for entry in quarantine.list())
    assert reasons == [
        "initiator_user_id has characters XML cannot carry: 'u\\udfff'",
        "priority has characters XML cannot carry: '\\ud800'",
    ]
    assert listener.log().count("consuming; prefetch") == 1, "the listener restarted"
    assert listener.stop() == 0
    assert listener.stopped_totals()["quarantined"] == 2


def test_replay_of_a_file_with_a_poison_line_quarantines_it_once_and_exits_normally(
    vhost, env, stored, redis_server, tmp_path: Path
):
    tenant_id, good_ids, bodies = notifications(3)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([bodies[0], poison(tenant_id), bodies[1], versioned_poison(), bodies[2]]))
    out = run_cli(env, "replay", str(path))
    assert "stored 3, duplicates 0, conflicts 0, quarantined 2" in out
    # Replayed again: the bad lines are repeats, not new quarantine entries.
    out = run_cli(env, "replay", str(path))
    assert "stored 0, duplicates 5, conflicts 0, quarantined 0" in out
    assert stored.quarantine.count() == 2
    stored.assert_exactly_once(good_ids, tenant_id)


def test_bad_messages_redelivered_after_a_crash_are_quarantined_once(
    vhost, env, stored, start_listener, redis_server, tmp_path: Path
):
    """A kill -9 between storing a batch and acking it leaves its messages both in Redis and
    in the queue.  That state, made deterministic: the same bodies quarantined by a replay,
    then delivered by RabbitMQ."""
    bad = [f"not json {i} {uuid.uuid4()}".encode() for i in range(100)]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(bad))
    assert "quarantined 100" in run_cli(env, "replay", str(path))
    declare_listener_queue(vhost)
    publish(vhost, bad)
    listener = start_listener(env)
    wait_until(lambda: messages_in(vhost) == 0, 30, "an empty queue", listener.log_tail)
    quarantine = stored.quarantine
    assert quarantine.count() == 100
    assert sorted(entry.body for entry in quarantine.list(count=1000)) == sorted(bad)
    assert listener.stop() == 0
    totals = listener.stopped_totals()
    assert (totals["quarantined"], totals["duplicates"]) == (0, 100)
    assert stored.duplicates_counted() == 100


def test_big_messages_are_held_in_bounded_form_and_the_others_stored(
    vhost, env, stored, start_listener, redis_server
):
    """Eight 50 MB messages among normal ones, six in a row: peak RSS stays under 400 MB.

    Published as a backlog first: before the bound the listener peaked at 1.6 GB here.
    """
    tenant_id, good_ids, bodies = notifications(300)
    big = [json.dumps({"i": i, "blob": "x" * (50 * 1024 * 1024)}).encode() for i in range(8)]
    mixed = bodies[:100] + big[:6] + bodies[100:200] + [big[6]] + bodies[200:] + [big[7]]
    declare_listener_queue(vhost)
    publish(vhost, mixed)  # a backlog: RabbitMQ may send all of it at once
    listener = start_listener(env)
    quarantine = stored.quarantine
    drained(vhost, stored, quarantine, listener, 300, 8, 120)
    status = Path(f"/proc/{listener.pid}/status").read_text()
    peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
    print(f"listener peak RSS (VmHWM): {peak_kb / 1024:.0f} MB")
    stored.assert_exactly_once(good_ids, tenant_id)
    entries = quarantine.list()
    assert len(entries) == 8
    for entry in entries:
        assert entry.reason == "too large: 52428820 bytes > max_message_bytes 8388608"
        assert entry.truncated and entry.size == 52428820 and len(entry.body) == 4096
        assert len(entry.sha256) == 64
    assert sorted(e.sha256 for e in entries) == sorted(hashlib.sha256(b).hexdigest() for b in big)
    assert redis_server.memory_usage(stored.keys.quarantine) < 1024 * 1024
    listed = [json.loads(line) for line in run_cli(env, "quarantine", "list", "--json").splitlines()]
    assert [(e["size"], e["truncated"]) for e in listed] == [(52428820, True)] * 8
    run_cli(env, "quarantine", "requeue")  # cannot restore them: they stay, listed and counted
    assert quarantine.count() == 8
    assert peak_kb < 400 * 1024, f"listener peak RSS {peak_kb / 1024:.0f} MB"
    assert listener.stop() == 0
