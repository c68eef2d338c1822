"""Tenant, user and resource per OpenStack service, and the [notifications] mapping rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from unittest.mock import ANY

import pytest

from tests.conftest import ROOT, as_sent, load_sample, make_config, sample_paths
from yagi_meter.errors import BadNotification, ConfigError
from yagi_meter.notification import Event, parse
from yagi_meter.ownership import MappingRule, find_service, parse_mapping

FIXTURES = ROOT / "tests" / "fixtures" / "notifications"
TENANT = "b1a0f1d4e2c34e5c9a8b7c6d5e4f3a21"
USER = "9e1d2c3b4a5f4e3d8c7b6a5f4e3d2c10"
ADMIN_PROJECT = "a00000000000400080000000000000ad"
ADMIN_USER = "adm1n000000040008000000000000001"

# fixture file -> (service, tenant_id, user_id, resource_id)
EXPECTED = {
    "nova-compute.instance.create.end": ("nova", TENANT, USER, "5e9f8a7b-6c5d-4e3f-8a1b-2c3d4e5f6a70"),
    "glance-image.upload": ("glance", TENANT, USER, "7c1e2f3a-0000-4000-8000-000000000001"),
    "cinder-volume.create.end": ("cinder", TENANT, USER, "3f2e1d0c-aaaa-4bbb-8ccc-ddddeeee0001"),
    "cinder-snapshot.create.end": ("cinder", TENANT, USER, "6a5b4c3d-bbbb-4ccc-8ddd-eeeeffff0002"),
    # Old neutron: the tenant only in _context_tenant_id, the network body has none.
    "neutron-network.create.end": ("neutron", TENANT, USER, "1b2c3d4e-cccc-4ddd-8eee-ffff00000003"),
    # An admin created the port for the tenant: the port's own project owns it.
    "neutron-port.create.end": ("neutron", TENANT, ADMIN_USER, "2c3d4e5f-dddd-4eee-8fff-000011110004"),
    # Delete payloads only carry <kind>_id; the tenant comes from the context.
    "neutron-router.delete.end": ("neutron", TENANT, USER, "3d4e5f60-ffff-4000-8111-222233330006"),
    "neutron-floatingip.update.end": ("neutron", TENANT, USER, "4e5f6071-0000-4111-8222-333344440007"),
    "heat-orchestration.stack.create.end": ("heat", TENANT, "demo", "70819203-2222-4333-8444-555566660009"),
    "keystone-identity.project.created": (
        "keystone",
        "c2d3e4f5a6b74c8d9e0f1a2b3c4d5e6f",
        None,
        "c2d3e4f5a6b74c8d9e0f1a2b3c4d5e6f",
    ),
    # CADF: the acting admin's project; the user is not derived from the initiator.
    "keystone-identity.user.created": ("keystone", ADMIN_PROJECT, ANY, "d4e5f6a7b8c94d0e8f1a2b3c4d5e6f70"),
    "swift-objectstore.http.request": ("swift", TENANT, ANY, "backups"),
}


def parse_file(path: Path, rules: tuple[MappingRule, ...] = ()) -> Event:
    return parse(path.read_bytes(), received_at=datetime.now(UTC), rules=rules)


def parse_message(message: dict, rules: tuple[MappingRule, ...] = ()) -> Event:
    return parse(json.dumps(message).encode(), received_at=datetime.now(UTC), rules=rules)


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_every_fixture_has_an_expectation() -> None:
    assert {p.stem for p in FIXTURES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_service_tenant_user_and_resource_are_derived(name: str) -> None:
    event = parse_file(FIXTURES / f"{name}.json")
    assert (event.service, event.tenant_id, event.user_id, event.resource_id) == EXPECTED[name]


def test_legacy_nova_event_keeps_the_context_as_initiator_and_drops_the_token() -> None:
    event = parse_file(FIXTURES / "nova-compute.instance.create.end.json")
    assert (event.initiator_project_id, event.initiator_user_id) == (TENANT, USER)
    assert "_context_auth_token" not in event.notification
    assert "legacy-token" not in event.notification_json
    assert event.notification["_context_request_id"] == "req-4f1b2c3d-1111-2222-3333-444455556666"


def test_admin_acting_on_a_tenant_port_is_the_initiator_not_the_owner() -> None:
    event = parse_file(FIXTURES / "neutron-port.create.end.json")
    assert event.tenant_id == TENANT
    assert event.initiator_project_id == ADMIN_PROJECT


@pytest.mark.parametrize("context_key", ["_context_tenant_id", "_context_project_id", "_context_tenant"])
def test_neutron_delete_takes_the_tenant_from_whichever_context_key_is_sent(context_key: str) -> None:
    message = fixture("neutron-router.delete.end")
    for key in ("_context_tenant_id", "_context_project_id"):
        del message[key]
    message[context_key] = "ffffffffffff4fff8fffffffffffffff"
    event = parse_message(message)
    assert event.tenant_id == "ffffffffffff4fff8fffffffffffffff"
    assert event.resource_id == "3d4e5f60-ffff-4000-8111-222233330006"


@pytest.mark.parametrize("kind", ["network", "subnet", "port", "security_group", "floatingip"])
def test_neutron_delete_payload_names_the_resource_by_kind_id(kind: str) -> None:
    message = {**fixture("neutron-router.delete.end"), "event_type": f"{kind}.delete.end"}
    message["payload"] = {f"{kind}_id": f"{kind}-uuid"}
    event = parse_message(message)
    assert (event.service, event.tenant_id, event.resource_id) == ("neutron", TENANT, f"{kind}-uuid")


def test_heat_prefers_an_explicit_stack_id_over_the_arn() -> None:
    message = fixture("heat-orchestration.stack.create.end")
    message["payload"]["stack_id"] = "explicit-stack-id"
    assert parse_message(message).resource_id == "explicit-stack-id"


def test_a_tenant_id_xml_cannot_carry_is_rejected_whichever_service_sent_it() -> None:
    message = fixture("neutron-router.delete.end")
    message["_context_project_id"] = "bad\x07tenant"
    with pytest.raises(BadNotification, match="tenant_id has characters XML cannot carry"):
        parse_message(message)


@pytest.mark.parametrize(
    ("event_type", "publisher_id", "service"),
    [
        ("compute.instance.exists", "compute.node-1", "nova"),
        ("instance.create.end", "nova-compute:node-1", "nova"),
        ("image.delete", "image.localhost", "glance"),
        ("backup.create.end", "volume.host", "cinder"),
        ("orchestration.stack.delete.end", "orchestration.host", "heat"),
        ("identity.role_assignment.created", "identity.host", "keystone"),
        ("share.create.end", "manila-share:host1", "manila"),
        ("dns.zone.create", "designate.central", "designate"),
        ("mystery", "", "unknown"),
    ],
)
def test_service_comes_from_the_event_type_else_the_publisher(
    event_type: str, publisher_id: str, service: str
) -> None:
    assert find_service(event_type, publisher_id) == service


# -- [notifications] mapping -------------------------------------------------


def test_mapping_parses_rules_and_skips_comments_and_blank_lines() -> None:
    rules = parse_mapping(
        """
        # manila shares
        manila.share.* = tenant:payload.project_id resource:payload.share_id

        share.* = user:payload.user
        """
    )
    assert rules == (
        MappingRule(
            "manila.share.*", {"tenant": ("payload", "project_id"), "resource": ("payload", "share_id")}
        ),
        MappingRule("share.*", {"user": ("payload", "user")}),
    )


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("share.create.end tenant:payload.project_id", "expected '<event_type pattern> = field:path"),
        ("= tenant:payload.project_id", "expected '<event_type pattern> = field:path"),
        ("share.* = owner:payload.project_id", "expected tenant:, user: or resource:<path>, got 'owner:"),
        ("share.* = tenant:", "got 'tenant:'"),
        ("share.* = tenant", "got 'tenant'"),
        ("share.* =   ", "rule for 'share.*' names no field"),
    ],
)
def test_bad_mapping_is_rejected_naming_the_bad_part(text: str, complaint: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_mapping(text)
    assert complaint in str(caught.value)


def test_bad_mapping_in_the_configuration_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^\[notifications\] mapping: "):
        make_config(notifications_mapping="share.* = owner:payload.x")


def test_mapping_adds_ownership_for_a_service_without_a_built_in_rule() -> None:
    message = {
        "message_id": "m-share-1",
        "event_type": "share.create.end",
        "publisher_id": "share.host1@generic",
        "payload": {"project_id": "share-project", "share_id": "share-1", "id": "other", "user": "u-7"},
    }
    built_in = parse_message(message)
    assert (built_in.tenant_id, built_in.resource_id, built_in.user_id) == ("share-project", "other", None)
    rules = parse_mapping("share.* = resource:payload.share_id user:payload.user")
    mapped = parse_message(message, rules)
    assert (mapped.tenant_id, mapped.resource_id, mapped.user_id) == ("share-project", "share-1", "u-7")


def test_mapping_rule_overrides_the_built_in_rule_for_matching_types_only() -> None:
    rules = parse_mapping("compute.instance.create.* = tenant:_context_tenant resource:payload.instance_type")
    created = parse_file(FIXTURES / "nova-compute.instance.create.end.json", rules)
    assert (created.tenant_id, created.resource_id) == (TENANT, "m1.small")
    assert created.user_id == USER  # fields the rule does not name keep the built-in value
    other = parse_file(FIXTURES / "cinder-volume.create.end.json", rules)
    assert other.resource_id == "3f2e1d0c-aaaa-4bbb-8ccc-ddddeeee0001"


def test_mapping_paths_go_through_versioned_nova_object_data() -> None:
    sample = as_sent(load_sample(next(p for p in sample_paths() if p.name == "instance-create-end.json")))
    rules = parse_mapping("instance.* = resource:payload.flavor.flavorid user:payload.action_initiator_user")
    event = parse_message(sample, rules)
    assert event.resource_id == "a22d5517-147c-4147-a0d1-e698df5cd4e3"
    assert event.user_id == "fake"
    assert event.tenant_id == "6f70656e737461636b20342065766572"


def test_first_matching_rule_wins() -> None:
    rules = parse_mapping("volume.* = resource:payload.display_name\nvolume.create.* = resource:payload.host")
    event = parse_file(FIXTURES / "cinder-volume.create.end.json", rules)
    assert event.resource_id == "data"
