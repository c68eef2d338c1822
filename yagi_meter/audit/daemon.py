"""``yagi-meter audit``: follow the archive's exists and lifecycle events, judge them, store verdicts.

One pass (``step``) does three things, each bounded by ``[audit] batch_size``:

1. *track*: read the new entries of every audited event type's ``type:``
   index (a cursor per type) and note in the audit's keys which resources
   were launched and deleted when, which have an exists for which audit
   period, and when each exists is due (archived + grace);
2. *verify*: judge the exists events whose grace is over against their
   resource's archived lifecycle (verifier.py) and store the verdicts;
3. *missing*: once the tracker has caught up and a period's end + grace is
   past, report every resource alive in it with no exists, and forget that
   period's sightings.

Verdicts go through the ingest path like any notification, so they reach the
resource's tenant feed, ``/audit``, push and forward; their ids are stable
(verifier.py), so running a pass twice stores nothing new.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from yagi_meter.audit import calendar
from yagi_meter.audit.facts import fact
from yagi_meter.audit.rules import Rule, parse_rules, select
from yagi_meter.audit.verifier import MISSING_EXISTS, Verdict, audit_period, judge, missing, subjects
from yagi_meter.config import Config
from yagi_meter.daemon import Backoff, Lifecycle
from yagi_meter.errors import StoreError
from yagi_meter.ingest.ingestor import Ingestor, Message
from yagi_meter.notification import Event
from yagi_meter.store import Store
from yagi_meter.store.audit import Tracking, member, resource_of
from yagi_meter.store.events import Ingested

log = logging.getLogger(__name__)

CREATE, DELETE, EXISTS = "create", "delete", "exists"
# Most audit periods one pass checks for missing exists per rule (the rest next pass).
PERIODS_PER_PASS = 24
# Most lifecycle events returned for one resource.
MOST_LIFECYCLE_EVENTS = 1000
SOURCE = "audit"
COMPONENT = "audit"  # its name in the store's error log
# Longest wait after failed passes in a row (the first waits poll_seconds, doubling, jittered).
MAX_RETRY_SECONDS = 30.0


@dataclass
class PassReport:
    """What one pass, or one ``audit check``, did."""

    read: int = 0  # index entries the tracker read
    judged: int = 0  # exists verdicts made (stored or already there)
    missing: int = 0  # missing-exists verdicts made
    stored: int = 0  # verdicts new to the archive
    periods: int = 0  # audit periods checked for missing exists
    caught_up: bool = True

    def add(self, other: PassReport) -> None:
        self.read += other.read
        self.judged += other.judged
        self.missing += other.missing
        self.stored += other.stored
        self.periods += other.periods
        self.caught_up = other.caught_up

    @property
    def worked(self) -> bool:
        return bool(self.read or self.judged or self.missing or self.periods)


def rules_of(config: Config) -> tuple[Rule, ...]:
    return select(parse_rules(config.audit.rules), config.audit.services)


class Auditor:
    """The audit's passes over the archive; ``run`` loops until ``stop()`` or SIGTERM."""

    def __init__(self, config: Config, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.rules = rules_of(config)
        self.by_exists = {rule.exists: rule for rule in self.rules}
        self.roles: dict[str, list[tuple[Rule, str]]] = {}
        for rule in self.rules:
            for kind, types in ((CREATE, rule.creates), (DELETE, rule.deletes), (EXISTS, (rule.exists,))):
                for event_type in types:
                    self.roles.setdefault(event_type, []).append((rule, kind))
        self.ledger = store.audit
        self.ingestor = Ingestor(store, config)
        audit = config.audit
        self.period = audit.period
        self.grace_ms = int(audit.grace_seconds * 1000)
        self.batch = audit.batch_size
        self.max_due = audit.max_due
        self.keep_periods = audit.keep_periods
        self.scan_limit = audit.lifecycle_scan_limit
        self.poll_seconds = audit.poll_seconds
        self.ingest_batch = config.amqp.batch_size
        self.retention_days = config.redis.retention_days
        self.clock = clock
        self.lifecycle = Lifecycle(COMPONENT, store.errors)

    # -- the loop --------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run`` to end after the step it is in (SIGTERM does, through ``lifecycle``)."""
        self.lifecycle.stop()

    @property
    def stopped(self) -> bool:
        return self.lifecycle.stopping

    def run(self) -> None:
        """Pass after pass until stopped; a Redis failure is logged, recorded and retried with backoff."""
        log.info(
            "auditing %s every %s, grace %ds",
            ", ".join(f"{rule.name} ({rule.exists})" for rule in self.rules),
            self.period,
            self.grace_ms // 1000,
        )
        retry = Backoff(self.poll_seconds, MAX_RETRY_SECONDS)
        while not self.stopped:
            try:
                report = self.step()
                retry.reset()
            except StoreError as e:
                delay = retry.next()
                log.warning("audit pass failed (attempt %d, next in %.1fs): %s", retry.failures, delay, e)
                self.lifecycle.record(str(e))
                self.lifecycle.wait(delay)
                continue
            if report.worked:
                log.info(
                    "audit pass: read %d index entries, judged %d exists, %d missing, %d verdicts new",
                    report.read,
                    report.judged,
                    report.missing,
                    report.stored,
                )
            else:  # work left: the next pass starts at once
                self.lifecycle.wait(self.poll_seconds)
        log.info("audit stopped")

    def step(self, since: datetime | None = None) -> PassReport:
        """One pass: track, verify what is due, check finished periods once caught up."""
        report = self.track()
        judged = self.verify_due(since)
        report.judged, report.stored = judged.judged, judged.stored
        if report.caught_up:
            checked = self.check_missing()
            report.missing, report.periods = checked.missing, checked.periods
            report.stored += checked.stored
        return report

    def check(self, since: datetime, reset: bool = False) -> PassReport:
        """``audit check --since``: passes until nothing more is due or checkable now.

        Periods before ``since`` are not checked for missing exists, nor exists
        about them judged; with ``reset`` the audit's own state is rebuilt from
        the archive first (verdicts already stored are not stored again).
        """
        if reset:
            removed = self.ledger.reset()
            log.info("audit state reset: %d keys removed", removed)
        since_ms = calendar.to_ms(calendar.floor(since, self.period))
        marks = self.ledger.marks()
        for rule in self.rules:
            mark = marks.get(rule.name)
            if mark is None:
                self.ledger.set_mark(rule.name, since_ms)
            elif mark < since_ms:
                self.ledger.close_periods(
                    rule.name, self._periods(mark, since_ms), since_ms, {}, self.keep_periods
                )
        total = PassReport()
        while True:
            report = self.step(since)
            total.add(report)
            if report.caught_up and not report.worked:
                return total

    # -- 1. track ---------------------------------------------------------------

    def track(self) -> PassReport:
        """Read one batch of every audited event type's new index entries."""
        report = PassReport()
        marks = self.ledger.marks()
        due_full = self.ledger.due_count() >= self.max_due
        for event_type, roles in self.roles.items():
            if due_full and any(kind == EXISTS for _, kind in roles):
                report.caught_up = False
                continue
            for partition in range(self.ledger.partitions):
                after = self.ledger.cursor(event_type, partition)
                seqs = self.ledger.new_seqs(event_type, after, self.batch, partition)
                if not seqs:
                    continue
                tracking = Tracking(event_type, seqs[-1])
                for event in self.store.events.get_many(seqs):
                    for rule, kind in roles:
                        self._learn(rule, kind, event, tracking)
                self.ledger.record(tracking, marks.get)
                report.read += len(seqs)
                if len(seqs) == self.batch:
                    report.caught_up = False
        return report

    def _learn(self, rule: Rule, kind: str, event: Event, tracking: Tracking) -> None:
        if kind == EXISTS:
            self._learn_exists(rule, event, tracking)
            return
        if not event.tenant_id or not event.resource_id:
            return
        name = member(event.tenant_id, event.resource_id)
        seen = fact(rule, event)
        if kind == CREATE:
            at = calendar.to_ms(seen.launched_at or event.timestamp)
            _earliest(tracking.launched, name, rule.name, at)
        else:
            at = calendar.to_ms(seen.deleted_at or event.timestamp)
            _earliest(tracking.deleted, name, rule.name, at)
        self._first_period(rule, at, tracking)

    def _learn_exists(self, rule: Rule, event: Event, tracking: Tracking) -> None:
        ingested = event.ingested_at or event.timestamp
        tracking.due[event.seq or 0] = calendar.to_ms(ingested) + self.grace_ms
        message = event.notification
        beginning, ending = audit_period(rule, event, message)
        period_ms = calendar.to_ms(calendar.floor(beginning or ending or event.timestamp, self.period))
        self._first_period(rule, period_ms, tracking)
        for subject in subjects(rule, event, message):
            name = member(subject.tenant_id, subject.resource_id)
            if subject.fact.launched_at is not None:
                _earliest(tracking.launched, name, rule.name, calendar.to_ms(subject.fact.launched_at))
            else:
                tracking.alive.append((rule.name, name))
            if subject.fact.deleted_at is not None:
                _earliest(tracking.deleted, name, rule.name, calendar.to_ms(subject.fact.deleted_at))
            tracking.seen.append((rule.name, period_ms, name))

    def _first_period(self, rule: Rule, at_ms: int, tracking: Tracking) -> None:
        start = calendar.to_ms(calendar.floor(calendar.from_ms(at_ms), self.period))
        known = tracking.first_period.get(rule.name)
        tracking.first_period[rule.name] = start if known is None else min(known, start)

    # -- 2. verify ---------------------------------------------------------------

    def verify_due(self, since: datetime | None = None) -> PassReport:
        """Judge one batch of exists events whose grace period is over."""
        report = PassReport()
        now = self.clock()
        seqs = self.ledger.due(int(now * 1000), self.batch)
        if not seqs:
            return report
        tasks = []
        for event in self.store.events.get_many(seqs):  # an expired one is simply gone
            rule = self.by_exists.get(event.event_type)
            if rule is None:
                continue
            message = event.notification
            beginning, ending = audit_period(rule, event, message)
            if since is not None and (ending or event.timestamp) < since:
                continue
            for subject in subjects(rule, event, message):
                tasks.append((rule, event, message, subject))
        lifecycles = self.ledger.lifecycle_many(
            [(s.tenant_id, s.resource_id) for _, _, _, s in tasks],
            [rule.lifecycle for rule, _, _, _ in tasks],
            self.scan_limit,
            MOST_LIFECYCLE_EVENTS,
        )
        retention_start = None
        if self.retention_days > 0:
            retention_start = calendar.from_ms(int((now - self.retention_days * 86400) * 1000))
        verdicts = []
        for (rule, event, message, subject), lifecycle in zip(tasks, lifecycles, strict=True):
            if not lifecycle.complete:
                log.warning(
                    "audit: %s %s (event_type %s): resource %s has more events than "
                    "lifecycle_scan_limit; judged on the oldest",
                    rule.name,
                    event.message_id,
                    event.event_type,
                    subject.resource_id,
                )
            verdicts.append(judge(rule, event, subject, lifecycle.events, retention_start, message))
        counts: dict[tuple[int, str], int] = {}
        report.stored = self._store_verdicts(verdicts, counts)
        report.judged = len(verdicts)
        self.ledger.done(seqs, counts, self.keep_periods)
        return report

    def _store_verdicts(self, verdicts: Sequence[Verdict], counts: dict[tuple[int, str], int]) -> int:
        """Ingest verdicts; count the ones new to the archive into ``counts``; return how many."""
        stored = 0
        for start in range(0, len(verdicts), self.ingest_batch):
            chunk = verdicts[start : start + self.ingest_batch]
            by_id = {v.message_id: v for v in chunk}
            messages = [Message(json.dumps(v.notification(), sort_keys=True).encode(), SOURCE) for v in chunk]
            batch = self.ingestor.prepare(messages)
            result = self.store.events.send(batch.call).result()
            self.ingestor.summarize(batch, result)
            if batch.quarantined:
                log.error(
                    "audit: %d verdicts were quarantined (a bug): see yagi-meter quarantine list",
                    batch.quarantined,
                )
            for outcome in result.outcomes:
                verdict = by_id.get(outcome.event.message_id)
                if verdict is None or outcome.status is not Ingested.STORED:
                    continue
                stored += 1
                _count(verdict, self.period, counts)
        return stored

    # -- 3. missing --------------------------------------------------------------

    def check_missing(self) -> PassReport:
        """Check finished audit periods (end + grace past) for resources with no exists."""
        report = PassReport()
        now_ms = int(self.clock() * 1000)
        marks = self.ledger.marks()
        for rule in self.rules:
            mark = marks.get(rule.name)
            if mark is None:
                continue
            start = calendar.from_ms(mark)
            for _ in range(PERIODS_PER_PASS):
                end = calendar.following(start, self.period)
                if calendar.to_ms(end) + self.grace_ms > now_ms or self.stopped:
                    break
                report.missing += self._check_period(rule, start, end, report)
                report.periods += 1
                start = end
        return report

    def _check_period(self, rule: Rule, start: datetime, end: datetime, report: PassReport) -> int:
        start_ms, end_ms = calendar.to_ms(start), calendar.to_ms(end)
        counts: dict[tuple[int, str], int] = {}
        found, offset, pending = 0, 0, []
        while True:
            rows = self.ledger.alive_since(rule.name, start_ms, offset, self.batch)
            if not rows:
                break
            offset += len(rows)
            candidates = [name for name, launched in rows if launched is not None and launched < end_ms]
            for name, seen in zip(
                candidates, self.ledger.seen_in(rule.name, start_ms, candidates), strict=True
            ):
                if not seen:
                    tenant, resource = resource_of(name)
                    pending.append(missing(rule, tenant, resource, start, end))
            if len(pending) >= self.batch:
                report.stored += self._store_verdicts(pending, counts)
                found += len(pending)
                pending = []
        report.stored += self._store_verdicts(pending, counts)
        found += len(pending)
        self.ledger.close_periods(rule.name, [start_ms], end_ms, counts, self.keep_periods)
        if found:
            log.warning(
                "audit: %s: %d resources alive from %s to %s have no %s",
                rule.name,
                found,
                start.isoformat(),
                end.isoformat(),
                rule.exists,
            )
        return found

    def _periods(self, first_ms: int, end_ms: int) -> list[int]:
        found, start = [], calendar.from_ms(first_ms)
        while calendar.to_ms(start) < end_ms:
            found.append(calendar.to_ms(start))
            start = calendar.following(start, self.period)
        return found


def _earliest(table: dict[str, tuple[str, int]], name: str, rule: str, ms: int) -> None:
    known = table.get(name)
    if known is None or ms < known[1]:
        table[name] = (rule, ms)


def _count(verdict: Verdict, period: str, counts: dict[tuple[int, str], int]) -> None:
    """Count one stored verdict under its audit period: in all, and per reason."""
    when = verdict.period_beginning or verdict.period_ending or verdict.timestamp
    period_ms = calendar.to_ms(calendar.floor(when, period))
    is_missing = any(reason.code == MISSING_EXISTS for reason in verdict.reasons)
    outcome = "missing" if is_missing else verdict.outcome
    names = [f"{verdict.rule.name}|{outcome}|"]
    names += [f"{verdict.rule.name}|{outcome}|{reason.code}" for reason in verdict.reasons]
    for name in names:
        counts[(period_ms, name)] = counts.get((period_ms, name), 0) + 1


__all__ = ["Auditor", "PassReport", "rules_of"]
