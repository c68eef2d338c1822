"""One page, several representations: Atom, JSON, gzip; ETags per variant, compared weakly;
ids that are real UUIDs whatever the message id; feed ids per filter; one canonical self."""

from __future__ import annotations

import base64
import gzip
import json
from urllib.parse import quote

import feedparser
import pytest
from lxml import etree

from tests.feeds_support import ATOM_NS, assert_valid_atom, atom_ids, links, tenant_message
from yagi_meter import atom

pytestmark = pytest.mark.integration

ADMIN = {"X-Auth-Token": "admin-token"}
ODD_IDS = (
    "req-0a1b2c3d-0000-4000-8000-000000000001",
    "backfill/2017/07/06 #42",
    "0C3A5E7E-5B8A-4A1E-9F4E-1A2B3C4D5E01",
)


@pytest.fixture
def alpha(ingestor) -> list[str]:
    """Five events of tenant alpha, three of them with message ids that are not canonical UUIDs."""
    ids = []
    for number, message_id in enumerate((None, *ODD_IDS, None)):
        message_id, message = tenant_message("alpha", number, message_id=message_id)
        ingestor.ingest([message])
        ids.append(message_id)
    return ids


FEEDS = (
    "/events",
    "/tenants/alpha/events",
    "/tenants/alpha/resources/178b0921-8f85-4257-88b6-2e743b5a975c/events",
    "/event_types/instance.create.end/events",
)


def test_ids_are_real_uuids_and_an_entry_is_still_found_by_its_message_id(token_client, store, alpha):
    document = token_client.get("/tenants/alpha/events", headers=ADMIN).data
    assert_valid_atom(document)
    expected = [atom.entry_uuid(message_id) for message_id in reversed(alpha)]
    assert atom_ids(document) == expected
    assert expected[-1] == alpha[0]  # a canonical UUID is its own id
    for message_id in ODD_IDS:
        response = token_client.get(f"/events/{quote(message_id, safe='')}", headers=ADMIN)
        assert response.status_code == 200, message_id
        assert_valid_atom(response.data)
        root = etree.fromstring(response.data)
        assert root.findtext(f"{{{ATOM_NS}}}id") == f"urn:uuid:{atom.entry_uuid(message_id)}"
        self_link = root.find(f"{{{ATOM_NS}}}link[@rel='self']").get("href")
        assert self_link == f"http://127.0.0.1:8080/events/{quote(message_id, safe='')}"


def test_markers_in_links_page_through_entries_with_any_message_id(token_client, alpha):
    url, seen = "/tenants/alpha/events?marker=last&direction=backward&limit=2", []
    while True:
        document = token_client.get(url, headers=ADMIN).data
        assert_valid_atom(document)
        found = list(reversed(atom_ids(document)))
        if not found:
            break
        seen += found
        url = links(document)["previous"].removeprefix("http://127.0.0.1:8080")
    assert seen == [atom.entry_uuid(m) for m in alpha]
    # Markers written by earlier versions (urn:uuid:<message_id>, any id) still work.
    old = f"/tenants/alpha/events?marker={quote('urn:uuid:' + alpha[1])}&direction=forward"
    assert atom_ids(token_client.get(old, headers=ADMIN).data) == [atom.entry_uuid(m) for m in alpha[:1:-1]]


def test_filtered_views_have_feed_ids_of_their_own(token_client, alpha):
    def feed_id(query: str) -> str:
        document = token_client.get(f"/events{query}", headers=ADMIN).data
        assert_valid_atom(document)
        return etree.fromstring(document).findtext(f"{{{ATOM_NS}}}id")

    plain = feed_id("")
    assert plain == feed_id("?limit=2") == "http://127.0.0.1:8080/events"
    typed = feed_id("?event_type=instance.*")
    dated = feed_id("?start=2017-01-01&end=2018-01-01")
    assert typed == feed_id("?limit=3&event_type=instance.*") == plain + "?event_type=instance.%2A"
    assert len({plain, typed, dated, feed_id("?event_type=instance.create.end")}) == 4


def test_link_header_self_is_the_documents_self_whatever_the_query_order(token_client, alpha):
    marker = quote(f"urn:uuid:{alpha[2]}")
    one = token_client.get(
        f"/events?direction=backward&event_type=instance.*&limit=3&marker={marker}", headers=ADMIN
    )
    two = token_client.get(
        f"/events?marker={marker}&limit=3&direction=backward&event_type=instance.*", headers=ADMIN
    )
    self_one = links(one.data)["self"]
    assert self_one == links(two.data)["self"]
    assert (
        f'<{self_one}>; rel="self"' in one.headers["Link"]
        and f'<{self_one}>; rel="self"' in two.headers["Link"]
    )


def test_feedparser_decodes_the_base64_content_itself(token_client, store, alpha):
    parsed = feedparser.parse(token_client.get("/tenants/alpha/events", headers=ADMIN).data)
    assert not parsed.bozo
    for entry in parsed.entries:
        event = store.events.get(
            next(m for m in alpha if atom.entry_uuid(m) == entry.id.removeprefix("urn:uuid:"))
        )
        assert entry.content[0].type == "application/json"
        assert json.loads(entry.content[0].value) == event.notification
        assert entry.summary == atom.summary(event)


@pytest.mark.parametrize("path", [*FEEDS, "/events/{first}"])
def test_json_is_the_same_page_with_the_same_links_and_an_etag_of_its_own(token_client, store, alpha, path):
    path = path.format(first=alpha[0])
    document = token_client.get(path, headers=ADMIN)
    as_json = token_client.get(path, headers={**ADMIN, "Accept": "application/json"})
    by_param = token_client.get(path + ("&" if "?" in path else "?") + "format=json", headers=ADMIN)
    assert as_json.status_code == by_param.status_code == 200
    assert as_json.headers["Content-Type"] == "application/json"
    assert "Accept" in as_json.headers["Vary"]
    assert as_json.headers["ETag"] != document.headers["ETag"]
    root = etree.fromstring(document.data)
    data = as_json.get_json()
    if path.startswith("/events/"):
        entries, xml_entries = [data["entry"]], [root]
    else:
        feed = data["feed"]
        assert feed["id"] == root.findtext(f"{{{ATOM_NS}}}id")
        assert {link["rel"]: link["href"] for link in feed["link"]} == links(document.data)
        assert [link["href"] for link in by_param.get_json()["feed"]["link"] if link["rel"] != "hub"] == [
            href + "&format=json" for rel, href in links(document.data).items() if rel != "hub"
        ]
        entries, xml_entries = feed["entry"], root.findall(f"{{{ATOM_NS}}}entry")
    assert [e["id"] for e in entries] == [x.findtext(f"{{{ATOM_NS}}}id") for x in xml_entries]
    for entry, xml in zip(entries, xml_entries, strict=True):
        event = store.events.get(entry["event"]["message_id"])
        assert entry["notification"] == event.notification
        assert entry["notification"] == json.loads(base64.b64decode(xml.findtext(f"{{{ATOM_NS}}}content")))
        assert entry["event"]["tenant_id"] == event.tenant_id and entry["event"]["seq"] == event.seq
        assert entry["summary"] == xml.findtext(f"{{{ATOM_NS}}}summary")
    etag = as_json.headers["ETag"]
    again = token_client.get(path, headers={**ADMIN, "Accept": "application/json", "If-None-Match": etag})
    assert again.status_code == 304 and again.headers["ETag"] == etag
    # The Atom ETag does not validate the JSON representation, nor the other way round.
    crossed = token_client.get(
        path, headers={**ADMIN, "Accept": "application/json", "If-None-Match": document.headers["ETag"]}
    )
    assert crossed.status_code == 200


def test_json_markers_page_the_feed(token_client, alpha):
    feed = token_client.get("/tenants/alpha/events?limit=2&format=json", headers=ADMIN).get_json()["feed"]
    older = next(link["href"] for link in feed["link"] if link["rel"] == "next")
    assert f"marker={quote(feed['entry'][-1]['marker'], safe='')}" in older
    rest = token_client.get(older.removeprefix("http://127.0.0.1:8080"), headers=ADMIN).get_json()["feed"]
    assert [e["id"] for e in feed["entry"] + rest["entry"]][:4] == [
        f"urn:uuid:{atom.entry_uuid(m)}" for m in alpha[::-1]
    ][:4]


def test_json_needs_the_same_rights(token_client, alpha):
    beta = {"X-Auth-Token": "beta-token", "Accept": "application/json"}
    assert token_client.get("/tenants/alpha/events", headers=beta).status_code == 403
    assert token_client.get("/events?format=json", headers={"X-Auth-Token": "beta-token"}).status_code == 403
    assert token_client.get(f"/events/{alpha[0]}?format=json", headers=beta).status_code == 404
    assert token_client.get("/tenants/alpha/events?format=json").status_code == 401
    assert token_client.get("/tenants/alpha/events?format=yaml", headers=ADMIN).status_code == 400


@pytest.mark.parametrize("path", [*FEEDS, "/events/{first}"])
def test_weak_and_star_if_none_match_earn_a_304(token_client, alpha, path):
    path = path.format(first=alpha[0])
    etag = token_client.get(path, headers=ADMIN).headers["ETag"]
    for header in (f"W/{etag}", "*", f'"other", W/{etag}'):
        response = token_client.get(path, headers={**ADMIN, "If-None-Match": header})
        assert response.status_code == 304, header
        assert response.headers["ETag"] == etag
    assert token_client.get(path, headers={**ADMIN, "If-None-Match": 'W/"other"'}).status_code == 200


@pytest.mark.parametrize("path", [*FEEDS, "/events/{first}"])
@pytest.mark.parametrize("accept", ["application/atom+xml", "application/json", "text/html"])
def test_gzip_when_accepted_with_an_etag_of_its_own(token_client, alpha, path, accept):
    path = path.format(first=alpha[0])
    plain = token_client.get(path, headers={**ADMIN, "Accept": accept})
    packed = token_client.get(path, headers={**ADMIN, "Accept": accept, "Accept-Encoding": "gzip, deflate"})
    assert "Content-Encoding" not in plain.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed.headers["Vary"] and "Accept-Encoding" in plain.headers["Vary"]
    assert gzip.decompress(packed.data) == plain.data
    assert len(packed.data) < len(plain.data)
    assert packed.headers["ETag"] != plain.headers["ETag"]
    again = token_client.get(
        path,
        headers={
            **ADMIN,
            "Accept": accept,
            "Accept-Encoding": "gzip",
            "If-None-Match": packed.headers["ETag"],
        },
    )
    assert again.status_code == 304 and again.headers["ETag"] == packed.headers["ETag"]
    refused = token_client.get(path, headers={**ADMIN, "Accept": accept, "Accept-Encoding": "gzip;q=0, br"})
    assert "Content-Encoding" not in refused.headers and refused.data == plain.data


def test_a_cached_page_is_compressed_once(token_client, alpha):
    server = token_client.application.extensions["yagi_meter"]
    first = token_client.get("/tenants/alpha/events", headers={**ADMIN, "Accept-Encoding": "gzip"})
    cached = server.pages_cache.get(("/tenants/alpha/events", b"", "atom", "gzip"))
    assert cached.body == first.data and cached.etag == first.headers["ETag"].strip('"')
    second = token_client.get("/tenants/alpha/events", headers={**ADMIN, "Accept-Encoding": "gzip"})
    assert second.data == first.data
    assert server.pages_cache.get(("/tenants/alpha/events", b"", "atom", "gzip")) is cached


def test_the_browser_view_shows_the_notification_as_json(token_client, store, alpha):
    html = token_client.get("/tenants/alpha/events", headers={**ADMIN, "Accept": "text/html"}).data.decode()
    event = store.events.get(alpha[0])
    assert '"event_type": "' + event.event_type + '"' in html  # indented JSON, not Base64
    entry_html = token_client.get(
        f"/events/{alpha[0]}", headers={**ADMIN, "Accept": "text/html"}
    ).data.decode()
    assert '"publisher_id": "' in entry_html and atom.summary(event) in entry_html
    assert base64.b64encode(event.notification_json.encode()).decode()[:40] not in entry_html
