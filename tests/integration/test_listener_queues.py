"""The listener's own queues: a full copy of every notification beside Ceilometer, kept durably.

Ceilometer's notification agent (like any oslo.messaging notification
listener) consumes the queues oslo.messaging's notifier declares,
``notifications.<priority>``.  A second consumer on the same queue would get
only part of the messages; yagi-meter consumes ``yagi-meter.<topic>.<priority>``
queues of its own, bound to the same exchanges and routing keys.
"""

from __future__ import annotations

import json
import threading
import uuid

import pika
import pytest

from tests.integration.listener_helpers import (
    QUEUE,
    ROUTING_KEY,
    Publisher,
    declare_like_oslo,
    messages_in,
    notifications,
    rabbitmqctl,
    vhost_of,
    wait_until,
)

pytestmark = pytest.mark.integration

COUNT = 300


class PlainConsumer(threading.Thread):
    """A pika consumer of ``queue`` in a thread, acking each message: what Ceilometer does."""

    def __init__(self, amqp_url: str, queue: str) -> None:
        super().__init__(daemon=True)
        self.amqp_url = amqp_url
        self.queue = queue
        self.message_ids: list[str] = []
        self.consuming = threading.Event()
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=50)

            def on_message(channel, method, properties, body: bytes) -> None:
                self.message_ids.append(json.loads(body)["message_id"])
                channel.basic_ack(method.delivery_tag)

            channel.basic_consume(self.queue, on_message)
            self.consuming.set()
            while not self._stop_event.is_set():
                connection.process_data_events(time_limit=0.1)
        except BaseException as e:  # reported by stop()
            self.error = e
        finally:
            self.consuming.set()
            if connection.is_open:
                connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)
        assert not self.is_alive(), "the plain consumer did not stop"
        assert self.error is None, repr(self.error)


def test_listener_and_a_ceilometer_like_consumer_each_get_every_notification(
    vhost, env, stored, start_listener
):
    declare_like_oslo(vhost)  # notifications.info, as oslo.messaging's notifier declares it
    listener = start_listener(env)
    listener.wait_consuming()
    ceilometer = PlainConsumer(vhost, ROUTING_KEY)
    ceilometer.start()
    try:
        assert ceilometer.consuming.wait(10)
        tenant_id, message_ids, bodies = notifications(COUNT)
        publisher = Publisher(vhost)  # to the nova exchange, routing key notifications.info
        try:
            assert publisher.publish_all(bodies) == COUNT
        finally:
            publisher.close()
        wait_until(lambda: stored.count() >= COUNT, 30, f"{COUNT} events stored", listener.log_tail)
        wait_until(
            lambda: len(ceilometer.message_ids) >= COUNT,
            30,
            f"{COUNT} messages at the plain consumer",
            lambda: f"it has {len(ceilometer.message_ids)}",
        )
        wait_until(lambda: messages_in(vhost) == 0, 10, "yagi-meter's queue empty", listener.log_tail)
    finally:
        ceilometer.stop()
    assert sorted(ceilometer.message_ids) == sorted(message_ids)
    stored.assert_exactly_once(message_ids, tenant_id)
    assert messages_in(vhost, ROUTING_KEY) == 0
    assert listener.stop() == 0


def test_own_queues_are_durable_and_exchanges_declared_as_oslo_declares_them(vhost, env, start_listener):
    listener = start_listener(env)
    listener.wait_consuming()
    vhost_name = vhost_of(vhost)
    queues = {
        q["name"]: q["durable"]
        for q in json.loads(
            rabbitmqctl("list_queues", "-p", vhost_name, "name", "durable", "--formatter", "json")
        )
    }
    exchanges = {
        e["name"]: e["durable"]
        for e in json.loads(
            rabbitmqctl("list_exchanges", "-p", vhost_name, "name", "durable", "--formatter", "json")
        )
    }
    own = {f"yagi-meter.notifications.{priority}" for priority in ("info", "warn", "error")}
    assert QUEUE in own
    assert {name: queues.get(name) for name in own} == dict.fromkeys(own, True)
    assert not any(name.startswith("notifications.") for name in queues), queues
    # oslo.messaging (amqp_durable_queues = false) declares its exchanges non-durable; a
    # durable one declared first would make every service's notifier fail to declare it.
    for exchange in ("nova", "glance", "cinder", "neutron", "heat", "keystone"):
        assert exchanges.get(exchange) is False, exchange
    declare_like_oslo(vhost)  # as a service does after yagi-meter: accepted
    assert listener.stop() == 0


def test_a_queue_template_with_an_unknown_placeholder_is_a_configuration_error(env, start_listener):
    listener = start_listener({**env, "YAGI_AMQP_QUEUE": f"yagi-{uuid.uuid4().hex[:6]}.{{host}}"})
    assert listener.process.wait(30) == 2
    assert "[amqp] queue: expected a queue name with {topic} and {priority} or none" in listener.log()
