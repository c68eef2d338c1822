"""Whole resource lifecycles for the audit tests, built from real-shaped notifications.

``lifecycle(service, ...)`` gives, in archive order, named steps: ``create``,
``exists-0``, ``change-1``, ``exists-1``, ``change-2``, ``exists-2``,
``delete``, ``exists-3``: a resource launched in hourly audit period 0,
changed (resized) in period 1, changed back (or again) in period 2 and
deleted in period 3, with the exists each period gets, saying what the
resource was at that period's end.  Templates: tests/fixtures/audit/ and
nova's own samples (tests/fixtures/notifications/nova-versioned/).
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import datetime, timedelta

from tests.conftest import ROOT, SAMPLES

TEMPLATES = ROOT / "tests" / "fixtures" / "audit"
SERVICES = ("nova", "nova-versioned", "cinder", "glance")
STEPS = ("create", "exists-0", "change-1", "exists-1", "change-2", "exists-2", "delete", "exists-3")


def _templates(service: str) -> dict[str, dict]:
    if service == "nova-versioned":
        names = {
            "instance.create.end": "instance-create-end",
            "instance.resize_finish.end": "instance-resize_finish-end",
            "instance.resize_revert.end": "instance-resize_revert-end",
            "instance.delete.end": "instance-delete-end_compute_down",
            "instance.exists": "instance-exists",
        }
        return {t: json.loads((SAMPLES / f"{n}.json").read_text()) for t, n in names.items()}
    name = {"nova": "nova-legacy", "cinder": "cinder", "glance": "glance"}[service]
    return json.loads((TEMPLATES / f"{name}.json").read_text())


# Event types of each step, per service.
TYPES = {
    "nova": (
        "compute.instance.create.end",
        "compute.instance.finish_resize.end",
        "compute.instance.resize.revert.end",
        "compute.instance.delete.end",
        "compute.instance.exists",
    ),
    "nova-versioned": (
        "instance.create.end",
        "instance.resize_finish.end",
        "instance.resize_revert.end",
        "instance.delete.end",
        "instance.exists",
    ),
    "cinder": (
        "volume.create.end",
        "volume.resize.end",
        "volume.retype",
        "volume.delete.end",
        "volume.exists",
    ),
    "glance": ("image.create", "image.upload", "image.update", "image.delete", "image.exists"),
}

SMALL = {"name": "m1.small", "flavorid": "2", "memory_mb": 2048, "vcpus": 1, "root_gb": 20, "ephemeral_gb": 0}
MEDIUM = {
    "name": "m1.medium",
    "flavorid": "3",
    "memory_mb": 4096,
    "vcpus": 2,
    "root_gb": 40,
    "ephemeral_gb": 0,
}
IMAGE_SIZE = 653262848

# Billing state after create, change-1 and change-2.  Cinder volumes only grow:
# its second change is a retype.  Glance images have no second change: an
# image's size is set once, by its upload (image.create carries none).
STATES = {
    "nova": (SMALL, MEDIUM, SMALL),
    "nova-versioned": (SMALL, MEDIUM, SMALL),
    "cinder": (
        {"size": 10, "volume_type": "lvmdriver-1"},
        {"size": 20, "volume_type": "lvmdriver-1"},
        {"size": 20, "volume_type": "ceph"},
    ),
    "glance": ({"size": None}, {"size": IMAGE_SIZE}, {"size": IMAGE_SIZE}),
}


def _legacy_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000000")


def _space_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _z_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fill(service, message, tenant, resource, state, launched, deleted, period):
    payload = message["payload"]
    if service == "nova":
        payload.update(
            tenant_id=tenant,
            instance_id=resource,
            instance_type=state["name"],
            instance_flavor_id=state["flavorid"],
            instance_type_id=int(state["flavorid"]),
            memory_mb=state["memory_mb"],
            vcpus=state["vcpus"],
            root_gb=state["root_gb"],
            ephemeral_gb=state["ephemeral_gb"],
            disk_gb=state["root_gb"] + state["ephemeral_gb"],
            launched_at=_legacy_time(launched),
            deleted_at=_legacy_time(deleted) if deleted else "",
            terminated_at=_legacy_time(deleted) if deleted else "",
        )
        message["_context_project_id"] = message["_context_tenant"] = tenant
        if period:
            payload["audit_period_beginning"] = _space_time(period[0])
            payload["audit_period_ending"] = _space_time(period[1])
    elif service == "nova-versioned":
        data = payload["nova_object.data"]
        data.update(tenant_id=tenant, uuid=resource, launched_at=_z_time(launched))
        data["deleted_at"] = data["terminated_at"] = _z_time(deleted) if deleted else None
        data["flavor"]["nova_object.data"].update(state)
        if period:
            audit = data["audit_period"]["nova_object.data"]
            audit["audit_period_beginning"], audit["audit_period_ending"] = map(_z_time, period)
    elif service == "cinder":
        payload.update(tenant_id=tenant, volume_id=resource, launched_at=_space_time(launched) + "+00:00")
        payload.update(state)
        payload["deleted_at"] = _space_time(deleted) + "+00:00" if deleted else None
        message["_context_project_id"] = tenant
        if period:
            payload["audit_period_beginning"], payload["audit_period_ending"] = map(_space_time, period)
    else:
        item = payload["images"][0] if "images" in payload else payload
        item.update(id=resource, owner=tenant, created_at=_z_time(launched), size=state["size"])
        item["deleted_at"] = _z_time(deleted) if deleted else None
        payload["owner"] = tenant
        message["_context_tenant"] = tenant
        if period:
            payload["audit_period_beginning"] = _space_time(period[0]) + ".000000"
            payload["audit_period_ending"] = _space_time(period[1]) + ".000000"


def lifecycle(service: str, base: datetime, tenant: str, resource: str) -> dict[str, dict]:
    """Named steps of one resource's life, starting in the hour ``base`` (a whole hour, UTC)."""
    create_t, change1_t, change2_t, delete_t, exists_t = TYPES[service]
    templates = _templates(service)
    hour = timedelta(hours=1)
    launched = base + timedelta(minutes=10)
    deleted = base + 3 * hour + timedelta(minutes=30)
    first, second, third = STATES[service]
    plan = [
        ("create", create_t, launched, first, None, None),
        ("change-1", change1_t, base + hour + timedelta(minutes=20), second, None, None),
        ("change-2", change2_t, base + 2 * hour + timedelta(minutes=20), third, None, None),
        ("delete", delete_t, deleted, third, deleted, None),
    ]
    if service == "glance":
        # An image is created, then uploaded a few minutes later in the same hour.
        plan[1] = ("change-1", change1_t, base + timedelta(minutes=20), second, None, None)
        del plan[2]
    for n, state in enumerate((first if service != "glance" else second, second, third, third)):
        start = base + n * hour
        when = start + hour + timedelta(minutes=1)
        plan.append(
            (f"exists-{n}", exists_t, when, state, deleted if n == 3 else None, (start, start + hour))
        )
    steps = {}
    for name, event_type, when, state, gone, period in plan:
        message = copy.deepcopy(templates[event_type])
        message["event_type"] = event_type
        message["message_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{service}/{resource}/{name}"))
        message["timestamp"] = when.strftime("%Y-%m-%d %H:%M:%S.%f")
        _fill(service, message, tenant, resource, state, launched, gone, period)
        steps[name] = message
    return {name: steps[name] for name in STEPS if name in steps}


# What removing one event makes of each exists verdict, per service (the others are verified).
REMOVALS = {
    ("nova", "create"): {f"exists-{n}": ["no_create"] for n in range(4)},
    ("nova", "delete"): {"exists-3": ["no_delete"]},
    ("nova", "change-1"): {"exists-1": ["attributes_differ"]},
    ("nova", "change-2"): {"exists-2": ["attributes_differ"], "exists-3": ["attributes_differ"]},
    ("nova-versioned", "create"): {f"exists-{n}": ["no_create"] for n in range(4)},
    ("nova-versioned", "delete"): {"exists-3": ["no_delete"]},
    ("nova-versioned", "change-1"): {"exists-1": ["attributes_differ"]},
    ("nova-versioned", "change-2"): {"exists-2": ["attributes_differ"], "exists-3": ["attributes_differ"]},
    ("cinder", "create"): {f"exists-{n}": ["no_create"] for n in range(4)},
    ("cinder", "delete"): {"exists-3": ["no_delete"]},
    # the retype of period 2 carries the grown size too, so only period 1 is off
    ("cinder", "change-1"): {"exists-1": ["attributes_differ"]},
    ("cinder", "change-2"): {"exists-2": ["attributes_differ"], "exists-3": ["attributes_differ"]},
    ("glance", "create"): {f"exists-{n}": ["no_create"] for n in range(4)},
    ("glance", "delete"): {"exists-3": ["no_delete"]},
    # nothing archived gives the image a size: every exists reporting one is off
    ("glance", "change-1"): {f"exists-{n}": ["attributes_differ"] for n in range(4)},
}
