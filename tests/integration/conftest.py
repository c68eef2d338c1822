"""Fixtures of the feed tests: a store, an ingestor and a Flask test client per test."""

from __future__ import annotations

import pytest

from feeds.app import create_app
from tests.conftest import TEST_REDIS_URL, make_config
from tests.feeds_support import tenant_message
from yagi_meter.ingest import Ingestor
from yagi_meter.store import open_store

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
