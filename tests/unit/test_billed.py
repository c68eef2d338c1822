"""[notifications] billed_project_key: a resource one project owns, billed to another."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.conftest import ROOT, as_sent, load_sample, make_config, sample_paths
from yagi_meter.errors import BadNotification, ConfigError
from yagi_meter.notification import Event, parse
from yagi_meter.ownership import Billing
from yagi_meter.store import codec
from yagi_meter.websub.topics import TopicKind, topics_of

BILLED = ROOT / "tests" / "fixtures" / "notifications" / "nova" / "compute.instance.create.end-billed.json"
TENANT_ID = "b1a0f1d4e2c34e5c9a8b7c6d5e4f3a21"  # the end user's project, in the VM's metadata
SERVICE_PROJECT = "5e7f1a2b3c4d4e5f8a9b0c1d2e3f4a5b"  # the PaaS service's project, which owns the VM
KEY = "billed_project_id"


BILLING = Billing(KEY, frozenset({SERVICE_PROJECT, "6f70656e737461636b20342065766572"}))


def parse_message(message: dict, billing: Billing | None = BILLING) -> Event:
    return parse(json.dumps(message).encode(), received_at=datetime.now(UTC), billing=billing)


def billed_message() -> dict:
    return json.loads(BILLED.read_text())


def test_the_billed_project_is_kept_beside_the_owner() -> None:
    event = parse_message(billed_message())
    assert (event.tenant_id, event.billed_tenant_id) == (SERVICE_PROJECT, TENANT_ID)
    assert event.tenants == (SERVICE_PROJECT, TENANT_ID)
    assert event.derived()["billed_tenant_id"] == TENANT_ID


def test_without_the_option_nothing_is_billed_elsewhere() -> None:
    event = parse_message(billed_message(), billing=None)
    assert (event.tenant_id, event.billed_tenant_id, event.tenants) == (
        SERVICE_PROJECT,
        None,
        (SERVICE_PROJECT,),
    )
    assert "billed_tenant_id" not in event.derived()  # the stored form of other events is unchanged


def test_another_key_or_no_metadata_bills_no_one() -> None:
    assert parse_message(billed_message(), Billing("billing", BILLING.owners)).billed_tenant_id is None
    message = billed_message()
    del message["payload"]["metadata"]
    assert parse_message(message).billed_tenant_id is None


def test_a_project_not_among_the_owners_cannot_bill_another() -> None:
    # Any tenant may set metadata on its own VMs: only the service projects are read.
    event = parse_message(billed_message(), Billing(KEY, frozenset({"some-other-service"})))
    assert (event.tenant_id, event.billed_tenant_id) == (SERVICE_PROJECT, None)
    message = json.loads((ROOT / "tests/fixtures/notifications/cinder-volume.create.end.json").read_text())
    message["payload"]["metadata"] = {KEY: SERVICE_PROJECT}
    assert parse_message(message).billed_tenant_id is None  # its tenant is no owner


def test_a_billed_project_that_is_the_owner_is_no_second_tenant() -> None:
    message = billed_message()
    message["payload"]["metadata"][KEY] = SERVICE_PROJECT
    event = parse_message(message)
    assert (event.billed_tenant_id, event.tenants) == (None, (SERVICE_PROJECT,))


def test_versioned_instance_metadata_names_the_billed_project() -> None:
    sample = as_sent(load_sample(next(p for p in sample_paths() if p.name == "instance-create-end.json")))
    sample["payload"]["nova_object.data"]["metadata"] = {KEY: "end-user-project"}
    event = parse_message(sample)
    assert (event.tenant_id, event.billed_tenant_id) == (
        "6f70656e737461636b20342065766572",
        "end-user-project",
    )


def test_cinder_volume_metadata_as_key_value_pairs_names_it_too() -> None:
    message = json.loads((ROOT / "tests/fixtures/notifications/cinder-volume.create.end.json").read_text())
    message["payload"]["tenant_id"] = SERVICE_PROJECT
    message["payload"]["metadata"] = [
        {"key": "other", "value": "x"},
        {"key": KEY, "value": "end-user-project"},
    ]
    assert parse_message(message).billed_tenant_id == "end-user-project"


def test_a_billed_project_xml_cannot_carry_is_quarantined() -> None:
    message = billed_message()
    message["payload"]["metadata"][KEY] = "bad\x07project"
    with pytest.raises(BadNotification, match="billed_tenant_id has characters XML cannot carry"):
        parse_message(message)


def test_the_stored_form_keeps_the_billed_project() -> None:
    event = parse_message(billed_message())
    decoded = codec.decode(codec.encode(event, compress=True), seq=7, ingested_ms=0)
    assert (decoded.tenant_id, decoded.billed_tenant_id) == (SERVICE_PROJECT, TENANT_ID)


def test_both_tenants_feeds_are_websub_topics_of_the_event() -> None:
    event = parse_message(billed_message())
    owned = {
        (t.kind, t.tenant_id) for t in topics_of(event) if t.kind in (TopicKind.TENANT, TopicKind.RESOURCE)
    }
    assert owned == {
        (k, t) for k in (TopicKind.TENANT, TopicKind.RESOURCE) for t in (SERVICE_PROJECT, TENANT_ID)
    }


@pytest.mark.parametrize("value", ["billed project", "x" * 256])
def test_a_bad_key_is_refused_at_start(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^\[notifications\] billed_project_key: "):
        make_config(notifications_billed_project_key=value, notifications_billed_project_owners="svc")


def test_the_key_and_its_owners_are_read_from_the_configuration() -> None:
    config = make_config(
        notifications_billed_project_key=" billed_project_id ",
        notifications_billed_project_owners="svc1, svc2",
    )
    assert config.notifications.billed_project_key == KEY
    assert config.notifications.billed_project_owners == ("svc1", "svc2")
    assert make_config().notifications.billed_project_key == ""


def test_a_key_without_owners_is_refused_at_start() -> None:
    with pytest.raises(
        ConfigError, match=r"^\[notifications\] billed_project_owners: billed_project_key needs"
    ):
        make_config(notifications_billed_project_key=KEY)
