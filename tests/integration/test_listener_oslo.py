"""oslo.messaging's own Notifier -> RabbitMQ -> ``yagi-meter listen`` -> Redis.

The notifications are sent by the client every OpenStack service uses, with
both wire forms (``messaging``: the legacy body, ``messagingv2``: the 2.0
envelope), to the ``nova`` control exchange: to the listener's own queues
(declared at its first start, so also while it is stopped afterwards), and,
with ``[amqp] queue = {topic}.{priority}``, to the queues oslo.messaging
declares itself, before the listener first starts.  Beside it, a consumer
of oslo.messaging's ``notifications.info`` (as Ceilometer is) gets every
notification too.

Current oslo.messaging sends a redacted copy of the request context (no
auth token); services on old releases sent ``_context_auth_token`` in clear,
so a test publishes such a body the way they did.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import oslo_messaging
import oslo_messaging.opts
import pika
import pytest
from oslo_config import cfg
from oslo_context.context import RequestContext
from oslo_messaging.notify import _impl_test

from tests.integration.listener_helpers import (
    EVENT_TYPE,
    EXCHANGE,
    Publisher,
    declare_listener_queue,
    notification,
    notifications,
    queue_counts,
    wait_until,
)

pytestmark = pytest.mark.integration

COUNT = 30
PRIORITIES = ("info", "warn", "error")
ROUTING_KEYS = [f"notifications.{priority}" for priority in PRIORITIES]
OWN_QUEUES = [f"yagi-meter.{key}" for key in ROUTING_KEYS]


def waiting(amqp_url: str, queues: list[str]) -> int:
    """Messages not yet acknowledged in ``queues``."""
    counts = queue_counts(amqp_url)
    return sum(sum(counts.get(queue, (0, 0))) for queue in queues)


@contextmanager
def oslo_notifier(amqp_url: str, driver: str, **rabbit: str) -> Iterator[oslo_messaging.Notifier]:
    """A Notifier configured as nova configures it: control_exchange nova, topic notifications.

    The ``test`` driver runs beside the real one and records each message as
    the Notifier built it, so the test knows the message_id oslo generated.
    """
    conf = cfg.ConfigOpts()
    conf([], project="yagi-meter-tests", default_config_files=[], default_config_dirs=[])
    for group, options in oslo_messaging.opts.list_opts():
        if group in (None, "oslo_messaging_notifications", "oslo_messaging_rabbit"):
            conf.register_opts(options, group=group)
    for name, value in rabbit.items():  # [oslo_messaging_rabbit] options
        conf.set_override(name, value, group="oslo_messaging_rabbit")
    conf.set_override("control_exchange", "nova")
    conf.set_override("driver", [driver, "test"], group="oslo_messaging_notifications")
    conf.set_override("topics", ["notifications"], group="oslo_messaging_notifications")
    transport = oslo_messaging.get_notification_transport(
        conf, url=amqp_url.replace("amqp://", "rabbit://", 1)
    )
    try:
        yield oslo_messaging.Notifier(transport, publisher_id="compute.host1")
    finally:
        transport.cleanup()


def send(notifier: oslo_messaging.Notifier, tenant_id: str, token: str, count: int) -> list[dict]:
    """Send ``count`` instance-create events at priorities info, warn and error in turn
    (routing keys notifications.<priority>); return the messages as oslo built them."""
    _impl_test.reset()
    context = RequestContext(project_id=tenant_id, user_id="user-1", auth_token=token)
    for i in range(count):
        payload = {"tenant_id": tenant_id, "instance_id": f"instance-{i:03d}", "user_id": "user-1"}
        getattr(notifier, PRIORITIES[i % len(PRIORITIES)])(context, EVENT_TYPE, payload)
    sent = [message for _, message, _, _ in _impl_test.NOTIFICATIONS]
    assert len(sent) == count
    return sent


def capture_queue(amqp_url: str) -> str:
    """A queue of the test's own bound beside the listener's, to see the bytes oslo sent."""
    name = f"capture-{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.queue_declare(name, auto_delete=False)
        for routing_key in ROUTING_KEYS:
            channel.queue_bind(name, EXCHANGE, routing_key=routing_key)
    finally:
        connection.close()
    return name


def drain(amqp_url: str, queue: str) -> list[bytes]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        bodies = []
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            bodies.append(body)
        channel.queue_delete(queue)
        return bodies
    finally:
        connection.close()


@pytest.mark.parametrize("driver", ["messaging", "messagingv2"])
@pytest.mark.parametrize("order", ["listener-first", "listener-stopped", "oslo-queues-notifier-first"])
def test_oslo_notifications_are_stored_once_with_owner_and_without_token(
    driver, order, vhost, env, stored, start_listener
):
    tenant_id = f"tenant-{uuid.uuid4().hex[:8]}"
    token = f"SECRET-TOKEN-{uuid.uuid4().hex}"
    captured = None
    queues = OWN_QUEUES
    with oslo_notifier(vhost, driver) as notifier:
        if order == "listener-first":
            listener = start_listener(env)
            listener.wait_consuming()
            captured = capture_queue(vhost)
            sent = send(notifier, tenant_id, token, COUNT)
        elif order == "listener-stopped":  # its durable queues wait for it
            first = start_listener(env)
            first.wait_consuming()
            assert first.stop() == 0
            sent = send(notifier, tenant_id, token, COUNT)
            assert waiting(vhost, queues) == COUNT
            listener = start_listener(env)
        else:  # oslo.messaging's own queues, as its notifier declares them (non-durable)
            queues = ROUTING_KEYS
            env = {**env, "YAGI_AMQP_QUEUE": "{topic}.{priority}", "YAGI_AMQP_DURABLE": "false"}
            sent = send(notifier, tenant_id, token, COUNT)
            assert waiting(vhost, queues) == COUNT  # oslo declared the queues and kept them
            listener = start_listener(env)
        listener.wait_consuming()
        wait_until(lambda: stored.count() >= COUNT, 20, f"{COUNT} events", listener.log_tail)
        wait_until(lambda: waiting(vhost, queues) == 0, 10, "empty queues", listener.log_tail)

    if captured:  # what went over the wire, in the form this driver sends
        bodies = drain(vhost, captured)
        assert len(bodies) == COUNT
        assert all(b"_context_project_id" in body for body in bodies)
        assert all((b'"oslo.version"' in body) == (driver == "messagingv2") for body in bodies)

    sent_ids = [message["message_id"] for message in sent]
    stored.assert_exactly_once(sent_ids, tenant_id)
    events = {event.message_id: event for event in stored.events()}
    for i, message_id in enumerate(sent_ids):
        event = events[message_id]
        assert (event.tenant_id, event.resource_id, event.user_id) == (
            tenant_id,
            f"instance-{i:03d}",
            "user-1",
        )
        assert event.event_type == EVENT_TYPE
        assert event.priority == sent[i]["priority"] == PRIORITIES[i % 3].upper()
        assert event.publisher_id == "compute.host1"
        assert event.notification["_context_project_id"] == tenant_id
        assert token not in event.notification_json
    for key in stored.client.scan_iter(match=f"{stored.keys.prefix}*"):
        assert token.encode() not in (stored.client.dump(key) or b""), key
    assert stored.client.xlen(stored.keys.quarantine) == 0
    assert listener.stop() == 0


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "lzma"])
def test_oslo_kombu_compression_is_undone_before_parsing(compression, vhost, env, stored, start_listener):
    # [oslo_messaging_rabbit] kombu_compression: kombu compresses the body and
    # names the method in a "compression" header.
    tenant_id = f"tenant-{uuid.uuid4().hex[:8]}"
    listener = start_listener(env)
    listener.wait_consuming()
    with oslo_notifier(vhost, "messagingv2", kombu_compression=compression) as notifier:
        sent = send(notifier, tenant_id, "token", 6)
        wait_until(lambda: stored.count() >= 6, 20, "6 events", listener.log_tail)
    stored.assert_exactly_once([message["message_id"] for message in sent], tenant_id)
    assert stored.client.xlen(stored.keys.quarantine) == 0
    assert listener.stop() == 0


def test_auth_token_sent_in_clear_by_old_services_is_not_stored(vhost, env, stored, start_listener):
    token = f"SECRET-TOKEN-{uuid.uuid4().hex}"
    tenant_id, message_ids, _ = notifications(3)
    bodies = []
    for i, message_id in enumerate(message_ids):
        message = notification(tenant_id, i, message_id)
        # As oslo.messaging packed a dict context before it redacted contexts.
        message.update(_context_project_id=tenant_id, _context_auth_token=token, _context_user="user-1")
        bodies.append(json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)}).encode())
    declare_listener_queue(vhost)
    publisher = Publisher(vhost)
    try:
        publisher.publish_all(bodies)
    finally:
        publisher.close()
    listener = start_listener(env)
    wait_until(lambda: stored.count() >= 3, 20, "3 events", listener.log_tail)

    stored.assert_exactly_once(message_ids, tenant_id)
    for event in stored.events():
        assert token not in event.notification_json
        assert event.notification["_context_project_id"] == tenant_id
    for key in stored.client.scan_iter(match=f"{stored.keys.prefix}*"):
        assert token.encode() not in (stored.client.dump(key) or b""), key
    assert listener.stop() == 0
