"""The listener under faults: killed, stopped, Redis or RabbitMQ lost, a second listener beside it.

Each test publishes with confirms into the listener's own queue (declared
before the listener first starts, as it declares it), runs real ``yagi-meter
listen`` processes and ends with every published message_id stored exactly
once.  "Acknowledged" is read from the broker: messages published minus
messages still in the queue (ready or delivered and unacknowledged).
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import TEST_REDIS_URL
from tests.integration.listener_helpers import (
    QUEUE,
    BackgroundPublisher,
    Publisher,
    RedisServer,
    StoredEvents,
    close_connections,
    declare_listener_queue,
    free_port,
    listener_env,
    messages_in,
    notifications,
    wait_until,
)

pytestmark = pytest.mark.integration


def drained(vhost: str, stored: StoredEvents, count: int, *listeners, timeout: float = 60) -> None:
    """Wait until ``count`` events are stored and the queue is empty."""

    def details() -> str:
        tails = "\n".join(listener.log_tail() for listener in listeners)
        return f"stored {stored.count()}, in queue {messages_in(vhost)}\n{tails}"

    wait_until(lambda: stored.count() >= count, timeout, f"{count} events stored", details, interval=0.2)
    wait_until(lambda: messages_in(vhost) == 0, 15, "an empty queue", details, interval=0.2)


def test_kill_9_in_the_middle_of_10000_messages_then_restart_stores_each_once(
    vhost, env, stored, start_listener
):
    tenant_id, message_ids, bodies = notifications(10_000)
    declare_listener_queue(vhost)
    first = start_listener(env)
    first.wait_consuming()
    publisher = BackgroundPublisher(vhost, bodies)
    publisher.start()
    try:
        wait_until(lambda: stored.count() >= 2000, 30, "2000 events stored", first.log_tail, interval=0.01)
        first.kill()
        at_kill = stored.count()
        assert at_kill < len(bodies), "the listener finished before it could be killed"

        second = start_listener(env)
        assert publisher.finish(60) == len(bodies)
        drained(vhost, stored, len(bodies), first, second)
    finally:
        publisher.abort()
    stored.assert_exactly_once(message_ids, tenant_id)
    assert second.stop() == 0


@pytest.mark.parametrize("how", ["SIGKILL", "SHUTDOWN"])
def test_redis_stopped_and_restarted_under_load_nothing_acked_while_down_nothing_lost(
    how, vhost, key_prefix, tmp_path, start_listener
):
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    server = RedisServer(redis_dir)
    server.start()
    try:
        env = listener_env(vhost, server.url, key_prefix, redis_socket_timeout="1")
        stored = StoredEvents(server.client(), key_prefix)
        tenant_id, message_ids, bodies = notifications(4000)
        declare_listener_queue(vhost)
        listener = start_listener(env)
        listener.wait_consuming()
        publisher = BackgroundPublisher(vhost, bodies, rate=600)
        publisher.start()
        try:
            wait_until(lambda: stored.count() >= 600, 20, "600 events stored", listener.log_tail)
            server.kill() if how == "SIGKILL" else server.shutdown()
            time.sleep(0.5)  # an ack already on its way when Redis died may still land
            with publisher.paused():
                acked_after_kill = publisher.published - messages_in(vhost)
            listener.wait_for_log("Redis unavailable")
            time.sleep(2)
            with publisher.paused():
                acked_before_restart = publisher.published - messages_in(vhost)
            assert acked_before_restart == acked_after_kill, "messages were acknowledged while Redis was down"
            assert listener.running()

            server.start()  # same port, same append-only file
            assert publisher.finish(60) == len(bodies)
            drained(vhost, stored, len(bodies), listener)
        finally:
            publisher.abort()
        stored.assert_exactly_once(message_ids, tenant_id)
        assert listener.running(), "the listener died while Redis was down"
        assert listener.log().count("consuming; prefetch") == 1  # kept its RabbitMQ connection
        assert listener.stop() == 0
    finally:
        server.kill()


def test_rabbitmq_closing_the_connection_twice_listener_reconnects_and_loses_nothing(
    vhost, env, stored, start_listener
):
    tenant_id, message_ids, bodies = notifications(3000)
    declare_listener_queue(vhost)
    listener = start_listener(env)
    listener.wait_consuming()
    publisher = BackgroundPublisher(vhost, bodies, rate=600)
    publisher.start()
    try:
        for reconnects, threshold in enumerate((400, 1500), start=2):
            wait_until(lambda t=threshold: stored.count() >= t, 20, f"{threshold} events", listener.log_tail)
            assert close_connections(vhost, "yagi-meter listen", "test: connection loss") == 1
            listener.wait_consuming(count=reconnects)
        assert publisher.finish(60) == len(bodies)
        drained(vhost, stored, len(bodies), listener)
    finally:
        publisher.abort()
    assert "RabbitMQ connection lost" in listener.log()
    stored.assert_exactly_once(message_ids, tenant_id)
    assert listener.stop() == 0


def test_sigterm_while_messages_flow_exits_0_having_acked_exactly_what_it_stored(
    vhost, env, stored, start_listener
):
    tenant_id, message_ids, bodies = notifications(5000)
    declare_listener_queue(vhost)
    first = start_listener(env)
    first.wait_consuming()
    publisher = BackgroundPublisher(vhost, bodies, rate=1500)
    publisher.start()
    try:
        wait_until(lambda: stored.count() >= 1000, 20, "1000 events stored", first.log_tail)
        assert first.stop() == 0
        with publisher.paused():
            acked = publisher.published - messages_in(vhost)
            assert acked == stored.count()
        assert first.stopped_totals()["stored"] == acked

        second = start_listener(env)
        assert publisher.finish(60) == len(bodies)
        drained(vhost, stored, len(bodies), first, second)
    finally:
        publisher.abort()
    stored.assert_exactly_once(message_ids, tenant_id)
    # Nothing stored by the first run came back: it acked all it stored.
    assert stored.duplicates_counted() == 0
    assert second.stop() == 0


def test_two_listeners_on_the_same_queue_store_each_message_once(vhost, env, stored, start_listener):
    tenant_id, message_ids, bodies = notifications(6000)
    declare_listener_queue(vhost)
    # A small window, so the broker hands each listener a share.
    env = dict(env, YAGI_AMQP_PREFETCH="200", YAGI_AMQP_BATCH_SIZE="100")
    listeners = [start_listener(env), start_listener(env)]
    for listener in listeners:
        listener.wait_consuming()
    publisher = BackgroundPublisher(vhost, bodies)
    publisher.start()
    try:
        assert publisher.finish(60) == len(bodies)
        drained(vhost, stored, len(bodies), *listeners)
    finally:
        publisher.abort()
    stored.assert_exactly_once(message_ids, tenant_id)
    for listener in listeners:
        assert listener.stop() == 0
    shares = [listener.stopped_totals()["stored"] for listener in listeners]
    assert all(shares) and sum(shares) == len(bodies), shares


def test_queue_deleted_while_consuming_listener_consumes_again(vhost, env, stored, start_listener):
    # RabbitMQ cancels the consumer of a deleted queue (also when a cluster
    # node holding it fails); the listener must not go on consuming nothing.
    tenant_id, message_ids, bodies = notifications(200)
    declare_listener_queue(vhost)
    listener = start_listener(env)
    listener.wait_consuming()
    publisher = Publisher(vhost)
    try:
        publisher.publish_all(bodies[:100])
        wait_until(lambda: stored.count() >= 100, 20, "100 events stored", listener.log_tail)
        publisher.channel.queue_delete(QUEUE)
        listener.wait_consuming(count=2)  # declared and bound it again
        publisher.publish_all(bodies[100:])
    finally:
        publisher.close()
    drained(vhost, stored, len(bodies), listener, timeout=20)
    assert f"cancelled the consumer of {QUEUE}" in listener.log()
    stored.assert_exactly_once(message_ids, tenant_id)
    assert listener.stop() == 0


def test_sigterm_while_redis_is_down_exits_0_at_once_acking_nothing(
    vhost, key_prefix, tmp_path, start_listener
):
    server = RedisServer(tmp_path)
    server.start()
    try:
        env = listener_env(
            vhost, server.url, key_prefix, redis_socket_timeout="1", amqp_reconnect_max_seconds="30"
        )
        _, _, bodies = notifications(200)
        declare_listener_queue(vhost)
        listener = start_listener(env)
        listener.wait_consuming()
        server.kill()
        publisher = Publisher(vhost)
        try:
            publisher.publish_all(bodies)
        finally:
            publisher.close()
        # The fifth retry waits 3.2 s less at most half of it (jitter): longer than the 1.5 s allowed below.
        listener.wait_for_log("retry in", count=5)
        started = time.monotonic()
        assert listener.stop() == 0
        assert time.monotonic() - started < 1.5, "SIGTERM waited for the backoff to end"
        assert "unacknowledged for redelivery" in listener.log()
        assert messages_in(vhost) == len(bodies)
    finally:
        server.kill()


def test_sigterm_while_rabbitmq_is_unreachable_exits_0_at_once(key_prefix, start_listener):
    unreachable = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    env = listener_env(unreachable, TEST_REDIS_URL, key_prefix, amqp_reconnect_max_seconds="30")
    listener = start_listener(env)
    listener.wait_for_log("reconnecting in", count=5)  # a backoff of 1.6 to 3.2 s (0.2 s doubled, jittered)
    started = time.monotonic()
    assert listener.stop() == 0
    assert time.monotonic() - started < 1.5, "SIGTERM waited for the backoff to end"
