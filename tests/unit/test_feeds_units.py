"""Pure parts of the feed server: parameters, links, validators, token table, rendering."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest, Unauthorized

from feeds.auth import TokenTable
from feeds.caching import RenderCache, last_modified
from feeds.paging import feed_id, feed_links, parse_request, self_href
from tests.conftest import make_config
from tests.feeds_support import assert_valid_atom
from yagi_meter import atom
from yagi_meter.errors import ConfigError
from yagi_meter.store.pages import Page
from yagi_meter.supervisor import DAEMONS


def parse(**args: str):
    return parse_request(MultiDict(args), 25, 1000, 10_000)


def test_defaults_are_the_head_page_of_page_size():
    request = parse()
    assert (request.query.direction, request.query.limit, request.query.marker) == ("head", 25, "")


def test_marker_forms():
    assert parse(marker="urn:uuid:abc").query.marker == "abc"
    assert parse(marker="abc", direction="backward").query.direction == "backward"
    assert parse(marker="abc").query.direction == "forward"  # Atom Hopper's default
    assert parse(marker="last", direction="backward").query.direction == "last"


def test_dates_are_iso_8601_naive_means_utc():
    request = parse(start="2024-01-02", end="2024-01-02T00:00:01+00:00")
    assert request.query.start_ms == int(datetime(2024, 1, 2, tzinfo=UTC).timestamp() * 1000)
    assert request.query.end_ms == request.query.start_ms + 1000
    assert parse(start="2024-01-02T01:00:00 01:00").query.start_ms == request.query.start_ms


@pytest.mark.parametrize(
    "args",
    [{"limit": "0"}, {"limit": "1001"}, {"limit": "9" * 20}, {"start": "soon"}, {"marker": "x" * 301}],
)
def test_bad_parameters_raise_bad_request(args):
    with pytest.raises(BadRequest):
        parse(**args)


NEW = "0c3a5e7e-5b8a-4a1e-9f4e-1a2b3c4d5e01"


def test_links_of_a_head_page_name_what_atom_hopper_names():
    request = parse(limit="2", event_type="compute.*")
    page = Page([], first_id=NEW, last_id="req-old", reached_end=False)
    links = dict(
        (link.rel, link.href) for link in feed_links("http://h/events", request, page, "http://h/hub")
    )
    assert links["self"] == links["current"] == "http://h/events?limit=2&event_type=compute.%2A"
    assert (
        links["previous"]
        == f"http://h/events?marker=urn%3Auuid%3A{NEW}&limit=2&direction=forward&event_type=compute.%2A"
    )
    # A message id that is not a UUID is its own marker: its entry id is a uuid5 of it.
    assert links["next"] == "http://h/events?marker=req-old&limit=2&direction=backward&event_type=compute.%2A"
    assert links["last"] == "http://h/events?marker=last&limit=2&direction=backward&event_type=compute.%2A"
    assert links["hub"] == "http://h/hub"


def test_oldest_page_has_no_next_link():
    page = Page([], first_id="a", last_id="b", reached_end=True)
    rels = [link.rel for link in feed_links("http://h/e", parse(), page, "http://h/hub")]
    assert "next" not in rels and "previous" in rels


def test_last_modified_holds_back_a_second_that_is_still_running():
    assert last_modified(10_500, 10_900) == datetime.fromtimestamp(9, UTC)
    assert last_modified(10_500, 11_000) == datetime.fromtimestamp(10, UTC)
    assert last_modified(0, 5) is None


def test_render_cache_keeps_the_most_recently_used():
    cache = RenderCache(2)
    cache.put("a", b"1")
    cache.put("b", b"2")
    cache.get("a")
    cache.put("c", b"3")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"1", None, b"3")


def test_token_table_maps_tokens_to_tenants_or_admin():
    config = make_config(auth_mode="token", auth_tokens="t1 = admin\nt2 = tenant:alpha")
    table = TokenTable(config.auth.tokens)
    assert table("t1").admin and table("t2").tenant_id == "alpha" and not table("t2").admin
    with pytest.raises(Unauthorized):
        table("t3")
    with pytest.raises(Unauthorized):
        table(None)
    assert "t2" not in config.describe()


@pytest.mark.parametrize("tokens", ["", "t1 = root", "t1 admin", "t1 = admin, t1 = tenant:x", "t 1 = admin"])
def test_bad_token_settings_fail_at_start(tokens):
    with pytest.raises(ConfigError, match=r"\[auth\] tokens"):
        make_config(auth_mode="token", auth_tokens=tokens)


def test_empty_feed_document_is_valid_atom():
    meta = atom.FeedMeta(
        "http://h/events", "t", datetime(2024, 1, 1, tzinfo=UTC), (atom.Link("self", "http://h/e"),)
    )
    assert_valid_atom(atom.feed_document(meta, []))


def test_serve_is_one_of_the_daemons_run_starts():
    assert "serve" in DAEMONS


def test_render_cache_keeps_within_its_byte_budget():
    cache = RenderCache(10, max_bytes=10)
    cache.put("a", b"12345")
    cache.put("b", b"123456")
    assert cache.get("a") is None and cache.get("b") == b"123456"
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None and cache.get("b") == b"123456"
    cache.put("b", b"1")
    cache.put("c", b"123456789")
    assert cache.get("b") == b"1" and cache.get("c") == b"123456789"


def test_feed_ids_are_one_per_feed_and_filter_whatever_the_page():
    url = "http://h/events"
    assert feed_id(url, parse()) == feed_id(url, parse(marker=NEW, direction="backward", limit="5")) == url
    filtered = feed_id(url, parse(event_type="compute.*", start="2024-01-01"))
    assert filtered == "http://h/events?start=2024-01-01&event_type=compute.%2A"
    assert filtered == feed_id(url, parse(start="2024-01-01", event_type="compute.*", limit="3"))
    assert feed_id(url, parse(event_type="image.*")) not in (url, filtered)


def test_self_href_is_canonical_whatever_the_order_of_the_query():
    one = parse(event_type="a.*", limit="5", marker=f"urn:uuid:{NEW}", direction="forward")
    two = parse(direction="forward", marker=NEW, limit="5", event_type="a.*")
    assert self_href("http://h/e", one) == self_href("http://h/e", two)
    assert (
        self_href("http://h/e", one)
        == f"http://h/e?marker=urn%3Auuid%3A{NEW}&limit=5&direction=forward&event_type=a.%2A"
    )
    assert self_href("http://h/e", parse(format="json")) == "http://h/e?limit=25&format=json"


def test_entry_ids_are_urn_uuids_of_real_uuids():
    assert atom.entry_uuid(NEW) == NEW
    derived = atom.entry_uuid("req-42")
    assert derived == str(uuid.uuid5(uuid.UUID("9e772dba-b1e1-5374-bd4e-69743dc626ed"), "req-42"))
    assert atom.MESSAGE_ID_NAMESPACE == uuid.uuid5(uuid.NAMESPACE_URL, "urn:yagi-meter:message_id")
    assert atom.entry_uuid(NEW.upper()) != NEW.upper()  # not canonical: derived as well
    assert atom.entry_uuid(derived) == derived
