"""Tenant, user and resource per OpenStack service, and the [notifications] mapping rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

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
    # The payload's user_id is heat's user *name*: the user is the context's.
    "heat-orchestration.stack.create.end": ("heat", TENANT, USER, "70819203-2222-4333-8444-555566660009"),
    "keystone-identity.project.created": (
        "keystone",
        "c2d3e4f5a6b74c8d9e0f1a2b3c4d5e6f",
        None,
        "c2d3e4f5a6b74c8d9e0f1a2b3c4d5e6f",
    ),
    # CADF: the acting admin's project; the user is the initiator.
    "keystone-identity.user.created": (
        "keystone",
        ADMIN_PROJECT,
        ADMIN_USER,
        "d4e5f6a7b8c94d0e8f1a2b3c4d5e6f70",
    ),
    "swift-objectstore.http.request": ("swift", TENANT, USER, "backups"),
}

INSTANCE = "5e9f8a7b-6c5d-4e3f-8a1b-2c3d4e5f6a70"
SERVICE_PROJECT = "5e7f1a2b3c4d4e5f8a9b0c1d2e3f4a5b"
SERVICE_USER = "5ec0000000004000800000000000aa42"
# <service>/<file> -> (service, tenant_id, user_id, resource_id); see the README there.
BY_SERVICE = {
    # The instance only inside the legacy request spec.
    "nova/scheduler.select_destinations.start": ("nova", TENANT, USER, INSTANCE),
    # An admin migrates: the owner is the instance's, not the admin's context.
    "nova/compute_task.migrate_server": ("nova", TENANT, USER, INSTANCE),
    # A legacy exception notification: the instance is in the failed method's args.
    "nova/terminate_instance": ("nova", TENANT, USER, INSTANCE),
    "nova/compute.instance.create.end-billed": (
        "nova",
        SERVICE_PROJECT,
        SERVICE_USER,
        "8a9b0c1d-2e3f-4a5b-8c6d-7e8f9a0b1c2d",
    ),
    # The router is the resource of its interface events.
    "neutron/router.interface.create": ("neutron", TENANT, USER, "3d4e5f60-ffff-4000-8111-222233330006"),
    # Two networks at once, by an admin: the networks' tenant, no one resource.
    "neutron/network.create.end-bulk": ("neutron", TENANT, ADMIN_USER, None),
    "heat/orchestration.stack.create.end": ("heat", TENANT, USER, "70819203-2222-4333-8444-555566660009"),
    "heat/orchestration.stack.delete.end-arn": ("heat", TENANT, USER, "70819203-2222-4333-8444-555566660009"),
    # Granted by an admin: the assigned project's, about the assigned user.
    "keystone/identity.role_assignment.created": ("keystone", TENANT, ADMIN_USER, USER),
    # Anonymous: the account owner's, and no user (pycadf made the initiator id up).
    "swift/objectstore.http.request-anonymous": ("swift", TENANT, None, "www"),
}


def parse_file(path: Path, rules: tuple[MappingRule, ...] = ()) -> Event:
    return parse(path.read_bytes(), received_at=datetime.now(UTC), rules=rules)


def parse_message(message: dict, rules: tuple[MappingRule, ...] = ()) -> Event:
    return parse(json.dumps(message).encode(), received_at=datetime.now(UTC), rules=rules)


def fixture(name: str) -> dict:
    """A fixture by name: ``<file>`` at the top, or ``<service>/<file>``."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_every_fixture_has_an_expectation() -> None:
    assert {p.stem for p in FIXTURES.glob("*.json")} == set(EXPECTED)
    by_service = {
        f"{p.parent.name}/{p.stem}" for p in FIXTURES.glob("*/*.json") if p.parent.name != "nova-versioned"
    }
    assert by_service == set(BY_SERVICE)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_service_tenant_user_and_resource_are_derived(name: str) -> None:
    event = parse_file(FIXTURES / f"{name}.json")
    assert (event.service, event.tenant_id, event.user_id, event.resource_id) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(BY_SERVICE))
def test_hard_cases_of_each_service_are_attributed_to_the_owner(name: str) -> None:
    event = parse_file(FIXTURES / f"{name}.json")
    assert (event.service, event.tenant_id, event.user_id, event.resource_id) == BY_SERVICE[name]


def test_admin_acting_on_a_tenant_instance_keeps_the_admin_as_initiator() -> None:
    for name in ("nova/terminate_instance", "nova/compute_task.migrate_server"):
        event = parse_file(FIXTURES / f"{name}.json")
        assert (event.tenant_id, event.initiator_project_id, event.initiator_user_id) == (
            TENANT,
            ADMIN_PROJECT,
            ADMIN_USER,
        )


def test_old_neutron_router_interface_key_names_the_router_too() -> None:
    message = fixture("neutron/router.interface.create")
    message["payload"] = {"router.interface": message["payload"].pop("router_interface")}
    event = parse_message(message)
    assert (event.tenant_id, event.resource_id) == (TENANT, "3d4e5f60-ffff-4000-8111-222233330006")


def test_a_bulk_create_of_one_names_it_and_of_several_tenants_falls_back_to_the_context() -> None:
    message = fixture("neutron/network.create.end-bulk")
    networks = message["payload"]["networks"]
    one = parse_message({**message, "payload": {"networks": networks[:1]}})
    assert (one.tenant_id, one.resource_id) == (TENANT, "7a8b9c0d-1111-4222-8333-000000000301")
    networks[1] = {**networks[1], "project_id": "other", "tenant_id": "other"}
    mixed = parse_message(message)
    assert (mixed.tenant_id, mixed.resource_id) == (ADMIN_PROJECT, None)


@pytest.mark.parametrize("plural", [7, "networks", {"id": "x"}, [1, None]])
def test_a_plural_key_that_holds_no_objects_names_nothing(plural) -> None:
    message = {**fixture("neutron/network.create.end-bulk"), "payload": {"networks": plural}}
    event = parse_message(message)
    assert (event.tenant_id, event.resource_id) == (ADMIN_PROJECT, None)


def test_heat_without_a_context_user_takes_user_identity_never_the_name() -> None:
    message = fixture("heat/orchestration.stack.create.end")
    for key in [k for k in message if k.startswith("_context_user")]:
        del message[key]
    assert parse_message(message).user_id == USER
    del message["payload"]["user_identity"]
    assert parse_message(message).user_id is None


def test_role_assignment_on_a_domain_has_the_initiator_project_and_names_a_group() -> None:
    message = fixture("keystone/identity.role_assignment.created")
    del message["payload"]["project"], message["payload"]["user"]
    message["payload"].update({"domain": "default", "group": "g-1"})
    event = parse_message(message)
    assert (event.tenant_id, event.user_id, event.resource_id) == (ADMIN_PROJECT, ADMIN_USER, "g-1")


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
