"""Feeds of a store split into partitions (4, on the test Redis): the global and event-type
feeds merge every partition; their page links carry positions, entry ids work as markers."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import pytest

from feeds.app import create_app
from tests.conftest import TEST_REDIS_URL, make_config
from tests.feeds_support import atom_ids, links, tenant_message
from yagi_meter import atom
from yagi_meter.ingest.ingestor import Ingestor, Summary
from yagi_meter.notification import CONFLICT_NAMESPACE, parse
from yagi_meter.store import events as events_module
from yagi_meter.store import open_store
from yagi_meter.store.keys import Keys
from yagi_meter.store.pages import BACKWARD, FORWARD, HEAD, LAST, PageQuery

pytestmark = pytest.mark.integration

TENANTS = [f"tenant-{n}" for n in range(8)]


@pytest.fixture
def partitioned(key_prefix):
    """A store of 4 partitions holding 60 events of 8 tenants, written in small batches."""
    config = make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, redis_partitions="4")
    store = open_store(config)
    ingestor = Ingestor(store, config)
    written = []
    for start in range(0, 60, 3):
        batch = [tenant_message(TENANTS[n % 8], n) for n in range(start, start + 3)]
        ingestor.ingest([message for _, message in batch])
        written += [message_id for message_id, _ in batch]
    return store, create_app(config, store).test_client(), written  # written: in arrival order


def path_of(href: str) -> str:
    parts = urlsplit(href)
    return f"{parts.path}?{parts.query}"


def test_the_global_feed_merges_every_partition_newest_first(partitioned):
    store, client, written = partitioned
    assert (
        len(
            {
                store.events.split(store.events.seq_of(m))[0]
                for m in atom_ids(client.get("/events?limit=100").data)
            }
        )
        > 1
    )
    everything = atom_ids(client.get("/events?limit=100").data)
    # In the order the events arrived, newest first, each once: a batch's events too,
    # though each partition's part of a batch is written by a call of its own.
    assert everything == written[::-1]
    assert atom_ids(client.get("/events?limit=1").data) == everything[:1]
    # Following next links, 7 at a time, gives the same list, each entry once.
    paged, url = [], "/events?limit=7"
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.data
        paged += atom_ids(page.data)
        href = links(page.data).get("next")
        url = path_of(href) if href else None
    assert paged == everything


def test_an_entry_id_is_a_marker_of_the_merged_feeds(partitioned):
    _, client, _ = partitioned
    everything = atom_ids(client.get("/events?limit=100").data)  # newest first
    for i in (0, 5, 17, 30, 44, 59):
        marker = quote(everything[i])
        older = atom_ids(client.get(f"/events?marker={marker}&direction=backward&limit=5").data)
        assert older == everything[i + 1 : i + 6]
        newer = atom_ids(client.get(f"/events?marker={marker}&direction=forward&limit=5").data)
        assert newer == everything[max(0, i - 5) : i]  # a page lists newest first


def test_merge_orders_grow_with_each_partitions_seqs_whatever_the_writers_clocks(
    key_prefix, redis_server, monkeypatch
):
    """Two writers, one's clock 5 s behind, and batches within one ms: each partition's
    merge orders still grow with its seqs (ingest.lua), so an entry-id marker cuts every
    partition where the merge puts it (cut.lua's binary search relies on it)."""
    config = store_config(key_prefix)
    ahead, behind = Ingestor(open_store(config), config), Ingestor(open_store(config), config)
    now = time.time
    for start in range(0, 48, 8):  # each batch: one event of each tenant
        writer, skew = (ahead, 0.0) if start % 16 == 0 else (behind, 5.0)
        monkeypatch.setattr(events_module.time, "time", lambda skew=skew: now() - skew)
        writer.ingest([tenant_message(TENANTS[n % 8], n)[1] for n in range(start, start + 8)])
    monkeypatch.undo()
    store = open_store(config)
    for part in Keys.partitions(config.redis.key_prefix, 4):
        entries = redis_server.xrange(part.events)
        orders = [int(fields[b"o"]) for _, fields in entries]
        assert len(orders) > 1 and orders == sorted(set(orders)), part.events
    client = create_app(config, store).test_client()
    everything = atom_ids(client.get("/events?limit=100").data)
    assert len(everything) == 48
    for i in range(48):
        marker = quote(everything[i])
        older = atom_ids(client.get(f"/events?marker={marker}&direction=backward&limit=4").data)
        assert older == everything[i + 1 : i + 5]
        newer = atom_ids(client.get(f"/events?marker={marker}&direction=forward&limit=4").data)
        assert newer == everything[max(0, i - 4) : i]


def test_a_writer_whose_clock_is_ahead_does_not_put_its_events_ahead(key_prefix, monkeypatch):
    """No merge order is more than 100 ms past the master's clock: a listener 5 s ahead
    writes a batch, one on time writes the next 0.2 s later; the global feed, newest
    first, lists the second batch first (as they arrived), not the first for 5 s.
    (The first batch's events, each partition's call moved to its own ms, keep their
    arrival order only within each partition.)"""
    config = store_config(key_prefix)
    ahead, on_time = Ingestor(open_store(config), config), Ingestor(open_store(config), config)
    now = time.time
    monkeypatch.setattr(events_module.time, "time", lambda: now() + 5.0)
    first = [tenant_message(TENANTS[n % 8], n) for n in range(8)]
    ahead.ingest([message for _, message in first])
    monkeypatch.undo()
    time.sleep(0.2)
    second = [tenant_message(TENANTS[n % 8], n) for n in range(8, 16)]
    on_time.ingest([message for _, message in second])
    client = create_app(config, open_store(config)).test_client()
    listed = atom_ids(client.get("/events?limit=100").data)
    assert listed[:8] == [message_id for message_id, _ in second][::-1]
    assert sorted(listed[8:]) == sorted(message_id for message_id, _ in first)


def test_a_message_id_reused_by_tenants_of_other_partitions_is_kept_as_a_conflicting_copy(key_prefix):
    """30 bodies of 8 tenants (in 4 partitions) share 3 message ids, in batches of 4 (so
    some reuses meet in one batch): each body is stored once, the first under its id and
    every later one as a conflicting copy, as on one partition; the merged feed lists
    30 distinct entry ids; the same messages again change nothing."""
    config = store_config(key_prefix)
    store = open_store(config)
    ingestor = Ingestor(store, config)
    shared = [str(uuid.UUID(int=n + 1)) for n in range(3)]
    messages = [
        tenant_message(
            TENANTS[n % 8], n, timestamp=f"2017-07-06 16:58:{n:02d}.000000", message_id=shared[n % 3]
        )[1]
        for n in range(30)
    ]
    assert (
        len({store.events.partition_of(parse(m.body, received_at=datetime.now(UTC))) for m in messages}) > 1
    )
    expected, seen = [], set()
    for message in messages:  # the first body of an id keeps it, each later one gets a copy's
        event = parse(message.body, received_at=datetime.now(UTC))
        copy = str(uuid.uuid5(CONFLICT_NAMESPACE, f"{event.message_id}\n{event.digest}"))
        expected.append(copy if event.message_id in seen else event.message_id)
        seen.add(event.message_id)
    total = Summary()
    for start in range(0, 30, 4):
        total.add(ingestor.ingest(messages[start : start + 4]))
    assert (total.stored, total.conflicts, total.duplicates) == (3, 27, 0)
    assert store.events.count() == 30
    client = create_app(config, store).test_client()
    listed = atom_ids(client.get("/events?limit=100").data)
    assert sorted(listed) == sorted(atom.entry_uuid(message_id) for message_id in expected)
    again = Summary()
    for start in range(0, 30, 7):
        again.add(ingestor.ingest(messages[start : start + 7]))
    assert (again.stored, again.conflicts, again.duplicates) == (0, 0, 30)
    assert store.events.count() == 30


def test_a_marker_not_in_the_feed_or_from_a_lost_store_is_refused(partitioned, redis_server, key_prefix):
    store, client, _ = partitioned
    everything = atom_ids(client.get("/events?limit=100").data)
    typed = f"/event_types/{store.events.get(everything[0]).event_type}/events"
    of_type = atom_ids(client.get(typed + "?limit=100").data)
    assert of_type and client.get(f"{typed}?marker={quote(of_type[0])}&direction=backward").status_code == 200
    other = next(m for m in everything if m not in of_type)
    assert client.get(f"{typed}?marker={quote(other)}&direction=backward").status_code == 400
    position = links(client.get("/events?limit=5").data)["next"]
    assert client.get(path_of(position)).status_code == 200
    for key in redis_server.scan_iter(match=f"{key_prefix}*"):  # Redis lost everything
        redis_server.delete(key)
    Ingestor(store, store_config(key_prefix)).ingest([tenant_message(t, 1)[1] for t in TENANTS])
    assert client.get(path_of(position)).status_code == 400


def store_config(key_prefix):
    return make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, redis_partitions="4")


def test_plain_stream_reads_give_what_page_lua_gives(partitioned, key_prefix):
    """A merged read of the events stream from its head, its start or forward from a bound
    is plain commands in a MULTI (pages.py ``_chunks``): the same chunk as page.lua's."""
    store, _, _ = partitioned
    pages = store.pages
    index = pages.everything()
    empty = open_store(
        make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix + "empty:", redis_partitions="4")
    ).pages
    reads = []
    for p in range(4):
        newest = pages.state(replace(index, merged=(), key=store.events.parts[p].events, partition=p)).newest
        for limit in (1, 5, 100):
            reads += [(p, PageQuery(HEAD, limit=limit), None), (p, PageQuery(LAST, limit=limit), None)]
            for bound in (0, 3, newest - limit, newest - 1, newest, newest + 5):
                reads.append((p, PageQuery(FORWARD, limit=limit), max(bound, 0)))
    plain = pages._chunks(index, PageQuery(), reads)
    assert all(pages._plain(index, query, bound) for _, query, bound in reads)
    lua = [
        pages._chunk(p, PageQuery(), reply)
        for (p, _, _), reply in zip(
            reads,
            pages._run_all([pages._call(p, index, query, None, bound) for p, query, bound in reads]),
            strict=True,
        )
    ]
    assert len({len(chunk.entries) for chunk in plain}) > 3  # short, full and empty chunks
    for read, mine, theirs in zip(reads, plain, lua, strict=True):
        assert without_clock(mine) == without_clock(theirs), read
    # An empty store: no entries, the end reached, as page.lua says it.
    [chunk] = empty._chunks(empty.everything(), PageQuery(), [(0, PageQuery(HEAD, limit=5), None)])
    assert (chunk.entries, chunk.reached_end, chunk.state.empty) == ([], True, True)
    # Filtered, or backward from a bound, stays in page.lua.
    assert not pages._plain(index, PageQuery(HEAD, event_type="compute.instance.exists"), None)
    assert not pages._plain(index, PageQuery(BACKWARD, limit=5), 10)
    assert not pages._plain(pages.event_type("compute.instance.exists"), PageQuery(HEAD), None)


def without_clock(chunk):
    """A chunk with its state's clock (Redis's TIME when read) zeroed, to compare two reads."""
    return chunk._replace(state=replace(chunk.state, now_ms=0))


def test_a_one_partition_stream_page_from_its_head_or_start_is_page_lua_s_page(key_prefix):
    """The global feed of one partition reads its head and its start the plain way too."""
    config = make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, redis_partitions="1")
    store = open_store(config)
    Ingestor(store, config).ingest([tenant_message(TENANTS[n % 8], n)[1] for n in range(30)])
    pages = store.pages
    index = pages.everything()
    assert not index.merged
    for query in (
        PageQuery(direction, limit=limit) for direction in (HEAD, LAST) for limit in (1, 5, 30, 100)
    ):
        assert pages._plain(index, query, None)
        plain_state, plain_page = pages.read(index, query)
        reply = pages._run("page", *pages._call(0, index, query, None))
        lua_state, lua_page = pages._reply(0, query, reply)
        assert replace(plain_state, now_ms=0) == replace(lua_state, now_ms=0), query
        assert plain_page == lua_page, query
