"""The audit's counts for ``status`` and ``/metrics``: verdicts per audit period and reason."""

from __future__ import annotations

from typing import Any

from yagi_meter.audit import calendar
from yagi_meter.notification import format_timestamp
from yagi_meter.store import Store

OUTCOMES = ("verified", "failed", "missing")


def audit_report(store: Store, periods: int) -> dict[str, Any]:
    """Exists waiting for their grace period, and per audit period (newest first) the
    verdicts stored: verified, failed and missing, in all and per rule and reason."""
    ledger = store.audit
    rows = []
    for period_ms, counts in ledger.counts(periods):
        row: dict[str, Any] = {"period": format_timestamp(calendar.from_ms(period_ms))}
        row.update({outcome: 0 for outcome in OUTCOMES})
        reasons: dict[str, int] = {}
        rules: dict[str, dict[str, int]] = {}
        for name, n in counts.items():
            rule, outcome, reason = name.split("|", 2)
            if reason:
                reasons[reason] = reasons.get(reason, 0) + n
                continue
            row[outcome] = row.get(outcome, 0) + n
            rules.setdefault(rule, {})[outcome] = n
        row["reasons"] = reasons
        row["rules"] = rules
        rows.append(row)
    return {"due": ledger.due_count(), "checked": ledger.marks_text(), "periods": rows}
