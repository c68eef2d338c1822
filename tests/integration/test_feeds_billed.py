"""A service-owned VM billed to an end user's project: in both tenants' feeds, on the real Redis."""

from __future__ import annotations

import json

import pytest

from feeds.app import create_app
from tests.conftest import ROOT, TEST_REDIS_URL, make_config
from tests.feeds_support import atom_ids
from yagi_meter import atom
from yagi_meter.ingest.ingestor import Ingestor, Message
from yagi_meter.store import open_store
from yagi_meter.store.partitions import partition_of

pytestmark = pytest.mark.integration

FIXTURE = ROOT / "tests" / "fixtures" / "notifications" / "nova" / "compute.instance.create.end-billed.json"
RESOURCE = "8a9b0c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d"
TOKENS = (
    "admin-token = admin, svc-token = tenant:svc, enduser-token = tenant:enduser, other-token = tenant:other"
)


def billed_message(message_id: str = "b-1", owner: str = "svc") -> Message:
    """The fixture owned by project ``owner``, its metadata billing project "enduser"."""
    message = json.loads(FIXTURE.read_text())
    message["message_id"] = message_id
    message["payload"]["tenant_id"] = message["_context_project_id"] = message["_context_tenant"] = owner
    message["payload"]["metadata"]["billed_project_id"] = "enduser"
    return Message(json.dumps(message).encode(), "test:billed")


def setup(key_prefix, store, key: str):
    config = make_config(
        redis_url=TEST_REDIS_URL,
        redis_key_prefix=key_prefix,
        auth_mode="token",
        auth_tokens=TOKENS,
        notifications_billed_project_key=key,
        notifications_billed_project_owners="svc" if key else "",
    )
    store = open_store(config)  # as every daemon opens it: the billing owners' feeds span partitions
    return Ingestor(store, config), create_app(config, store).test_client()


def get(client, path: str, token: str):
    return client.get(path, headers={"X-Auth-Token": f"{token}-token"})


def test_a_billed_event_is_in_the_owners_and_the_billed_tenants_feeds(key_prefix, store):
    ingestor, client = setup(key_prefix, store, "billed_project_id")
    assert ingestor.ingest([billed_message()]).stored == 1
    for tenant in ("svc", "enduser"):
        assert atom_ids(get(client, f"/tenants/{tenant}/events", tenant).data) == [atom.entry_uuid("b-1")]
        resource = get(client, f"/tenants/{tenant}/resources/{RESOURCE}/events", tenant)
        assert atom_ids(resource.data) == [atom.entry_uuid("b-1")]
        assert get(client, "/events/b-1", tenant).status_code == 200
    assert get(client, "/events/b-1", "other").status_code == 404
    assert get(client, "/tenants/svc/events", "enduser").status_code == 403
    event = store.events.get("b-1")
    assert (event.tenant_id, event.billed_tenant_id) == ("svc", "enduser")
    # The user filter works on the billed tenant's feed like on any other.
    service_user = event.user_id
    assert atom_ids(get(client, f"/tenants/enduser/events?user_id={service_user}", "enduser").data) == [
        atom.entry_uuid("b-1")
    ]


def test_without_the_option_only_the_owner_has_it(key_prefix, store):
    ingestor, client = setup(key_prefix, store, "")
    assert ingestor.ingest([billed_message()]).stored == 1
    assert atom_ids(get(client, "/tenants/svc/events", "svc").data) == [atom.entry_uuid("b-1")]
    assert atom_ids(get(client, "/tenants/enduser/events", "enduser").data) == []
    assert get(client, "/events/b-1", "enduser").status_code == 404
    assert store.events.get("b-1").billed_tenant_id is None


def test_a_tenant_that_is_no_billing_owner_cannot_bill_another(key_prefix, store):
    ingestor, client = setup(key_prefix, store, "billed_project_id")
    assert ingestor.ingest([billed_message("b-2", owner="other")]).stored == 1
    assert atom_ids(get(client, "/tenants/other/events", "other").data) == [atom.entry_uuid("b-2")]
    assert atom_ids(get(client, "/tenants/enduser/events", "enduser").data) == []
    assert get(client, "/events/b-2", "enduser").status_code == 404


def test_on_partitions_a_billed_resource_is_read_where_its_events_are(key_prefix):
    """4 partitions: "svc" and "enduser" are in different ones; the billed event is in
    enduser's, and both tenants' feeds and the audit's lifecycle read of svc's resource find it."""
    config = make_config(
        redis_url=TEST_REDIS_URL,
        redis_key_prefix=key_prefix,
        redis_partitions="4",
        auth_mode="token",
        auth_tokens=TOKENS,
        notifications_billed_project_key="billed_project_id",
        notifications_billed_project_owners="svc",
    )
    store = open_store(config)
    assert Ingestor(store, config).ingest([billed_message()]).stored == 1
    assert (
        store.events.split(store.events.seq_of("b-1"))[0]
        == partition_of("enduser", 4)
        != partition_of("svc", 4)
    )
    client = create_app(config, store).test_client()
    for tenant in ("svc", "enduser"):
        assert atom_ids(get(client, f"/tenants/{tenant}/events", tenant).data) == [atom.entry_uuid("b-1")]
        resource = get(client, f"/tenants/{tenant}/resources/{RESOURCE}/events", tenant)
        assert atom_ids(resource.data) == [atom.entry_uuid("b-1")]
    lifecycle = store.audit.lifecycle("svc", RESOURCE, ["compute.instance.create.end"], 100, 100)
    assert [e.message_id for e in lifecycle.events] == ["b-1"] and lifecycle.complete
