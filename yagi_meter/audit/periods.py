"""A resource's life in usage periods of constant billing attributes: pure, events in, periods out.

A period holds for ``start <= t < end``; the last one of a live resource has
no end.  A create opens the first period (at its ``launched_at`` when it has
one); a change event whose billing attributes differ from the period's
closes it and opens the next at the event's time; a delete closes the last
(at its ``deleted_at`` when it has one).  A change back to earlier attributes
opens a new period: periods are never merged across a change.  yagi-meter
does not price or sum them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from yagi_meter.audit.facts import Fact, fact
from yagi_meter.audit.rules import Rule
from yagi_meter.notification import Event, format_timestamp


@dataclass(frozen=True)
class Boundary:
    """The event that opened or closed a period."""

    message_id: str
    event_type: str
    timestamp: datetime


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime | None
    attributes: dict[str, Any]
    opened_by: Boundary
    closed_by: Boundary | None

    def as_json(self) -> dict[str, Any]:
        return {
            "start": format_timestamp(self.start),
            "end": None if self.end is None else format_timestamp(self.end),
            "attributes": self.attributes,
            "opened_by": _boundary(self.opened_by),
            "closed_by": None if self.closed_by is None else _boundary(self.closed_by),
        }


def _boundary(boundary: Boundary) -> dict[str, str]:
    return {
        "message_id": boundary.message_id,
        "event_type": boundary.event_type,
        "timestamp": format_timestamp(boundary.timestamp),
    }


def rule_for(rules: Sequence[Rule], events: Sequence[Event]) -> Rule | None:
    """The rule whose lifecycle the events belong to (the one matching most of them)."""
    best, count = None, 0
    for rule in rules:
        matched = sum(1 for event in events if event.event_type in rule.lifecycle)
        if matched > count:
            best, count = rule, matched
    return best


def periods(rule: Rule, events: Sequence[Event]) -> list[Period]:
    """The usage periods of one resource from its lifecycle events (any order; others are ignored)."""
    facts = sorted(
        (fact(rule, e) for e in events if e.event_type in rule.lifecycle),
        key=lambda f: (f.timestamp, f.message_id),
    )
    found: list[Period] = []
    current: Period | None = None
    for f in facts:
        if f.event_type in rule.creates:
            if current is not None:  # a second create: the archive holds a re-launch
                found.append(_close(current, f, f.launched_at or f.timestamp))
            current = Period(f.launched_at or f.timestamp, None, _known(f.attributes), _from(f), None)
        elif current is None:
            continue  # a change or delete before any create: its start is not archived
        elif f.event_type in rule.deletes:
            found.append(_close(current, f, f.deleted_at or f.timestamp))
            current = None
        else:
            attributes = {**current.attributes, **_known(f.attributes)}
            if attributes != current.attributes:
                found.append(_close(current, f, f.timestamp))
                current = Period(f.timestamp, None, attributes, _from(f), None)
    if current is not None:
        found.append(current)
    return found


def _known(attributes: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in attributes.items() if value is not None}


def _from(f: Fact) -> Boundary:
    return Boundary(f.message_id, f.event_type, f.timestamp)


def _close(period: Period, f: Fact, at: datetime) -> Period:
    return Period(period.start, max(at, period.start), period.attributes, period.opened_by, _from(f))
