"""Discovery: the service document at /, and the lists of tenants, resources and event types."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import pytest
from lxml import etree

from tests.atom_rules import APP_NS, assert_valid_service
from tests.feeds_support import assert_valid_atom, links, tenant_message
from yagi_meter.ingest.ingestor import Message
from yagi_meter.store.outbox import OutboxKeys

pytestmark = pytest.mark.integration

A = "{http://www.w3.org/2005/Atom}"
P = f"{{{APP_NS}}}"
D = "{urn:yagi-meter:discovery}"
BASE = "http://127.0.0.1:8080"
ADMIN, ALPHA, BETA = ({"X-Auth-Token": f"{who}-token"} for who in ("admin", "alpha", "beta"))


def local(href: str) -> str:
    """A link of the app as the test client asks for it."""
    assert href.startswith(BASE), href
    parts = urlsplit(href)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def typed(event_type: str, tenant: str, number: int, resource: str = "r-1") -> Message:
    _, message = tenant_message(
        tenant, number, resource_id=resource, timestamp=f"2017-07-06 16:58:{number:02d}"
    )
    body = json.loads(message.body)
    body["event_type"] = event_type
    return Message(json.dumps(body).encode(), message.source)


@pytest.fixture
def archive(ingestor):
    """alpha: 3 events of 2 resources, 2 types; beta: 1 event of its own type."""
    ingestor.ingest(
        [
            typed("compute.instance.create.end", "alpha", 1, "r-1"),
            typed("compute.instance.exists", "alpha", 2, "r-1"),
            typed("compute.instance.exists", "alpha", 3, "r-2"),
            typed("volume.create.end", "beta", 4, "v-1"),
        ]
    )


def entries(document: bytes) -> dict[str, dict]:
    """name -> {events, retained, feed, updated} of a list document (Atom), in order."""
    assert_valid_atom(document)
    found = {}
    for entry in etree.fromstring(document).findall(A + "entry"):
        retained = entry.find(D + "retained")
        [alternate] = [link for link in entry.findall(A + "link") if link.get("rel") == "alternate"]
        found[entry.find(A + "title").text] = {
            "events": int(entry.find(D + "events").text),
            "retained": None if retained is None else int(retained.text),
            "feed": alternate.get("href"),
            "updated": entry.find(A + "updated").text,
        }
    return found


def test_the_service_document_lists_every_feed_an_admin_may_read_each_a_real_feed(client, archive):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/atomsvc+xml"
    assert_valid_service(response.data)
    root = etree.fromstring(response.data)
    hrefs = [c.get("href") for c in root.iter(P + "collection")]
    assert hrefs == [
        f"{BASE}/events",
        f"{BASE}/event_types/compute.instance.create.end/events",
        f"{BASE}/event_types/compute.instance.exists/events",
        f"{BASE}/event_types/volume.create.end/events",
    ]
    for href in hrefs:
        feed = client.get(local(href))
        assert feed.status_code == 200, href
        assert_valid_atom(feed.data)
        assert etree.fromstring(feed.data).find(A + "entry") is not None, href
    related = [link.get("href") for link in root.findall(A + "link")]
    assert related == [f"{BASE}/tenants", f"{BASE}/event_types"]
    assert all(client.get(local(href)).status_code == 200 for href in related)


def test_a_tenant_is_shown_its_own_feed_only(token_client, archive):
    response = token_client.get("/", headers=ALPHA)
    assert response.status_code == 200
    assert_valid_service(response.data)
    root = etree.fromstring(response.data)
    [href] = [c.get("href") for c in root.iter(P + "collection")]
    assert href == f"{BASE}/tenants/alpha/events"
    assert token_client.get(local(href), headers=ALPHA).status_code == 200
    assert b"beta" not in response.data and b"event_types/" not in response.data
    assert token_client.get("/").status_code == 401


def test_tenants_resources_and_types_are_listed_with_their_counts(token_client, archive):
    tenants = entries(token_client.get("/tenants", headers=ADMIN).data)
    assert {name: (v["events"], v["retained"]) for name, v in tenants.items()} == {
        "alpha": (3, 3),
        "beta": (1, 1),
    }
    assert tenants["alpha"]["updated"] == "2017-07-06T16:58:03.000000Z"  # its newest event's time
    resources = entries(token_client.get("/tenants/alpha/resources", headers=ALPHA).data)
    assert {name: v["events"] for name, v in resources.items()} == {"r-1": 2, "r-2": 1}
    types = entries(token_client.get("/event_types", headers=ADMIN).data)
    assert {name: v["events"] for name, v in types.items()} == {
        "compute.instance.create.end": 1,
        "compute.instance.exists": 2,
        "volume.create.end": 1,
    }
    # Each entry's feed is the feed of that name, readable by the same caller.
    for listed, who in ((tenants, ADMIN), (resources, ALPHA), (types, ADMIN)):
        for name, value in listed.items():
            feed = token_client.get(local(value["feed"]), headers=who)
            assert feed.status_code == 200, (name, value["feed"])
            assert_valid_atom(feed.data)


def test_a_tenant_lists_the_types_of_its_own_events_and_nothing_of_others(token_client, archive):
    own = entries(token_client.get("/event_types", headers=ALPHA).data)
    assert {name: v["events"] for name, v in own.items()} == {
        "compute.instance.create.end": 1,
        "compute.instance.exists": 2,
    }
    feed = token_client.get(local(own["compute.instance.exists"]["feed"]), headers=ALPHA)
    assert len(etree.fromstring(feed.data).findall(A + "entry")) == 2
    assert set(entries(token_client.get("/event_types", headers=BETA).data)) == {"volume.create.end"}
    assert token_client.get("/tenants", headers=ALPHA).status_code == 403
    assert token_client.get("/tenants/beta/resources", headers=ALPHA).status_code == 403
    assert token_client.get("/tenants/alpha/resources").status_code == 401


def test_lists_are_paged_by_marker_in_bounded_pages(client, ingestor):
    names = sorted(f"tenant-{n:03d}" for n in range(60))
    ingestor.ingest([tenant_message(name, 0)[1] for name in names])
    seen: list[str] = []
    path = "/tenants?limit=25"
    pages = 0
    while path:
        response = client.get(path)
        assert response.status_code == 200
        listed = entries(response.data)
        assert len(listed) <= 25
        seen += listed
        pages += 1
        following = links(response.data).get("next")
        path = local(following) if following else ""
    assert (seen, pages) == (names, 3)
    assert client.get("/tenants?limit=0").status_code == 400
    assert client.get("/tenants?limit=100000").status_code == 400
    assert client.get("/tenants?start=x").status_code == 400


def test_json_lists_etags_and_304s(client, ingestor, archive):
    response = client.get("/tenants", headers={"Accept": "application/json"})
    assert response.headers["Content-Type"] == "application/json"
    feed = response.get_json()["feed"]
    assert [(e["name"], e["events"], e["retained"]) for e in feed["entry"]] == [
        ("alpha", 3, 3),
        ("beta", 1, 1),
    ]
    assert feed["entry"][0]["feed"] == f"{BASE}/tenants/alpha/events"
    assert feed["entry"][0]["newest"] == "2017-07-06T16:58:03.000000Z"
    etag = response.headers["ETag"]
    assert client.get("/tenants", headers={"Accept": "application/json"}).headers["ETag"] == etag
    by_format = client.get("/tenants?format=json&limit=1").get_json()["feed"]
    assert [link["href"] for link in by_format["link"] if link["rel"] == "next"] == [
        f"{BASE}/tenants?limit=1&format=json&marker=alpha"
    ]
    atom_etag = client.get("/tenants").headers["ETag"]
    assert atom_etag != etag
    again = client.get("/tenants", headers={"If-None-Match": atom_etag})
    assert (again.status_code, again.data) == (304, b"")
    service = client.get("/")
    assert client.get("/", headers={"If-None-Match": service.headers["ETag"]}).status_code == 304
    ingestor.ingest([typed("compute.instance.exists", "alpha", 9)])
    changed = client.get("/tenants", headers={"If-None-Match": atom_etag})
    assert changed.status_code == 200
    assert entries(changed.data)["alpha"]["events"] == 4


def test_counts_are_of_events_ever_stored_and_retained_is_what_retention_kept(
    client, store, archive, redis_server, keys
):
    for name in ("push", "forward"):  # nothing waits for delivery: retention may remove everything
        outbox = OutboxKeys.of(keys, name)
        redis_server.delete(outbox.due, outbox.seqs)
    assert store.events.expire(1, now=time.time() + 2 * 86400) == 4
    tenants = entries(client.get("/tenants").data)
    assert {name: (v["events"], v["retained"]) for name, v in tenants.items()} == {
        "alpha": (3, 0),
        "beta": (1, 0),
    }


@pytest.mark.one_partition
def test_per_event_the_catalog_adds_no_key(store, ingestor, redis_server, key_prefix):
    ingestor.ingest([typed("compute.instance.exists", "alpha", n, "r-1") for n in range(3)])
    before = set(redis_server.scan_iter(match=f"{key_prefix}catalog:*"))
    ingestor.ingest([typed("compute.instance.exists", "alpha", n, "r-1") for n in range(3, 40)])
    assert set(redis_server.scan_iter(match=f"{key_prefix}catalog:*")) == before
    assert len(before) == 8  # 2 global lists, 2 per tenant, each with its stats hash
