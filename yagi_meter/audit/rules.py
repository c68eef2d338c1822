"""The audit's rule table: per service, which events open, change and end a resource's life,
which exists event reports on it, and where each billing attribute is found.

Paths are dotted paths into the notification (``payload.flavor.memory_mb``);
versioned payloads (``nova_object.data``) are unwrapped on the way, as
``ownership.lookup`` does.  Built in: nova (legacy and versioned), cinder
volumes and glance images; ``[audit] rules`` adds or replaces rules, one per
line (see ``parse_rules``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

Path = tuple[str, ...]


def _path(text: str) -> Path:
    return tuple(part for part in text.strip().split(".") if part)


@dataclass(frozen=True)
class Rule:
    """How to audit one kind of resource.

    ``items``: where an exists event lists several resources (glance's
    ``image.exists`` lists a tenant's images); empty: the exists is about one
    resource, the event's own.  Each item is read as if it were the payload
    (``{"payload": item}``), so the same paths serve lifecycle events and items;
    ``item_id`` names the item's resource.
    """

    name: str
    exists: str
    creates: tuple[str, ...]
    changes: tuple[str, ...]
    deletes: tuple[str, ...]
    attributes: dict[str, Path]
    launched_at: Path
    deleted_at: Path = ()
    period_beginning: Path = ("payload", "audit_period_beginning")
    period_ending: Path = ("payload", "audit_period_ending")
    items: Path = ()
    item_id: Path = ("payload", "id")
    # Payload keys a verdict carries its tenant and resource under, so the
    # service's ownership rule puts the verdict in the resource's feed.
    tenant_key: str = "tenant_id"
    resource_key: str = "resource_id"

    @property
    def lifecycle(self) -> tuple[str, ...]:
        """The event types a resource's periods and verdicts are computed from."""
        return self.creates + self.changes + self.deletes


NOVA_ATTRIBUTES_LEGACY = {
    "flavor": _path("payload.instance_type"),
    "flavor_id": _path("payload.instance_flavor_id"),
    "memory_mb": _path("payload.memory_mb"),
    "vcpus": _path("payload.vcpus"),
    "root_gb": _path("payload.root_gb"),
    "ephemeral_gb": _path("payload.ephemeral_gb"),
}

NOVA_ATTRIBUTES_VERSIONED = {
    "flavor": _path("payload.flavor.name"),
    "flavor_id": _path("payload.flavor.flavorid"),
    "memory_mb": _path("payload.flavor.memory_mb"),
    "vcpus": _path("payload.flavor.vcpus"),
    "root_gb": _path("payload.flavor.root_gb"),
    "ephemeral_gb": _path("payload.flavor.ephemeral_gb"),
}

BUILT_IN: tuple[Rule, ...] = (
    Rule(
        name="nova",
        exists="compute.instance.exists",
        creates=("compute.instance.create.end",),
        changes=("compute.instance.finish_resize.end", "compute.instance.resize.revert.end"),
        deletes=("compute.instance.delete.end",),
        attributes=NOVA_ATTRIBUTES_LEGACY,
        launched_at=_path("payload.launched_at"),
        deleted_at=_path("payload.deleted_at"),
        resource_key="instance_id",
    ),
    Rule(
        name="nova-versioned",
        exists="instance.exists",
        creates=("instance.create.end",),
        changes=("instance.resize_finish.end", "instance.resize_revert.end"),
        deletes=("instance.delete.end",),
        attributes=NOVA_ATTRIBUTES_VERSIONED,
        launched_at=_path("payload.launched_at"),
        deleted_at=_path("payload.deleted_at"),
        period_beginning=_path("payload.audit_period.audit_period_beginning"),
        period_ending=_path("payload.audit_period.audit_period_ending"),
        resource_key="instance_id",
    ),
    Rule(
        name="cinder",
        exists="volume.exists",
        creates=("volume.create.end",),
        changes=("volume.resize.end", "volume.retype"),
        deletes=("volume.delete.end",),
        attributes={"size_gb": _path("payload.size"), "volume_type": _path("payload.volume_type")},
        launched_at=_path("payload.launched_at"),
        deleted_at=_path("payload.deleted_at"),
        resource_key="volume_id",
    ),
    Rule(
        name="glance",
        exists="image.exists",
        creates=("image.create",),
        changes=("image.upload", "image.update"),
        deletes=("image.delete",),
        attributes={"size": _path("payload.size")},
        launched_at=_path("payload.created_at"),
        deleted_at=_path("payload.deleted_at"),
        items=_path("payload.images"),
        tenant_key="owner",
        resource_key="id",
    ),
)

_LIST_FIELDS = ("creates", "changes", "deletes")
_PATH_FIELDS = ("launched_at", "deleted_at", "period_beginning", "period_ending", "items", "item_id")


def parse_rules(text: str, base: tuple[Rule, ...] = BUILT_IN) -> tuple[Rule, ...]:
    """``base`` with the rules of ``[audit] rules`` added or replacing those of the same name.

    One rule per line: ``<name> = key:value ...`` with keys ``exists``,
    ``creates``, ``changes``, ``deletes`` (comma-separated event types),
    ``attributes`` (``name=path,name=path``), ``launched_at``, ``deleted_at``,
    ``period_beginning``, ``period_ending``, ``items``, ``item_id`` (paths),
    ``tenant_key``, ``resource_key``.  A line naming a built-in rule changes
    only the keys it gives.  Raises ValueError naming the bad line.
    """
    rules = {rule.name: rule for rule in base}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, spec = (part.strip() for part in line.partition("="))
        if not sep or not name:
            raise ValueError(f"expected '<name> = exists:<event type> ...', got {line!r}")
        values: dict[str, Any] = {}
        for item in spec.split():
            key, colon, value = item.partition(":")
            if not colon or not value:
                raise ValueError(f"expected key:value, got {item!r} in rule {name!r}")
            if key == "exists" or key in ("tenant_key", "resource_key"):
                values[key] = value
            elif key in _LIST_FIELDS:
                values[key] = tuple(v.strip() for v in value.split(",") if v.strip())
            elif key in _PATH_FIELDS:
                values[key] = _path(value)
            elif key == "attributes":
                values[key] = _attributes(value, name)
            else:
                raise ValueError(f"unknown key {key!r} in rule {name!r}")
        if name in rules:
            rules[name] = replace(rules[name], **values)
            continue
        for needed in ("exists", "creates", "attributes", "launched_at"):
            if needed not in values:
                raise ValueError(f"rule {name!r} needs {needed}:")
        values.setdefault("changes", ())
        values.setdefault("deletes", ())
        rules[name] = Rule(name=name, **values)
    exists = [rule.exists for rule in rules.values()]
    if len(set(exists)) != len(exists):
        raise ValueError("two rules audit the same exists event type")
    return tuple(rules.values())


def _attributes(value: str, rule: str) -> dict[str, Path]:
    attributes = {}
    for pair in value.split(","):
        attr, eq, path = pair.partition("=")
        if not eq or not attr.strip() or not path.strip():
            raise ValueError(f"expected attributes:name=path,..., got {value!r} in rule {rule!r}")
        attributes[attr.strip()] = _path(path)
    return attributes


def select(rules: tuple[Rule, ...], names: tuple[str, ...]) -> tuple[Rule, ...]:
    """The rules named in ``[audit] services`` (all when empty); ValueError for an unknown name."""
    if not names:
        return rules
    by_name = {rule.name: rule for rule in rules}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"no audit rule {', '.join(unknown)} (known: {', '.join(by_name)})")
    return tuple(by_name[name] for name in names)
