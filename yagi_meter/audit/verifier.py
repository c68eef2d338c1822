"""Judging exists events against the archived lifecycle: pure, events in, verdicts out.

A verdict is a notification of its own (``<exists type>.verified`` or
``.failed``), with a uuid5 message_id derived from what it judged: the same
exists judged on the same archive gives the same id and the same body, so
the store takes a re-run as a duplicate and adds nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from yagi_meter.audit.facts import Fact, fact, read_time
from yagi_meter.audit.rules import Rule
from yagi_meter.notification import Event, format_timestamp
from yagi_meter.ownership import lookup
from yagi_meter.store.audit import VERDICT_PUBLISHER as PUBLISHER

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/yagi-meter/audit")
VERIFIED, FAILED = "verified", "failed"

# Reason codes (README, "Audit": what each means and what to do about it).
NO_CREATE = "no_create"
NO_DELETE = "no_delete"
ATTRIBUTES_DIFFER = "attributes_differ"
LAUNCHED_AT_DIFFERS = "launched_at_differs"
DELETED_AT_DIFFERS = "deleted_at_differs"
MISSING_EXISTS = "missing_exists"
REASONS = (NO_CREATE, NO_DELETE, ATTRIBUTES_DIFFER, LAUNCHED_AT_DIFFERS, DELETED_AT_DIFFERS, MISSING_EXISTS)

# Timestamps agree when this close: services write them at different precisions.
_SAME_TIME = timedelta(seconds=1)


@dataclass(frozen=True)
class Reason:
    code: str
    detail: str


@dataclass(frozen=True)
class Subject:
    """One resource an exists event reports on, and the exists as the rule reads it for it."""

    tenant_id: str
    resource_id: str
    fact: Fact


@dataclass(frozen=True)
class Verdict:
    """The audit's judgement of one exists for one resource, or of one missing exists."""

    rule: Rule
    outcome: str
    reasons: tuple[Reason, ...]
    tenant_id: str
    resource_id: str
    period_beginning: datetime | None
    period_ending: datetime | None
    exists_message_id: str | None
    judged: tuple[str, ...]  # message_ids of the lifecycle events it was compared with
    timestamp: datetime

    @property
    def event_type(self) -> str:
        return f"{self.rule.exists}.{self.outcome}"

    @property
    def message_id(self) -> str:
        parts = [
            self.rule.name,
            self.exists_message_id or "",
            self.tenant_id,
            self.resource_id,
            self.outcome,
            *(reason.code for reason in self.reasons),
            *self.judged,
        ]
        if self.exists_message_id is None and self.period_beginning is not None:
            parts.append(format_timestamp(self.period_beginning))
        return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))

    def notification(self) -> dict[str, Any]:
        """The verdict as a notification, ready for the ingest path."""
        payload = {
            "tenant_id": self.tenant_id,
            self.rule.tenant_key: self.tenant_id,
            "resource_id": self.resource_id,
            self.rule.resource_key: self.resource_id,
            "audit_rule": self.rule.name,
            "outcome": self.outcome,
            "reasons": [{"code": r.code, "detail": r.detail} for r in self.reasons],
            "exists_message_id": self.exists_message_id,
            "exists_event_type": self.rule.exists,
            "audit_period_beginning": _text(self.period_beginning),
            "audit_period_ending": _text(self.period_ending),
            "judged_message_ids": list(self.judged),
        }
        return {
            "message_id": self.message_id,
            "event_type": self.event_type,
            "publisher_id": PUBLISHER,
            "priority": "INFO" if self.outcome == VERIFIED else "WARN",
            "timestamp": format_timestamp(self.timestamp),
            "payload": payload,
        }


def _text(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


def audit_period(
    rule: Rule, exists: Event, message: dict[str, Any] | None = None
) -> tuple[datetime | None, datetime | None]:
    """The exists event's audit period (beginning, ending), None where it gives none."""
    message = exists.notification if message is None else message
    return read_time(message, rule.period_beginning), read_time(message, rule.period_ending)


def subjects(rule: Rule, exists: Event, message: dict[str, Any] | None = None) -> list[Subject]:
    """The resources an exists reports on: its own, or each item of ``rule.items``."""
    message = exists.notification if message is None else message
    tenant = exists.tenant_id or ""
    if not rule.items:
        if not exists.resource_id:
            return []
        return [Subject(tenant, exists.resource_id, fact(rule, exists, message))]
    items = lookup(message, rule.items)
    found = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        wrapped = {"payload": item}
        resource = lookup(wrapped, rule.item_id)
        if isinstance(resource, (str, int)) and not isinstance(resource, bool) and str(resource).strip():
            found.append(Subject(tenant, str(resource).strip(), fact(rule, exists, wrapped)))
    return found


def judge(
    rule: Rule,
    exists: Event,
    subject: Subject,
    lifecycle: Sequence[Event],
    retention_start: datetime | None,
    message: dict[str, Any] | None = None,
) -> Verdict:
    """Compare one exists (for one subject) with the resource's archived lifecycle events.

    ``lifecycle``: the resource's events of the rule's create, change and
    delete types, any order.  ``retention_start``: the oldest time the
    archive still holds (None: it keeps everything); a launch before it
    cannot be checked, since its create event may have expired.
    """
    beginning, ending = audit_period(rule, exists, message)
    facts = sorted((fact(rule, event) for event in lifecycle), key=lambda f: (f.timestamp, f.message_id))
    creates = [f for f in facts if f.event_type in rule.creates]
    deletes = [f for f in facts if f.event_type in rule.deletes]
    reasons: list[Reason] = []
    judged: list[str] = []
    seen = subject.fact
    reasons += _launch(seen, creates, retention_start, judged)
    reasons += _deletion(seen, deletes, judged)
    reasons += _attributes(rule, seen, facts, ending, judged)
    return Verdict(
        rule=rule,
        outcome=FAILED if reasons else VERIFIED,
        reasons=tuple(reasons),
        tenant_id=subject.tenant_id,
        resource_id=subject.resource_id,
        period_beginning=beginning,
        period_ending=ending,
        exists_message_id=exists.message_id,
        judged=tuple(dict.fromkeys(judged)),
        timestamp=exists.timestamp,
    )


def _launch(
    seen: Fact, creates: list[Fact], retention_start: datetime | None, judged: list[str]
) -> list[Reason]:
    if not creates:
        launched = seen.launched_at
        if launched is not None and (retention_start is None or launched >= retention_start):
            return [Reason(NO_CREATE, f"launched at {format_timestamp(launched)}, no create event archived")]
        return []
    create = creates[-1]
    judged.append(create.message_id)
    archived = create.launched_at or create.timestamp
    if seen.launched_at is not None and abs(seen.launched_at - archived) >= _SAME_TIME:
        return [
            Reason(
                LAUNCHED_AT_DIFFERS,
                f"exists says launched at {format_timestamp(seen.launched_at)}, "
                f"{create.event_type} {create.message_id} at {format_timestamp(archived)}",
            )
        ]
    return []


def _deletion(seen: Fact, deletes: list[Fact], judged: list[str]) -> list[Reason]:
    if seen.deleted_at is None:
        return []
    if not deletes:
        return [
            Reason(NO_DELETE, f"deleted at {format_timestamp(seen.deleted_at)}, no delete event archived")
        ]
    delete = deletes[0]
    judged.append(delete.message_id)
    archived = delete.deleted_at or delete.timestamp
    if abs(seen.deleted_at - archived) >= _SAME_TIME:
        return [
            Reason(
                DELETED_AT_DIFFERS,
                f"exists says deleted at {format_timestamp(seen.deleted_at)}, "
                f"{delete.event_type} {delete.message_id} at {format_timestamp(archived)}",
            )
        ]
    return []


def _attributes(
    rule: Rule, seen: Fact, facts: list[Fact], ending: datetime | None, judged: list[str]
) -> list[Reason]:
    """Each attribute of the exists against the last create or change before the period's end."""
    state: dict[str, tuple[object, Fact]] = {}
    for f in facts:
        if f.event_type in rule.deletes or (ending is not None and f.timestamp >= ending):
            continue
        for name, value in f.attributes.items():
            if value is not None:
                state[name] = (value, f)
    differ = []
    created = any(f.event_type in rule.creates for f in facts)
    for name, value in seen.attributes.items():
        if value is None:
            continue
        if name not in state:
            if created:  # the life is archived from its start, yet nothing set this attribute
                differ.append(f"{name}: exists {value!r}, no archived event before the period's end has it")
            continue
        archived, source = state[name]
        judged.append(source.message_id)
        if archived != value:
            differ.append(f"{name}: exists {value!r}, {source.event_type} {source.message_id} {archived!r}")
    return [Reason(ATTRIBUTES_DIFFER, "; ".join(differ))] if differ else []


def missing(
    rule: Rule, tenant_id: str, resource_id: str, period_start: datetime, period_end: datetime
) -> Verdict:
    """The verdict on a resource alive in a finished audit period with no exists archived for it."""
    return Verdict(
        rule=rule,
        outcome=FAILED,
        reasons=(
            Reason(
                MISSING_EXISTS,
                f"alive from {format_timestamp(period_start)} to {format_timestamp(period_end)}, "
                f"no {rule.exists} archived for it",
            ),
        ),
        tenant_id=tenant_id,
        resource_id=resource_id,
        period_beginning=period_start,
        period_ending=period_end,
        exists_message_id=None,
        judged=(),
        timestamp=period_end,
    )
