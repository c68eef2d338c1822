"""Who owns a notification: service, tenant, user and resource, per OpenStack service.

Each service puts these in its own place (nova in the payload, neutron partly
in the request context, keystone in ``resource_info``...).  ``find_owner``
applies the built-in rule of the service that sent the event, then any
configured mapping rule (``[notifications] mapping``) matching its event type.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
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
    # The project billed for a resource another project owns (Billing);
    # None when it is the owner itself.
    billed_tenant_id: str | None = None


@dataclass(frozen=True)
class MappingRule:
    """A configured rule: event types matching ``pattern`` take fields from ``paths``."""

    pattern: str
    paths: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Billing:
    """``[notifications] billed_project_key`` and ``billed_project_owners``.

    Instance and volume metadata is the owner's to set: only the projects in
    ``owners`` (a provider's service projects) may name another project to
    bill, or any tenant could have its VMs billed to someone else.
    """

    key: str
    owners: frozenset[str]

    def billed(self, owner: str | None, payload: dict[str, Any]) -> str | None:
        """The project ``payload``'s metadata bills, when its owner may; None otherwise."""
        if not self.key or owner not in self.owners:
            return None
        billed = _text(_metadata(payload).get(self.key))
        return billed if billed != owner else None


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
    event_type: str,
    publisher_id: str,
    message: dict[str, Any],
    rules: tuple[MappingRule, ...] = (),
    billing: Billing | None = None,
) -> Owner:
    """Service, tenant, user and resource of a parsed notification (and a billed project)."""
    service = find_service(event_type, publisher_id)
    payload = unwrap(message.get("payload"))
    payload = payload if isinstance(payload, dict) else {}
    context = context_of(message)
    derive = _RULES.get(service, _generic)
    tenant, user, resource = derive(event_type, payload, context)
    # The context's project and user, each looked up once (ingest runs this per message).
    context_project, context_user = _context_project(context), _context_user(context)
    tenant_id = _text(tenant) or _text(_first(payload, "tenant_id", "project_id", "owner")) or context_project
    user_id = _text(user) or context_user
    resource_id = _text(resource)
    for rule in rules:
        if fnmatch.fnmatchcase(event_type, rule.pattern):
            tenant_id, user_id, resource_id = _apply(rule, message, tenant_id, user_id, resource_id)
            break
    return Owner(
        service=service,
        tenant_id=tenant_id,
        user_id=user_id,
        resource_id=resource_id,
        initiator_project_id=_text(payload.get("action_initiator_project")) or context_project,
        initiator_user_id=_text(payload.get("action_initiator_user")) or context_user,
        billed_tenant_id=None if billing is None else billing.billed(tenant_id, payload),
    )


def _metadata(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload's metadata as a dict: nova sends a dict, cinder a list of {key, value}."""
    metadata = unwrap(payload.get("metadata"))
    if isinstance(metadata, list):
        pairs = (item for item in metadata if isinstance(item, dict) and isinstance(item.get("key"), str))
        return {item["key"]: item.get("value") for item in pairs}
    return metadata if isinstance(metadata, dict) else {}


def _apply(
    rule: MappingRule, message: dict[str, Any], tenant: str | None, user: str | None, resource: str | None
) -> tuple[str | None, str | None, str | None]:
    """(tenant, user, resource) with what ``rule`` names in place of what was found."""
    found = {field: _text(lookup(message, path)) for field, path in rule.paths.items()}
    return found.get("tenant", tenant), found.get("user", user), found.get("resource", resource)


# Each rule returns (tenant, user, resource); None leaves find_owner's fallback
# (payload tenant_id/project_id/owner, then the request context).

Found = tuple[Any, Any, Any]


def _nova(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> Found:
    instance = _nova_instance(payload)
    tenant = _first(payload, "tenant_id", "project_id") or _first(instance, "project_id", "tenant_id")
    user = _first(payload, "user_id") or _first(instance, "user_id")
    if event_type.startswith("keypair."):
        return tenant, user, _first(payload, "name", "key_name")
    if instance or event_type.startswith(("instance.", "compute.instance.", "scheduler.", "compute_task.")):
        spec = _dict(payload.get("request_spec"))
        uuids = spec.get("instance_uuids")
        resource = (
            _first(payload, "instance_id", "instance_uuid", "uuid")
            or _first(instance, "uuid", "instance_uuid")
            or _first(spec, "instance_uuid")
            or (uuids[0] if isinstance(uuids, list) and len(uuids) == 1 else None)
        )
        return tenant, user, resource
    return tenant, user, _first(payload, "uuid", "flavorid", "instance_uuid", "id", "name", "host")


def _nova_instance(payload: dict[str, Any]) -> dict[str, Any]:
    """The instance a nova event is about when only nested in it.

    Scheduler and conductor errors (``scheduler.run_instance``,
    ``compute_task.build_instances``) carry ``instance_properties`` and a
    ``request_spec``; ``scheduler.select_destinations.*`` only the legacy
    request spec; the legacy exception notifications of ``wrap_exception``
    (event type = the failed method, e.g. ``build_and_run_instance``) carry
    the method's arguments in ``args``, the instance among them.
    """
    args = _dict(payload.get("args"))
    spec = _dict(payload.get("request_spec"))
    for candidate in (
        args.get("instance"),
        payload.get("instance_properties"),
        spec.get("instance_properties"),
        spec,  # a versioned RequestSpecPayload names project_id and user_id itself
    ):
        candidate = _dict(candidate)
        if _first(candidate, "project_id", "tenant_id", "uuid", "instance_uuid"):
            return candidate
    return {}


def _glance(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> Found:
    return _first(payload, "owner", "owner_id"), _first(payload, "user_id"), _first(payload, "id", "image_id")


def _cinder(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> Found:
    kind = event_type.split(".", 1)[0]
    resource = _first(payload, CINDER_RESOURCE.get(kind, "id"), "id")
    return _first(payload, "tenant_id", "project_id"), _first(payload, "user_id"), resource


def _neutron(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> Found:
    parts = event_type.split(".")
    kind = parts[0]
    # The object is under its kind ("port"), a sub-object under kind_sub
    # ("router_interface", older neutron "router.interface", whose id is the
    # router's), several created in bulk under the plural ("networks").
    sub = (f"{kind}_{parts[1]}", f"{kind}.{parts[1]}") if len(parts) > 2 else ()
    body = next((payload[key] for key in (kind, *sub) if isinstance(payload.get(key), dict)), None)
    if body is None:
        plural = payload.get(f"{kind}s")
        items = [item for item in plural if isinstance(item, dict)] if isinstance(plural, list) else []
        owners = {_first(item, "project_id", "tenant_id") for item in items}
        # One tenant for the lot when they agree; a resource only when there is one.
        body = items[0] if len(items) == 1 else {"project_id": owners.pop() if len(owners) == 1 else None}
    tenant = _first(body, "project_id", "tenant_id") or _context_project(context)
    return tenant, None, _first(body, "id") or _first(payload, f"{kind}_id", "id")


def _heat(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> Found:
    resource = payload.get("stack_id")
    identity = payload.get("stack_identity")
    if not resource and isinstance(identity, str):
        resource = identity
    if isinstance(resource, str) and resource.startswith("arn:"):
        # arn:openstack:heat::<tenant>:stacks/<name>/<id>: older heat sends it as stack_id too.
        resource = resource.rstrip("/").rsplit("/", 1)[-1]
    # The payload's user_id is the user *name* (heat's context.username);
    # the acting user's id is in the context, or in user_identity.
    user = _context_user(context) or _first(payload, "user_identity")
    return _first(payload, "tenant_id", "project_id"), user, resource


def _keystone(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> Found:
    target = _dict(payload.get("target"))
    initiator = _dict(payload.get("initiator"))
    user = _first(initiator, "user_id", "id")
    resource = payload.get("resource_info") or target.get("id")
    if event_type.startswith("identity.project."):
        return resource, user, resource
    if event_type.startswith("identity.role_assignment."):
        # The assignment belongs to the project it grants a role on; it is
        # about the user (or group) given the role.
        subject = _first(payload, "user", "group") or resource
        return _first(payload, "project") or _first(initiator, "project_id"), user, subject
    return _first(initiator, "project_id") or _context_project(context), user, resource


def _swift(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> Found:
    initiator = _dict(payload.get("initiator"))
    target = _dict(payload.get("target"))
    metadata = _dict(target.get("metadata"))
    project = _first(initiator, "project_id")
    # ceilometermiddleware: target.id is the account's project (reseller prefix
    # stripped).  Without a project (anonymous, temp URL) the initiator id is
    # pycadf's random one: no user then.
    tenant = project or target.get("id")
    user = _first(initiator, "id") if project else None
    return tenant, user, metadata.get("container") or target.get("id")


def _generic(event_type: str, payload: dict[str, Any], context: dict[str, Any]) -> Found:
    tenant = _first(payload, "tenant_id", "project_id", "owner")
    return tenant, _first(payload, "user_id"), _first(payload, "resource_id", "id", "uuid")


_RULES = {
    "nova": _nova,
    "glance": _glance,
    "cinder": _cinder,
    "neutron": _neutron,
    "heat": _heat,
    "keystone": _keystone,
    "swift": _swift,
}


def _dict(value: Any) -> dict[str, Any]:
    value = unwrap(value)
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
