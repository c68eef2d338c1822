"""What the audit reads from one event: its rule's paths, looked up once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from yagi_meter.audit.rules import Path, Rule
from yagi_meter.errors import BadNotification
from yagi_meter.notification import Event, parse_timestamp
from yagi_meter.ownership import lookup


@dataclass(frozen=True)
class Fact:
    """One lifecycle event (or one item of an exists) as the rule sees it."""

    message_id: str
    event_type: str
    timestamp: datetime
    attributes: dict[str, Any]  # None where the event does not carry one
    launched_at: datetime | None
    deleted_at: datetime | None


def read_time(message: dict[str, Any], path: Path) -> datetime | None:
    """A timestamp at ``path``, or None when absent, empty or not a date."""
    if not path:
        return None
    value = lookup(message, path)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parse_timestamp(value)
    except BadNotification:
        return None


def normal(value: Any) -> Any:
    """An attribute as compared: 2048, 2048.0 and "2048" are the same size."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    if isinstance(value, (dict, list)):
        return None  # a path that ends at an object names no attribute
    return value


def fact(rule: Rule, event: Event, message: dict[str, Any] | None = None) -> Fact:
    """``event`` read by ``rule``; ``message``: the notification, or an exists item as payload."""
    message = event.notification if message is None else message
    return Fact(
        message_id=event.message_id,
        event_type=event.event_type,
        timestamp=event.timestamp,
        attributes={name: normal(lookup(message, path)) for name, path in rule.attributes.items()},
        launched_at=read_time(message, rule.launched_at),
        deleted_at=read_time(message, rule.deleted_at),
    )
