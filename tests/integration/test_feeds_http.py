"""HTTP behaviour of the feed server: validators and 304s, errors, health, metrics, HTML."""

from __future__ import annotations

import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.http import http_date

from feeds.app import create_app
from tests.conftest import make_config
from tests.feeds_support import all_sample_messages, atom_ids, links, tenant_message
from yagi_meter.store.pages import PageQuery

pytestmark = pytest.mark.integration


@pytest.fixture
def alpha_ids(ingestor) -> list[str]:
    ids = []
    for number in range(5):
        message_id, message = tenant_message("alpha", number)
        ingestor.ingest([message])
        ids.append(message_id)
    return ids


FEEDS = (
    "/events",
    "/tenants/alpha/events",
    f"/tenants/alpha/resources/{'178b0921-8f85-4257-88b6-2e743b5a975c'}/events",
    "/event_types/instance.create.end/events",
)


@pytest.mark.parametrize("path", FEEDS)
def test_every_feed_has_validators_and_hub_and_self_link_headers(client, alpha_ids, path):
    response = client.get(path)
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"] == "application/atom+xml"
    assert response.headers["ETag"].startswith('"')
    assert response.headers["Last-Modified"]
    link = response.headers["Link"]
    assert '<http://127.0.0.1:8080/hub>; rel="hub"' in link
    # One canonical topic URL: the Link header's self is the feed's rel=self.
    assert f'<{links(response.data)["self"]}>; rel="self"' in link
    assert links(response.data)["self"] == f"http://127.0.0.1:8080{path}?limit=25"


@pytest.mark.parametrize("path", FEEDS)
def test_matching_etag_gets_304_and_a_new_event_changes_it(client, ingestor, alpha_ids, path):
    first = client.get(path)
    etag = first.headers["ETag"]
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["ETag"] == etag
    ingestor.ingest([tenant_message("alpha", 0)[1]])
    changed = client.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_if_modified_since_never_hides_an_entry_ingested_in_the_same_second(client, ingestor, alpha_ids):
    first = client.get("/tenants/alpha/events")
    since = first.headers["Last-Modified"]
    ingestor.ingest([tenant_message("alpha", 1)[1]])  # maybe in the same second
    assert client.get("/tenants/alpha/events", headers={"If-Modified-Since": since}).status_code == 200


def test_if_modified_since_after_the_newest_entry_gets_304(client, alpha_ids):
    later = http_date(time.time() + 5)
    assert client.get("/tenants/alpha/events", headers={"If-Modified-Since": later}).status_code == 304


def test_entry_document_has_validators_and_answers_304(client, alpha_ids):
    response = client.get(f"/events/{alpha_ids[0]}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/atom+xml;type=entry"
    etag = response.headers["ETag"]
    assert client.get(f"/events/urn:uuid:{alpha_ids[0]}", headers={"If-None-Match": etag}).status_code == 304
    since = response.headers["Last-Modified"]
    assert client.get(f"/events/{alpha_ids[0]}", headers={"If-Modified-Since": since}).status_code == 304


def test_head_page_is_served_from_the_page_cache(client, alpha_ids):
    first = client.get("/tenants/alpha/events")
    server = client.application.extensions["yagi_meter"]
    cached = server.pages_cache.get(("/tenants/alpha/events", b"", "atom"))
    assert (cached.etag, cached.body) == (first.headers["ETag"].strip('"'), first.data)
    # The cached state is still the feed's: Redis answers with the state only.
    state, page = server.pages.read(server.pages.tenant("alpha"), PageQuery(), cached.version)
    assert page is None and state.version == cached.version
    assert client.get("/tenants/alpha/events").data == first.data


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/tenants/alpha/events?marker=nope&direction=forward", 400, b"unknown marker"),
        ("/tenants/alpha/events?limit=0", 400, b"limit must be from 1 to 1000"),
        ("/tenants/alpha/events?limit=1000000000", 400, b"limit must be"),
        ("/tenants/alpha/events?limit=-3", 400, b"limit must be"),
        ("/tenants/alpha/events?limit=ten", 400, b"limit must be"),
        ("/tenants/alpha/events?limit=%C2%B2", 400, b"limit must be"),  # "²": isdigit() says yes
        ("/tenants/alpha/events?limit=%D9%A1%D9%A2", 400, b"limit must be"),  # Arabic-Indic 12
        ("/events?event_type=" + "*" * 9 + "Z", 400, b"event_type has more than 8"),
        ("/tenants/alpha/events?start=yesterday", 400, b"start is not an ISO 8601 date"),
        ("/tenants/alpha/events?end=2024-13-01", 400, b"end is not an ISO 8601 date"),
        ("/tenants/alpha/events?start=2024-02-01&end=2024-01-01", 400, b"start must be before end"),
        ("/tenants/alpha/events?direction=sideways&marker=x", 400, b"direction must be"),
        ("/tenants/alpha/events?direction=forward", 400, b"direction needs a marker"),
        ("/tenants/alpha/events?colour=red", 400, b"unknown parameter"),
        ("/tenants/nobody/events", 404, b"unknown tenant"),
        ("/tenants/nobody/events?marker=x&direction=forward", 404, b"unknown tenant"),
        ("/tenants/alpha/resources/nothing/events", 404, b"unknown resource"),
        ("/event_types/no.such.type/events", 404, b"unknown event type"),
        ("/events/no-such-message", 404, b"no event no-such-message"),
        ("/nowhere", 404, b"URL was not found"),
    ],
)
def test_bad_requests_get_a_one_line_reason(client, alpha_ids, path, status, reason):
    response = client.get(path)
    assert response.status_code == status
    assert reason in response.data
    assert response.data.count(b"\n") == 1
    assert response.headers["Content-Type"].startswith("text/plain")


def test_wrong_method_is_405_with_allow(client, alpha_ids):
    response = client.post("/events")
    assert response.status_code == 405 and "GET" in response.headers["Allow"]


def test_health_reports_redis(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.data.startswith(b"ok redis")


def test_health_and_feeds_when_redis_is_unreachable(key_prefix):
    config = make_config(redis_url="redis://127.0.0.1:1/0", redis_key_prefix=key_prefix)
    from yagi_meter.store import open_store

    down = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    store = open_store(config, client=down)
    client = create_app(config, store).test_client()
    assert client.get("/health").status_code == 503
    response = client.get("/events")
    assert response.status_code == 503 and response.data == b"store unavailable, try again\n"
    assert b"yagi_redis_up 0.0" in client.get("/metrics").data


def test_metrics_are_read_from_redis(client, ingestor):
    ingestor.ingest(list(all_sample_messages()))
    text = client.get("/metrics").data.decode()
    assert "yagi_redis_up 1.0" in text
    assert "yagi_events 70.0" in text
    assert "yagi_events_ingested_total 70.0" in text
    # A second app (another gunicorn worker) says the same.
    other = create_app(client.application.extensions["yagi_meter"].config)
    assert "yagi_events 70.0" in other.test_client().get("/metrics").data.decode()


def test_browser_gets_html_and_feed_readers_get_atom(client, alpha_ids):
    browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    page = client.get("/tenants/alpha/events", headers={"Accept": browser_accept})
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"<table>" in page.data and b"instance." in page.data
    reader = client.get("/tenants/alpha/events", headers={"Accept": "application/atom+xml"})
    assert reader.headers["Content-Type"] == "application/atom+xml"
    assert atom_ids(reader.data) == alpha_ids[::-1]
    assert client.get("/tenants/alpha/events", headers={"Accept": "*/*"}).data == reader.data
    assert page.headers["ETag"] != reader.headers["ETag"]
    entry = client.get(f"/events/{alpha_ids[0]}", headers={"Accept": browser_accept})
    assert b"<h2>Notification</h2>" in entry.data


def test_stylesheet_is_served_and_referenced(client, alpha_ids):
    feed = client.get("/tenants/alpha/events")
    assert b'<?xml-stylesheet type="text/xsl" href="http://127.0.0.1:8080/static/atom.xsl"?>' in feed.data
    xsl = client.get("/static/atom.xsl")
    assert xsl.status_code == 200 and b"xsl:stylesheet" in xsl.data
    xsl.close()


def test_hub_link_names_the_external_hub_when_configured(key_prefix, store, alpha_ids):
    from tests.conftest import TEST_REDIS_URL

    config = make_config(
        redis_url=TEST_REDIS_URL,
        redis_key_prefix=key_prefix,
        hub_external_url="https://hub.example.net/",
        feeds_base_url="https://feeds.example.net/",
    )
    response = create_app(config, store).test_client().get("/tenants/alpha/events")
    assert '<https://hub.example.net/>; rel="hub"' in response.headers["Link"]
    assert '<https://feeds.example.net/tenants/alpha/events?limit=25>; rel="self"' in response.headers["Link"]
    assert b'<link rel="hub" href="https://hub.example.net/"/>' in response.data
    assert b'href="https://feeds.example.net/events/' in response.data
