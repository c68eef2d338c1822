"""[audit] options: run starts the audit only when enabled; bad rules fail at start naming the key."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import make_config
from yagi_meter.audit import calendar
from yagi_meter.audit.daemon import rules_of
from yagi_meter.cli import main
from yagi_meter.errors import ConfigError
from yagi_meter.supervisor import DAEMONS, WANTED


def test_run_starts_the_audit_only_when_enabled() -> None:
    assert "audit" in DAEMONS
    assert WANTED["audit"](make_config(audit_enabled="true"))
    assert not WANTED["audit"](make_config())


def test_every_built_in_rule_is_on_by_default_and_services_choose() -> None:
    assert [r.name for r in rules_of(make_config())] == ["nova", "nova-versioned", "cinder", "glance"]
    assert [r.name for r in rules_of(make_config(audit_services="cinder, glance"))] == ["cinder", "glance"]


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"audit_rules": "manila = exists:share.exists"}, "[audit] rules"),
        ({"audit_services": "nova, swift"}, "[audit] services"),
        ({"audit_period": "week"}, "[audit] period"),
        ({"audit_grace_seconds": "-1"}, "[audit] grace_seconds"),
    ],
)
def test_a_bad_audit_option_is_a_configuration_error(settings: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        make_config(**settings)


def test_audit_help_names_check() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "check", "--help"])
    assert exit_info.value.code == 0


@pytest.mark.parametrize(
    ("when", "period", "start", "following"),
    [
        (
            datetime(2026, 12, 31, 23, 59, tzinfo=UTC),
            "hour",
            datetime(2026, 12, 31, 23, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
        (
            datetime(2026, 12, 31, 23, 59, tzinfo=UTC),
            "day",
            datetime(2026, 12, 31, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
        (
            datetime(2026, 12, 31, 23, 59, tzinfo=UTC),
            "month",
            datetime(2026, 12, 1, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
        (
            datetime(2026, 1, 31, 5, tzinfo=UTC),
            "month",
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2026, 2, 1, tzinfo=UTC),
        ),
    ],
)
def test_audit_periods(when: datetime, period: str, start: datetime, following: datetime) -> None:
    assert calendar.floor(when, period) == start
    assert calendar.following(start, period) == following
