"""Audit periods: hour, day or month, in UTC, as nova's ``instance_usage_audit_period``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

PERIODS = ("hour", "day", "month")


def floor(when: datetime, period: str) -> datetime:
    """The start of the period holding ``when`` (aware UTC)."""
    when = when.astimezone(UTC)
    if period == "hour":
        return when.replace(minute=0, second=0, microsecond=0)
    if period == "day":
        return when.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"no audit period {period!r}")


def following(start: datetime, period: str) -> datetime:
    """The start of the period after the one starting at ``start``."""
    if period == "hour":
        return start + timedelta(hours=1)
    if period == "day":
        return start + timedelta(days=1)
    if period == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    raise ValueError(f"no audit period {period!r}")


def to_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
