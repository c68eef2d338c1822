"""The derived user on the real Redis: an Atom category on every entry, and the user_id filter."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import pytest
from lxml import etree

from feeds.app import create_app
from tests.conftest import ROOT, TEST_REDIS_URL, make_config
from tests.feeds_support import ATOM_NS, SAMPLE_INSTANCE, atom_ids, links, tenant_message
from tests.integration.test_feeds_paging import follow, path_of
from yagi_meter.ingest.ingestor import Message
from yagi_meter.store import codec

pytestmark = pytest.mark.integration

FIXTURES = ROOT / "tests" / "fixtures" / "notifications"
ADMIN = {"X-Auth-Token": "admin-token"}


def user_message(tenant: str, user: str, number: int = 0) -> tuple[str, Message]:
    """A real versioned instance sample of ``tenant``, its owner ``user``."""
    message_id, message = tenant_message(tenant, number)
    body = json.loads(message.body)
    body["payload"]["nova_object.data"]["user_id"] = user
    return message_id, Message(json.dumps(body).encode(), message.source)


def fill(ingestor, owners: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """Ingest one event per (tenant, user), in order: (message_id, tenant, user) each."""
    stored = []
    for number, (tenant, user) in enumerate(owners):
        message_id, message = user_message(tenant, user, number)
        assert ingestor.ingest([message]).stored == 1
        stored.append((message_id, tenant, user))
    return stored


def categories(document: bytes) -> dict[str, dict[str, str]]:
    """message_id -> {label: term} of every entry of a feed."""
    root = etree.fromstring(document)
    found = {}
    for entry in root.iter(f"{{{ATOM_NS}}}entry"):
        message_id = entry.findtext(f"{{{ATOM_NS}}}id").removeprefix("urn:uuid:")
        found[message_id] = {c.get("label"): c.get("term") for c in entry.iter(f"{{{ATOM_NS}}}category")}
    return found


def newest_first(stored, tenant=None, user=None) -> list[str]:
    return [m for m, t, u in reversed(stored) if (tenant in (None, t)) and (user in (None, u))]


# -- the category --------------------------------------------------------------


def test_every_entry_names_its_user_as_a_category_with_the_scheme(client, ingestor):
    stored = fill(ingestor, [("alpha", "u-1"), ("alpha", "u-2")])
    response = client.get("/tenants/alpha/events")
    assert categories(response.data) == {
        message_id: {
            "event_type": categories(client.get(f"/events/{message_id}").data)[message_id]["event_type"],
            "service": "nova",
            "tenant": "alpha",
            "user": user,
            "resource": SAMPLE_INSTANCE,
        }
        for message_id, _, user in stored
    }
    root = etree.fromstring(response.data)
    schemes = {c.get("scheme") for c in root.iter(f"{{{ATOM_NS}}}category") if c.get("label") == "user"}
    assert schemes == {"urn:yagi-meter:user"}


@pytest.mark.parametrize(
    ("fixture", "user"),
    [
        # heat: the acting user's id from the context, never the payload's user name.
        ("heat/orchestration.stack.create.end", "9e1d2c3b4a5f4e3d8c7b6a5f4e3d2c10"),
        # keystone CADF: the initiator.
        ("keystone/identity.role_assignment.created", "adm1n000000040008000000000000001"),
        # swift, anonymous: no user, so no category.
        ("swift/objectstore.http.request-anonymous", None),
    ],
)
def test_the_category_is_the_derived_user_of_each_service(client, ingestor, fixture, user):
    body = (FIXTURES / f"{fixture}.json").read_bytes()
    message_id = json.loads(body)["message_id"]
    assert ingestor.ingest([Message(body, fixture)]).stored == 1
    terms = categories(client.get(f"/events/{message_id}").data)[message_id]
    assert terms.get("user") == user


# -- the filter ------------------------------------------------------------------

OWNERS = [
    ("alpha", "u-1"),
    ("alpha", "u-2"),
    ("beta", "u-1"),
    ("alpha", "u-1"),
    ("beta", "u-2"),
    ("alpha", "u-1"),
]


def test_user_id_filters_tenant_resource_global_and_event_type_feeds(client, ingestor):
    stored = fill(ingestor, OWNERS)
    tenant = client.get("/tenants/alpha/events?user_id=u-1")
    assert atom_ids(tenant.data) == newest_first(stored, "alpha", "u-1")
    resource = client.get(f"/tenants/alpha/resources/{SAMPLE_INSTANCE}/events?user_id=u-2")
    assert atom_ids(resource.data) == newest_first(stored, "alpha", "u-2")
    everything = client.get("/events?user_id=u-1")
    assert atom_ids(everything.data) == newest_first(stored, user="u-1")
    types = {m: terms["event_type"] for m, terms in categories(client.get("/events").data).items()}
    first_type = types[stored[0][0]]
    for user in ("u-1", "u-2"):
        expected = [m for m in newest_first(stored, user=user) if types[m] == first_type]
        # The event type's own feed, and the global feed narrowed to the type (read from its index).
        for path in (
            f"/event_types/{first_type}/events?user_id={user}",
            f"/events?event_type={first_type}&user_id={user}",
        ):
            assert atom_ids(client.get(path).data) == expected, path
    nobody = client.get("/tenants/alpha/events?user_id=nobody")
    assert nobody.status_code == 200 and atom_ids(nobody.data) == []


def test_user_id_combines_with_event_type_globs_and_time_windows(client, ingestor):
    stored = fill(ingestor, OWNERS)
    both = client.get(
        "/tenants/alpha/events?user_id=u-1&event_type=instance.*&start=2017-07-06&end=2017-07-07"
    )
    assert atom_ids(both.data) == newest_first(stored, "alpha", "u-1")
    late = client.get("/tenants/alpha/events?user_id=u-1&start=2018-01-01")
    assert atom_ids(late.data) == []


def test_the_filter_stays_in_every_link_so_paging_stays_filtered(client, ingestor):
    stored = fill(ingestor, OWNERS * 2)
    wanted = newest_first(stored, "alpha", "u-1")
    pages = follow(client, "/tenants/alpha/events?limit=2&user_id=u-1", "next")
    assert [i for page in pages for i in page] == wanted
    rels = links(client.get("/tenants/alpha/events?limit=2&user_id=u-1").data)
    assert all("user_id=u-1" in rels[rel] for rel in ("self", "current", "previous", "next", "last"))
    forward = follow(
        client, "/tenants/alpha/events?limit=2&user_id=u-1&marker=last&direction=backward", "previous"
    )
    assert [i for page in forward for i in reversed(page)] == wanted[::-1]


def test_a_user_filtered_page_examines_at_most_scan_limit_entries(key_prefix, store, ingestor):
    config = make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, feeds_scan_limit="5")
    client = create_app(config, store).test_client()
    wanted = fill(ingestor, [("alpha", "rare")] * 2)
    fill(ingestor, [("alpha", "common")] * 12)
    head = client.get("/tenants/alpha/events?user_id=rare&limit=3")
    assert atom_ids(head.data) == []  # the five newest examined, none matched
    assert "next" in links(head.data)
    pages = follow(client, "/tenants/alpha/events?user_id=rare&limit=3", "next")
    assert [i for page in pages for i in page] == [m for m, _, _ in reversed(wanted)]
    assert len(pages) == 3  # 5 + 5 + 4 entries examined


def test_events_stored_before_the_user_was_kept_beside_them_match_no_user(
    client, ingestor, store, keys, redis_server
):
    [(new_id, _, _)] = fill(ingestor, [("alpha", "u-1")])
    # An entry as ingest.lua wrote it before: no "u" field (same body, same indexes).
    old_id = str(uuid.uuid4())
    old = replace(store.events.get(new_id), message_id=old_id)
    k, r = keys, redis_server
    seq = r.incr(k.seq)
    r.xadd(k.events, {"t": 0, "e": old.event_type, "m": old_id, "d": codec.encode(old, True)}, id=f"{seq}-0")
    r.hset(k.ids, old_id, f"{seq} {old.digest}")
    r.zadd(k.by_time, {seq: int(old.timestamp.timestamp() * 1000)})
    r.zadd(k.tenant("alpha"), {seq: seq})
    assert atom_ids(client.get("/tenants/alpha/events").data) == [old_id, new_id]
    assert atom_ids(client.get("/tenants/alpha/events?user_id=u-1").data) == [new_id]
    # Its notification time is in by_time (no "n" field either): start/end still select it.
    day = old.timestamp.date()
    assert old_id in atom_ids(client.get(f"/tenants/alpha/events?start={day}").data)
    assert old_id not in atom_ids(client.get(f"/tenants/alpha/events?end={day}").data)


def test_a_tenant_filters_its_own_feed_by_user_and_not_the_global_one(token_client, ingestor):
    stored = fill(ingestor, OWNERS)
    own = token_client.get("/tenants/alpha/events?user_id=u-1", headers={"X-Auth-Token": "alpha-token"})
    assert atom_ids(own.data) == newest_first(stored, "alpha", "u-1")
    other = token_client.get("/tenants/beta/events?user_id=u-1", headers={"X-Auth-Token": "alpha-token"})
    assert other.status_code == 403
    assert token_client.get("/events?user_id=u-1", headers={"X-Auth-Token": "alpha-token"}).status_code == 403
    assert token_client.get("/events?user_id=u-1", headers=ADMIN).status_code == 200


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("user_id=", b"user_id is empty"),
        ("user_id=%20%20", b"user_id is empty"),
        ("user_id=" + "u" * 256, b"user_id is longer than 255 characters"),
        ("user_id=a%07b", b"user_id has control characters"),
        ("user_id=a%0Ab", b"user_id has control characters"),
    ],
)
def test_a_bad_user_id_is_a_400_with_a_one_line_reason(client, ingestor, query, reason):
    fill(ingestor, [("alpha", "u-1")])
    for path in ("/tenants/alpha/events", "/events", f"/tenants/alpha/resources/{SAMPLE_INSTANCE}/events"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400, path
        assert reason in response.data
        assert response.data.count(b"\n") == 1


def test_a_user_id_of_255_characters_is_a_valid_filter(client, ingestor):
    stored = fill(ingestor, [("alpha", "u" * 255), ("alpha", "u-1")])
    response = client.get("/tenants/alpha/events?user_id=" + "u" * 255)
    assert atom_ids(response.data) == [stored[0][0]]
    assert path_of(links(response.data)["self"]).count("u" * 255) == 1
