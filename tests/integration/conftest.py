"""Fixtures of the integration tests.

Listener tests: a clean vhost, listener processes, the stored events.
Feed tests: a store, an ingestor and Flask test clients (auth none and token).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from feeds.app import create_app
from tests.conftest import TEST_REDIS_URL, make_config
from tests.feeds_support import tenant_message
from tests.integration.listener_helpers import ListenerProcess, StoredEvents, listener_env, reset_vhost
from yagi_meter.config import Config
from yagi_meter.ingest.ingestor import Ingestor
from yagi_meter.store import open_store


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


# -- feeds ---------------------------------------------------------------------

TOKENS = "admin-token = admin, alpha-token = tenant:alpha, beta-token = tenant:beta"


@pytest.fixture
def store(config):
    return open_store(config)


@pytest.fixture
def ingestor(store, config):
    return Ingestor(store, config)


@pytest.fixture
def client(config, store):
    return create_app(config, store).test_client()


@pytest.fixture
def token_config(key_prefix):
    return make_config(
        redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, auth_mode="token", auth_tokens=TOKENS
    )


@pytest.fixture
def token_client(token_config, store):
    return create_app(token_config, store).test_client()


@pytest.fixture
def owned(ingestor) -> dict[str, str]:
    """One event of tenant alpha and one of beta: tenant -> message_id."""
    ids = {}
    for tenant in ("alpha", "beta"):
        message_id, message = tenant_message(tenant, 0)
        ingestor.ingest([message])
        ids[tenant] = message_id
    return ids
