"""A listener on a RabbitMQ cluster: its own queue declared as a quorum queue."""

from __future__ import annotations

import json

import pika
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.integration.listener_helpers import (
    Publisher,
    StoredEvents,
    listener_env,
    notifications,
    rabbitmqctl,
    vhost_of,
    wait_until,
)

pytestmark = pytest.mark.integration

QUEUE = "yagi-meter-quorum-test"


@pytest.fixture
def clean_vhost(amqp_url: str):
    def drop() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            connection.channel().queue_delete(QUEUE)
        finally:
            connection.close()

    drop()
    yield amqp_url
    drop()


def test_own_queue_is_declared_as_a_durable_quorum_queue_and_consumed(
    clean_vhost, key_prefix, start_listener, redis_server
):
    env = listener_env(
        clean_vhost,
        TEST_REDIS_URL,
        key_prefix,
        amqp_queue=QUEUE,
        amqp_queue_type="quorum",
        amqp_exchange_durable="true",
        amqp_exchanges="nova-quorum-test",
    )
    listener = start_listener(env)
    listener.wait_consuming()
    queues = json.loads(
        rabbitmqctl(
            "list_queues", "-p", vhost_of(clean_vhost), "name", "type", "durable", "--formatter", "json"
        )
    )
    mine = [q for q in queues if q["name"] == QUEUE]
    assert mine and mine[0]["type"] == "quorum" and mine[0]["durable"] is True

    tenant, message_ids, bodies = notifications(20)
    publisher = Publisher(clean_vhost, exchange="nova-quorum-test")
    try:
        publisher.publish_all(bodies)
    finally:
        publisher.close()
    stored = StoredEvents(redis_server, key_prefix)
    wait_until(lambda: stored.count() == 20, timeout=30, what="20 events stored")
    stored.assert_exactly_once(message_ids, tenant)
    assert listener.stop() == 0
