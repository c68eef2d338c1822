"""Fixtures of the listener integration tests: a clean vhost, listener processes, the stored events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import TEST_REDIS_URL
from tests.integration.listener_helpers import ListenerProcess, StoredEvents, listener_env, reset_vhost
from yagi_meter.config import Config


@pytest.fixture
def vhost(amqp_url: str, config: Config) -> Iterator[str]:
    """The session's vhost without the queues and exchanges a listener uses, before and after."""
    reset_vhost(amqp_url, config)
    yield amqp_url
    reset_vhost(amqp_url, config)


@pytest.fixture
def env(vhost: str, key_prefix: str) -> dict[str, str]:
    """A listener's environment: the clean vhost, the test Redis under this test's prefix."""
    return listener_env(vhost, TEST_REDIS_URL, key_prefix)


@pytest.fixture
def stored(redis_server: redis.Redis, key_prefix: str) -> StoredEvents:
    return StoredEvents(redis_server, key_prefix)


@pytest.fixture
def start_listener(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], ListenerProcess]]:
    """Start ``yagi-meter listen`` processes; any still running at the end are killed."""
    started: list[ListenerProcess] = []

    def start(env: dict[str, str]) -> ListenerProcess:
        listener = ListenerProcess(env, tmp_path / f"listener-{len(started) + 1}.log")
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.cleanup()
