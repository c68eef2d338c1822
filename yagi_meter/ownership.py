"""Who owns a notification: service, tenant, user and resource, per OpenStack service.

Each service puts these in its own place (nova in the payload, neutron partly
in the request context, keystone in ``resource_info``...).  ``find_owner``
applies the built-in rule of the service that sent the event, then any
configured mapping rule (``[notifications] mapping``) matching its event type.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from typing import Any

from yagi_meter.errors import BadNotification

# First segment of the event type -> service.  Legacy nova events start with
# "compute.", versioned ones with the object name.
SERVICE_BY_PREFIX = {
    "compute": "nova",
    "instance": "nova",
    "compute_task": "nova",
    "scheduler": "nova",
    "aggregate": "nova",
    "flavor": "nova",
    "keypair": "nova",
    "server_group": "nova",
    "service": "nova",
    "metrics": "nova",
    "libvirt": "nova",
    "volume_usage": "nova",
    "image": "glance",
    "volume": "cinder",
    "snapshot": "cinder",
    "backup": "cinder",
    "consistencygroup": "cinder",
    "group": "cinder",
    "group_snapshot": "cinder",
    "cgsnapshot": "cinder",
    "scheduler_retype": "cinder",
    "network": "neutron",
    "subnet": "neutron",
    "port": "neutron",
    "router": "neutron",
    "floatingip": "neutron",
    "security_group": "neutron",
    "security_group_rule": "neutron",
    "subnetpool": "neutron",
    "trunk": "neutron",
    "firewall": "neutron",
    "loadbalancer": "neutron",
    "orchestration": "heat",
    "identity": "keystone",
    "objectstore": "swift",
}

# Prefix of publisher_id ("compute.host1", "nova-compute:host1") -> service.
SERVICE_BY_PUBLISHER = {
    "compute": "nova",
    "nova": "nova",
    "image": "glance",
    "glance": "glance",
    "volume": "cinder",
    "cinder": "cinder",
    "network": "neutron",
    "neutron": "neutron",
    "orchestration": "heat",
    "heat": "heat",
    "identity": "keystone",
    "keystone": "keystone",
    "ceilometermiddleware": "swift",
    "swift": "swift",
}

CINDER_RESOURCE = {
    "volume": "volume_id",
    "snapshot": "snapshot_id",
    "backup": "backup_id",
    "consistencygroup": "consistencygroup_id",
    "cgsnapshot": "cgsnapshot_id",
    "group": "group_id",
    "group_snapshot": "group_snapshot_id",
}


@dataclass(frozen=True)
class Owner:
    """Derived ownership of one event; None where the notification names none."""

    service: str
    tenant_id: str | None
    user_id: str | None
    resource_id: str | None
    initiator_project_id: str | None
    initiator_user_id: str | None


@dataclass(frozen=True)
class MappingRule:
    """A configured rule: event types matching ``pattern`` take fields from ``paths``."""

    pattern: str
    paths: dict[str, tuple[str, ...]]


MAPPABLE_FIELDS = ("tenant", "user", "resource")


def parse_mapping(text: str) -> tuple[MappingRule, ...]:
    """Parse ``[notifications] mapping``; raise ValueError naming the bad line."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, spec = line.partition("=")
        if not sep or not pattern.strip():
            raise ValueError(f"expected '<event_type pattern> = field:path ...', got {line!r}")
        paths = {}
        for item in spec.split():
            field, colon, path = item.partition(":")
            if not colon or field not in MAPPABLE_FIELDS or not path:
                raise ValueError(f"expected tenant:, user: or resource:<path>, got {item!r}")
            paths[field] = tuple(path.split("."))
        if not paths:
            raise ValueError(f"rule for {pattern.strip()!r} names no field")
        rules.append(MappingRule(pattern.strip(), paths))
    return tuple(rules)


def unwrap(value: Any) -> Any:
    """A versioned payload's data (``nova_object.data``), or the value itself."""
    if isinstance(value, dict) and "nova_object.data" in value:
        return value["nova_object.data"]
    return value


def lookup(message: dict[str, Any], path: tuple[str, ...]) -> Any:
    """Follow a dotted path into a notification, unwrapping versioned objects."""
    value: Any = message
    for part in path:
        value = unwrap(value)
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return unwrap(value)


# The request context fields the rules read; looked up by name because a
# message has dozens of other keys.
_CONTEXT_KEYS = tuple(
    (name, f"_context_{name}") for name in ("project_id", "tenant_id", "project", "tenant", "user_id", "user")
)


def context_of(message: dict[str, Any]) -> dict[str, Any]:
    """The request context fields oslo.messaging sent as ``_context_*`` keys that the rules use."""
    return {name: message[key] for name, key in _CONTEXT_KEYS if key in message}


def find_service(event_type: str, publisher_id: str) -> str:
    prefix = event_type.split(".", 1)[0]
    if prefix in SERVICE_BY_PREFIX:
        return SERVICE_BY_PREFIX[prefix]
    publisher = publisher_id.replace(":", ".").split(".", 1)[0].split("-", 1)[0]
    return SERVICE_BY_PUBLISHER.get(publisher, publisher or "unknown")


def find_owner(
    event_type: str, publisher_id: str, message: dict[str, Any], rules: tuple[MappingRule, ...] = ()
) -> Owner:
    """Service, tenant, user and resource of a parsed notification."""
    service = find_service(event_type, publisher_id)
    payload = unwrap(message.get("payload"))
    payload = payload if isinstance(payload, dict) else {}
    context = context_of(message)
    derive = _RULES.get(service, _generic)
    tenant, resource = derive(event_type, payload, context)
    owner = Owner(
        service=service,
        tenant_id=_text(tenant)
        or _text(_first(payload, "tenant_id", "project_id", "owner"))
        or _context_project(context),
        user_id=_text(_first(payload, "user_id")) or _context_user(context),
        resource_id=_text(resource),
        initiator_project_id=_text(payload.get("action_initiator_project")) or _context_project(context),
        initiator_user_id=_text(payload.get("action_initiator_user")) or _context_user(context),
    )
    for rule in rules:
        if fnmatch.fnmatchcase(event_type, rule.pattern):
            return _apply(rule, message, owner)
    return owner


def _apply(rule: MappingRule, message: dict[str, Any], owner: Owner) -> Owner:
    found = {field: _text(lookup(message, path)) for field, path in rule.paths.items()}
    return replace(
        owner,
        tenant_id=found.get("tenant", owner.tenant_id),
        user_id=found.get("user", owner.user_id),
        resource_id=found.get("resource", owner.resource_id),
    )


def _nova(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> tuple[Any, Any]:
    if event_type.startswith("compute_task."):
        # The conductor's errors carry the owner only in the request spec.
        spec = unwrap(payload.get("request_spec"))
        tenant = _first(spec, "project_id") if isinstance(spec, dict) else None
        return tenant, _first(payload, "instance_uuid", "instance_id")
    if event_type.startswith(("instance.", "compute.instance.", "scheduler.")):
        resource = _first(payload, "instance_id", "instance_uuid", "uuid")
    elif event_type.startswith("keypair."):
        resource = _first(payload, "name", "key_name")
    else:
        resource = _first(payload, "uuid", "flavorid", "instance_uuid", "id", "name", "host")
    return _first(payload, "tenant_id", "project_id"), resource


def _glance(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> tuple[Any, Any]:
    return _first(payload, "owner", "owner_id"), _first(payload, "id", "image_id")


def _cinder(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> tuple[Any, Any]:
    kind = event_type.split(".", 1)[0]
    return _first(payload, "tenant_id", "project_id"), _first(payload, CINDER_RESOURCE.get(kind, "id"), "id")


def _neutron(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> tuple[Any, Any]:
    kind = event_type.split(".", 1)[0]
    body = payload.get(kind)
    body = body if isinstance(body, dict) else {}
    tenant = _first(body, "project_id", "tenant_id") or _context_project(context)
    return tenant, _first(body, "id") or _first(payload, f"{kind}_id", "id")


def _heat(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> tuple[Any, Any]:
    resource = payload.get("stack_id")
    identity = payload.get("stack_identity")
    if not resource and isinstance(identity, str):
        resource = identity.rstrip("/").rsplit("/", 1)[-1]
    return _first(payload, "tenant_id", "project_id"), resource


def _keystone(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> tuple[Any, Any]:
    target = _object(payload.get("target"))
    resource = payload.get("resource_info") or target.get("id")
    if event_type.startswith("identity.project."):
        return resource, resource
    initiator = _object(payload.get("initiator"))
    return _first(initiator, "project_id") or _context_project(context), resource


def _swift(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> tuple[Any, Any]:
    initiator = _object(payload.get("initiator"))
    target = _object(payload.get("target"))
    metadata = _object(target.get("metadata"))
    return _first(initiator, "project_id"), metadata.get("container") or target.get("id")


def _generic(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> tuple[Any, Any]:
    return _first(payload, "tenant_id", "project_id", "owner"), _first(payload, "resource_id", "id", "uuid")


_RULES = {
    "nova": _nova,
    "glance": _glance,
    "cinder": _cinder,
    "neutron": _neutron,
    "heat": _heat,
    "keystone": _keystone,
    "swift": _swift,
}


def _object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (a field of the wrong type owns nothing)."""
    return value if isinstance(value, dict) else {}


def _first(mapping: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = mapping.get(key)
        if value not in (None, ""):
            return value
    return None


def _context_project(context: dict[str, Any]) -> str | None:
    return _text(_first(context, "project_id", "tenant_id", "project", "tenant"))


def _context_user(context: dict[str, Any]) -> str | None:
    return _text(_first(context, "user_id", "user"))


def _text(value: Any) -> str | None:
    """An id as text: strings and whole numbers; other JSON values name no id.

    A fractional number (1.5, 1e300) has no one true text (Python would write
    1e+300), so a message giving one as an id is quarantined instead.
    """
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    if isinstance(value, float):
        raise BadNotification(f"an id is a fractional number: {value!r}")
    text = str(value).strip()
    return text or None
