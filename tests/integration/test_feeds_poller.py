"""A poller following a feed forward reads every one of its events exactly once, while
several writers ingest at the same time (late notifications and redeliveries too): a
tenant feed, and the global feed merged from every partition of a partitioned store."""

from __future__ import annotations

import random
import threading
import time
from urllib.parse import urlsplit

import pytest

from feeds.app import create_app
from tests.conftest import TEST_REDIS_URL, make_config
from tests.feeds_support import atom_ids, links, tenant_message
from tests.integration.conftest import TOKENS
from yagi_meter.ingest.ingestor import Ingestor
from yagi_meter.store import open_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WRITERS = 4
PER_WRITER = 200
TOKEN = {"X-Auth-Token": "alpha-token"}
ADMIN = {"X-Auth-Token": "admin-token"}
TENANT_FEED = "/tenants/alpha/events?limit=7&marker=last&direction=backward"
GLOBAL_FEED = "/events?limit=7&marker=last&direction=backward"


def write(config, number: int, written: list[str], start: threading.Event, everyone: bool = False) -> None:
    """Ingest PER_WRITER messages in small batches, a third of them for other tenants
    (``everyone``: all of them are written down, for the global feed)."""
    ingestor = Ingestor(open_store(config), config)
    rng = random.Random(number)
    start.wait()
    sent = 0
    while sent < PER_WRITER:
        batch, mine = [], []
        for _ in range(rng.randint(1, 6)):
            others = ["beta", "gamma", "delta", "epsilon", "zeta", "eta"]
            tenant = "alpha" if rng.random() < 0.66 else rng.choice(others)
            late = rng.random() < 0.3  # an old notification arriving now
            stamp = f"20{rng.randint(0, 9):02d}-01-01T00:00:00Z" if late else "2026-11-24T12:00:00Z"
            message_id, message = tenant_message(tenant, sent, timestamp=stamp)
            batch.append(message)
            if tenant == "alpha" or everyone:
                mine.append(message_id)
            sent += 1
        if rng.random() < 0.2:
            batch.append(batch[0])  # a redelivery in the same batch changes nothing
        ingestor.ingest(batch)
        written.extend(mine)
        time.sleep(rng.random() / 500)


def poll(client, seen: list[str], done: threading.Event, url: str, token: dict[str, str]) -> None:
    """The oldest page first, then previous links, until the writers are done and it is caught up."""
    while True:
        finished = done.is_set()
        response = client.get(url, headers=token)
        assert response.status_code == 200, response.data
        ids = atom_ids(response.data)
        seen.extend(reversed(ids))  # a page lists newest first
        href = links(response.data).get("previous")
        if href:
            parts = urlsplit(href)
            url = f"{parts.path}?{parts.query}"
        if finished and not ids and href:
            return


def follow_while_writing(config, store, url: str, token: dict[str, str], everyone: bool) -> list[str]:
    client = create_app(config, store).test_client()
    # The poller starts from the oldest page: give it one entry to start from.
    first_id, first = tenant_message("alpha", 0)
    Ingestor(store, config).ingest([first])
    written: list[list[str]] = [[] for _ in range(WRITERS)]
    seen: list[str] = []
    start, done = threading.Event(), threading.Event()
    writers = [
        threading.Thread(target=write, args=(config, n, written[n], start, everyone)) for n in range(WRITERS)
    ]
    poller = threading.Thread(target=poll, args=(client, seen, done, url, token))
    for thread in writers:
        thread.start()
    poller.start()
    start.set()
    for thread in writers:
        thread.join(timeout=120)
    read_while_writing = len(seen)
    done.set()
    poller.join(timeout=120)
    assert not poller.is_alive()
    expected = [first_id] + [i for ids in written for i in ids]
    assert len(seen) == len(set(seen)), "an event was read twice"
    assert set(seen) == set(expected), "an event was missed"
    assert read_while_writing > 7, "the poller did not overlap the writers (more than one page)"
    return seen


def test_poller_reads_every_event_of_its_tenant_exactly_once(token_config, store):
    seen = follow_while_writing(token_config, store, TENANT_FEED, TOKEN, everyone=False)
    seqs = [store.events.seq_of(i) for i in seen]
    if store.partitions == 1:  # a tenant's events are in one partition: in seq order there
        assert seqs == sorted(seqs), "events were read out of ingest order"


def test_poller_reads_every_event_of_the_global_feed_across_partitions_exactly_once(key_prefix):
    config = make_config(
        redis_url=TEST_REDIS_URL,
        redis_key_prefix=key_prefix,
        redis_partitions="4",
        auth_mode="token",
        auth_tokens=TOKENS,
    )
    store = open_store(config)
    seen = follow_while_writing(config, store, GLOBAL_FEED, ADMIN, everyone=True)
    partitions = {store.events.split(store.events.seq_of(message_id))[0] for message_id in seen}
    assert len(partitions) > 1, "the seven tenants' events were all in one partition"
