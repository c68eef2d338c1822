"""Paging on the ingest sequence: head, markers both ways, last, filters, bounded scans."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from feeds.app import create_app
from tests.conftest import TEST_REDIS_URL, make_config
from tests.feeds_support import atom_ids, links, tenant_message

pytestmark = pytest.mark.integration


def fill(ingestor, tenant="alpha", count=12, **kwargs) -> list[str]:
    """Ingest ``count`` events of ``tenant``; their message_ids in ingest order."""
    ids = []
    for number in range(count):
        message_id, message = tenant_message(tenant, number, **kwargs)
        ingestor.ingest([message])
        ids.append(message_id)
    return ids


def path_of(href: str) -> str:
    parts = urlsplit(href)
    return f"{parts.path}?{parts.query}"


def follow(client, start: str, rel: str) -> list[list[str]]:
    """The entry ids of every page reached by following ``rel`` links from ``start``."""
    pages, url = [], start
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.data
        pages.append(atom_ids(response.data))
        href = links(response.data).get(rel)
        # previous links never end (a poller keeps asking): stop at an empty page.
        url = path_of(href) if href and (pages[-1] or rel == "next") else None
        assert len(pages) < 100
    return pages


def test_head_page_is_the_newest_entries_newest_first(client, ingestor):
    ids = fill(ingestor)
    response = client.get("/tenants/alpha/events?limit=5")
    assert atom_ids(response.data) == ids[::-1][:5]
    rels = links(response.data)
    assert set(rels) == {"self", "current", "previous", "next", "last", "hub"}
    assert parse_qs(urlsplit(rels["next"]).query)["marker"] == [f"urn:uuid:{ids[-5]}"]
    assert parse_qs(urlsplit(rels["previous"]).query)["direction"] == ["forward"]


def test_next_links_walk_back_through_every_entry_once(client, ingestor):
    ids = fill(ingestor, count=11)
    pages = follow(client, "/tenants/alpha/events?limit=4", "next")
    assert [len(p) for p in pages] == [4, 4, 3]
    assert [i for page in pages for i in page] == ids[::-1]


def test_last_page_then_previous_links_walk_forward_through_every_entry_once(client, ingestor):
    ids = fill(ingestor, count=11)
    pages = follow(client, "/tenants/alpha/events?limit=4&marker=last&direction=backward", "previous")
    assert pages[0] == ids[:4][::-1]
    assert "next" not in links(client.get("/tenants/alpha/events?limit=4&marker=last").data)
    assert [i for page in pages for i in reversed(page)] == ids


def test_marker_is_excluded_both_ways_and_may_be_bare_or_urn(client, ingestor):
    ids = fill(ingestor, count=9)
    forward = client.get(f"/tenants/alpha/events?marker=urn:uuid:{ids[3]}&direction=forward&limit=3")
    assert atom_ids(forward.data) == [ids[6], ids[5], ids[4]]
    backward = client.get(f"/tenants/alpha/events?marker={ids[3]}&direction=backward&limit=10")
    assert atom_ids(backward.data) == [ids[2], ids[1], ids[0]]
    assert "next" not in links(backward.data)


def test_forward_page_past_the_head_is_empty_and_links_to_itself(client, ingestor):
    ids = fill(ingestor, count=3)
    response = client.get(f"/tenants/alpha/events?marker={ids[-1]}&direction=forward")
    assert atom_ids(response.data) == []
    previous = parse_qs(urlsplit(links(response.data)["previous"]).query)
    assert previous["marker"] == [f"urn:uuid:{ids[-1]}"]


def test_late_notification_with_an_old_timestamp_is_at_the_head(client, ingestor):
    fill(ingestor, count=3, timestamp="2024-01-01T00:00:00Z")
    late = fill(ingestor, count=1, timestamp="2001-01-01T00:00:00Z")
    assert atom_ids(client.get("/tenants/alpha/events?limit=1").data) == late


def test_start_inclusive_end_exclusive_on_notification_time(client, ingestor):
    stamps = ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"]
    ids = [fill(ingestor, count=1, timestamp=stamp)[0] for stamp in stamps]
    response = client.get("/tenants/alpha/events?start=2024-01-02T00:00:00Z&end=2024-01-03")
    assert atom_ids(response.data) == [ids[1]]
    assert client.get("/tenants/alpha/events?start=2024-01-02").status_code == 200
    everything = client.get("/tenants/alpha/events?start=2024-01-01 00:00:00+00:00")
    assert atom_ids(everything.data) == ids[::-1]


def test_event_type_exact_and_pattern_filter_combine_with_paging(client, ingestor):
    ids = fill(ingestor, count=len_samples() * 2)
    types = {i: client.get(f"/events/{i}").data for i in ids}
    wanted = [i for i in ids if b'<title type="text">instance.power_' in types[i]]
    assert wanted
    pages = follow(client, "/tenants/alpha/events?limit=2&event_type=instance.power_*", "next")
    assert [i for page in pages for i in page] == wanted[::-1]
    one_type = client.get("/events?event_type=instance.power_off.end&limit=50")
    assert atom_ids(one_type.data) and all(
        b"instance.power_off.end" in types[i] for i in atom_ids(one_type.data)
    )
    nothing = client.get("/tenants/alpha/events?event_type=no.such.*")
    assert atom_ids(nothing.data) == [] and "next" not in links(nothing.data)


def len_samples() -> int:
    from tests.feeds_support import TENANT_SAMPLES

    return len(TENANT_SAMPLES)


def test_a_filtered_page_examines_at_most_scan_limit_entries_and_continues(key_prefix, store, ingestor):
    config = make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, feeds_scan_limit="5")
    client = create_app(config, store).test_client()
    old = fill(ingestor, count=2, timestamp="2020-01-01T00:00:00Z")
    fill(ingestor, count=12, timestamp="2024-01-01T00:00:00Z")
    head = client.get("/tenants/alpha/events?end=2021-01-01&limit=3")
    assert atom_ids(head.data) == []  # five newest examined, none matched
    assert "next" in links(head.data)
    pages = follow(client, "/tenants/alpha/events?end=2021-01-01&limit=3", "next")
    assert [i for page in pages for i in page] == old[::-1]
    assert len(pages) == 3  # 5 + 5 + 4 entries examined


def test_global_feed_reads_the_stream_and_markers_from_it(client, ingestor):
    alpha = fill(ingestor, "alpha", count=3)
    beta = fill(ingestor, "beta", count=3)
    head = client.get("/events?limit=4")
    assert atom_ids(head.data) == (alpha + beta)[::-1][:4]
    older = client.get(path_of(links(head.data)["next"]))
    assert atom_ids(older.data) == alpha[:2][::-1]
    # One at a time from the head, through every entry, to the end (no next link there).
    seen, url = [], "/events?limit=1"
    while url:
        page = client.get(url)
        seen += atom_ids(page.data)
        url = path_of(links(page.data)["next"]) if "next" in links(page.data) else None
    assert seen == (alpha + beta)[::-1]


def test_tenant_marker_from_another_feed_is_unknown(client, ingestor):
    fill(ingestor, "alpha", count=2)
    beta = fill(ingestor, "beta", count=1)
    response = client.get(f"/tenants/alpha/events?marker={beta[0]}&direction=forward")
    assert response.status_code == 400
    assert b"unknown marker" in response.data
