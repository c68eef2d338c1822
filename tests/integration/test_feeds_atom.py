"""Every kind of feed and entry document is valid Atom (RFC 4287 RELAX NG) and feedparser reads it all."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import feedparser
import pytest
from lxml import etree

from tests.conftest import as_sent, load_sample, sample_paths
from tests.feeds_support import ATOM_NS, SAMPLE_INSTANCE, assert_valid_atom, atom_ids, tenant_message
from yagi_meter import atom
from yagi_meter.ingest.ingestor import Message

pytestmark = pytest.mark.integration


@pytest.fixture
def archive(ingestor, token_client):
    """Every sample (alpha owns the tenant ones) plus one with control characters; message_ids."""
    ids = []
    for path in sample_paths():
        text = path.read_text().replace("6f70656e737461636b20342065766572", "alpha")
        message = as_sent(json.loads(text))
        ingestor.ingest([Message(json.dumps(message).encode(), path.name)])
        ids.append(message["message_id"])
    nasty = as_sent(load_sample(sample_paths()[0]))
    nasty["payload"] = {"note": "bell\x07 nul\x00 esc\x1b ff\x0c nonchar\ufffe lone\ud800 <&]]> done"}
    ingestor.ingest([Message(json.dumps(nasty).encode(), "nasty")])
    ids.append(nasty["message_id"])
    # Message ids that are not UUIDs (a replayed file, an old service): entry ids are uuid5s.
    for number, message_id in enumerate(("req-5e0c3b1a-77aa-4f0e-9d1c-2b8a6c3f9e10", "backfill #7")):
        odd = as_sent(load_sample(sample_paths()[number]), message_id=message_id)
        ingestor.ingest([Message(json.dumps(odd).encode(), "replayed")])
        ids.insert(len(ids) - 1, message_id)  # the nasty one stays last
    return ids


ADMIN = {"X-Auth-Token": "admin-token"}


def feed_urls(ids: list[str]) -> list[str]:
    resource = f"/tenants/alpha/resources/{SAMPLE_INSTANCE}/events"
    return [
        "/events?limit=1000",
        "/events?limit=5",
        f"/events?marker={ids[10]}&direction=forward&limit=5",
        f"/events?marker={ids[10]}&direction=backward&limit=5",
        "/events?marker=last&direction=backward&limit=5",
        f"/events?marker={quote(ids[-2], safe='')}&direction=backward&limit=5",  # not a UUID
        "/events?event_type=instance.*&start=2017-01-01&end=2018-01-01",
        "/events?event_type=no.such.type",
        "/tenants/alpha/events?limit=1000",
        resource,
        "/event_types/instance.create.end/events",
    ]


def test_every_feed_kind_is_valid_atom(token_client, archive):
    for url in feed_urls(archive):
        response = token_client.get(url, headers=ADMIN)
        assert response.status_code == 200, (url, response.data)
        assert_valid_atom(response.data)


def test_own_empty_tenant_feed_is_valid_atom(token_client, archive):
    response = token_client.get("/tenants/beta/events", headers={"X-Auth-Token": "beta-token"})
    assert response.status_code == 200 and atom_ids(response.data) == []
    assert_valid_atom(response.data)


def test_every_entry_document_is_valid_atom(token_client, archive):
    for message_id in archive:
        response = token_client.get(f"/events/{quote(message_id)}", headers=ADMIN)
        assert response.status_code == 200
        assert_valid_atom(response.data)
        assert etree.fromstring(response.data).tag == f"{{{ATOM_NS}}}entry"


def test_feedparser_finds_every_field_again(token_client, store, archive):
    document = token_client.get("/events?limit=1000", headers=ADMIN).data
    parsed = feedparser.parse(document)
    assert not parsed.bozo, parsed.get("bozo_exception")
    feed = parsed.feed
    assert feed.id == "http://127.0.0.1:8080/events"
    assert feed.title == "yagi-meter: all events"
    assert feed.updated_parsed
    rels = {link.rel: link.href for link in feed.links}
    assert {"self", "current", "last", "hub", "previous"} <= set(rels)
    assert len(parsed.entries) == len(archive)
    by_entry_id = {f"urn:uuid:{atom.entry_uuid(m)}": m for m in archive}
    for entry in parsed.entries:
        message_id = by_entry_id[entry.id]
        event = store.events.get(message_id)
        assert entry.title == event.event_type
        assert entry.published_parsed and entry.updated_parsed
        assert entry.author == (event.publisher_id or event.service)
        url = f"http://127.0.0.1:8080/events/{quote(message_id, safe='')}"
        assert entry.link == url
        assert {(link.rel, link.href) for link in entry.links} == {("self", url), ("alternate", url)}
        terms = {tag.label: tag.term for tag in entry.tags}
        expected = {"event_type": event.event_type, "service": event.service}
        expected.update({"tenant": event.tenant_id, "user": event.user_id, "resource": event.resource_id})
        assert terms == {k: v for k, v in expected.items() if v}
        assert all(tag.scheme == f"urn:yagi-meter:{tag.label}" for tag in entry.tags)
        assert entry.content[0].type == "application/json"
        assert json.loads(entry.content[0].value) == event.notification


def test_feedparser_reads_an_entry_document(token_client, store, archive):
    parsed = feedparser.parse(token_client.get(f"/events/{archive[-1]}", headers=ADMIN).data)
    assert not parsed.bozo
    entry = parsed.entries[0]
    assert entry.id == f"urn:uuid:{archive[-1]}"
    note = json.loads(entry.content[0].value)["payload"]["note"]
    assert note == "bell\x07 nul\x00 esc\x1b ff\x0c nonchar\ufffe lone\ud800 <&]]> done"


def test_control_characters_stay_escaped_json_inside_the_base64_content(token_client, archive):
    body = token_client.get(f"/events/{archive[-1]}", headers=ADMIN).data
    content = etree.fromstring(body).find(f"{{{ATOM_NS}}}content")  # well-formed
    assert content.get("type") == "application/json"
    notification = base64.b64decode(content.text, validate=True)
    assert b"\\u0007" in notification and b"\\u0000" in notification and b"\x07" not in body


def test_content_is_base64_json_with_a_one_line_summary(token_client, store, archive):
    event = next(e for e in map(store.events.get, archive) if e.tenant_id and e.resource_id)
    root = etree.fromstring(token_client.get(f"/events/{event.message_id}", headers=ADMIN).data)
    content = root.find(f"{{{ATOM_NS}}}content")
    assert json.loads(base64.b64decode(content.text, validate=True)) == event.notification
    summary = root.find(f"{{{ATOM_NS}}}summary")
    assert summary.get("type") == "text"
    expected = f"{event.event_type}, tenant {event.tenant_id}, resource {event.resource_id}"
    assert summary.text == expected and "\n" not in summary.text


def test_tenant_owned_sample_round_trips_through_its_own_feed(token_client, ingestor):
    message_id, message = tenant_message("gamma", 3)
    ingestor.ingest([message])
    document = token_client.get("/tenants/gamma/events", headers=ADMIN).data
    assert_valid_atom(document)
    assert feedparser.parse(document).entries[0].id == f"urn:uuid:{message_id}"
