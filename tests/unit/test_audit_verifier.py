"""The verifier and periods on real-shaped lifecycles: every removed event is caught with its reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.audit_lifecycles import REMOVALS, SERVICES, lifecycle
from yagi_meter.audit import verifier
from yagi_meter.audit.periods import periods, rule_for
from yagi_meter.audit.rules import BUILT_IN, parse_rules, select
from yagi_meter.notification import Event, parse

BASE = datetime(2026, 11, 2, 8, tzinfo=UTC)
RULES = {rule.name: rule for rule in BUILT_IN}
TENANT, RESOURCE = "tenant-a", "res-1"


def events(steps: dict[str, dict]) -> dict[str, Event]:
    received = BASE + timedelta(days=1)
    return {name: parse(json.dumps(m).encode(), received_at=received) for name, m in steps.items()}


def judge_all(service: str, steps: dict[str, dict]) -> dict[str, verifier.Verdict]:
    """Every exists step's verdict, judged against the other steps of the life."""
    rule = RULES[service]
    found = events(steps)
    life = [e for name, e in found.items() if not name.startswith("exists")]
    verdicts = {}
    for name, event in found.items():
        if name.startswith("exists"):
            [subject] = verifier.subjects(rule, event)
            verdicts[name] = verifier.judge(rule, event, subject, life, BASE - timedelta(days=30))
    return verdicts


def reasons(verdicts: dict[str, verifier.Verdict]) -> dict[str, list[str]]:
    return {name: [r.code for r in v.reasons] for name, v in verdicts.items() if v.reasons}


@pytest.mark.parametrize("service", SERVICES)
def test_a_complete_life_is_verified_every_period(service: str) -> None:
    verdicts = judge_all(service, lifecycle(service, BASE, TENANT, RESOURCE))
    assert len(verdicts) == 4
    assert {v.outcome for v in verdicts.values()} == {"verified"}
    assert all(v.event_type == RULES[service].exists + ".verified" for v in verdicts.values())


@pytest.mark.parametrize(
    ("service", "removed"), sorted(REMOVALS), ids=[f"{s}-{r}" for s, r in sorted(REMOVALS)]
)
def test_each_removed_event_is_caught_with_its_reason(service: str, removed: str) -> None:
    steps = lifecycle(service, BASE, TENANT, RESOURCE)
    del steps[removed]
    verdicts = judge_all(service, steps)
    assert reasons(verdicts) == REMOVALS[(service, removed)]
    for name in REMOVALS[(service, removed)]:
        assert verdicts[name].outcome == "failed"
        assert verdicts[name].event_type == RULES[service].exists + ".failed"


@pytest.mark.parametrize("service", SERVICES)
def test_a_launched_at_that_differs_from_the_create_is_caught(service: str) -> None:
    steps = lifecycle(service, BASE, TENANT, RESOURCE)
    late = lifecycle(service, BASE + timedelta(minutes=5), TENANT, RESOURCE)["create"]
    steps["create"] = late  # the create says launched five minutes later than every exists
    assert reasons(judge_all(service, steps)) == {f"exists-{n}": ["launched_at_differs"] for n in range(4)}


def test_a_launch_before_retention_is_not_expected_to_have_a_create() -> None:
    steps = lifecycle("nova", BASE, TENANT, RESOURCE)
    del steps["create"]
    rule = RULES["nova"]
    found = events(steps)
    [subject] = verifier.subjects(rule, found["exists-0"])
    verdict = verifier.judge(rule, found["exists-0"], subject, [], BASE + timedelta(days=1))
    assert verdict.outcome == "verified"


def test_verdict_ids_are_stable_and_differ_with_what_they_judge() -> None:
    steps = lifecycle("nova", BASE, TENANT, RESOURCE)
    first = judge_all("nova", steps)["exists-1"]
    again = judge_all("nova", steps)["exists-1"]
    assert first.message_id == again.message_id
    assert first.notification() == again.notification()
    del steps["change-1"]
    failed = judge_all("nova", steps)["exists-1"]
    assert failed.message_id != first.message_id


@pytest.mark.parametrize("service", SERVICES)
def test_a_verdict_is_owned_like_the_resource(service: str) -> None:
    """Parsed by the normal path, a verdict lands in the resource's tenant and resource feed."""
    verdict = judge_all(service, lifecycle(service, BASE, TENANT, RESOURCE))["exists-0"]
    event = parse(json.dumps(verdict.notification()).encode(), received_at=BASE)
    assert (event.tenant_id, event.resource_id) == (TENANT, RESOURCE)
    assert event.message_id == verdict.message_id
    assert event.timestamp == verdict.timestamp


def test_a_missing_exists_verdict() -> None:
    rule = RULES["cinder"]
    verdict = verifier.missing(rule, TENANT, RESOURCE, BASE, BASE + timedelta(hours=1))
    note = verdict.notification()
    assert note["event_type"] == "volume.exists.failed"
    assert [r["code"] for r in note["payload"]["reasons"]] == ["missing_exists"]
    event = parse(json.dumps(note).encode(), received_at=BASE)
    assert (event.tenant_id, event.resource_id) == (TENANT, RESOURCE)
    later = verifier.missing(rule, TENANT, RESOURCE, BASE + timedelta(hours=1), BASE + timedelta(hours=2))
    assert later.message_id != verdict.message_id


def test_a_glance_exists_judges_each_image_it_lists() -> None:
    steps = lifecycle("glance", BASE, TENANT, RESOURCE)
    exists = steps["exists-1"]
    other = dict(exists["payload"]["images"][0], id="img-2", size=5)
    exists["payload"]["images"].append(other)
    event = events({"exists-1": exists})["exists-1"]
    subjects = verifier.subjects(RULES["glance"], event)
    assert [(s.tenant_id, s.resource_id) for s in subjects] == [(TENANT, RESOURCE), (TENANT, "img-2")]
    assert subjects[1].fact.attributes == {"size": 5}


# -- periods -------------------------------------------------------------------


def test_periods_of_a_resized_and_resized_back_instance() -> None:
    found = events(lifecycle("nova", BASE, TENANT, RESOURCE))
    life = list(found.values())
    rule = rule_for(BUILT_IN, life)
    assert rule is not None and rule.name == "nova"
    spans = periods(rule, life)
    assert [s.attributes["flavor"] for s in spans] == ["m1.small", "m1.medium", "m1.small"]
    assert [s.attributes["memory_mb"] for s in spans] == [2048, 4096, 2048]
    assert spans[0].start == BASE + timedelta(minutes=10)  # launched_at
    for earlier, later in zip(spans, spans[1:], strict=False):
        assert earlier.end == later.start  # start <= t < end, no gap, no overlap
        assert earlier.closed_by == later.opened_by
    assert spans[-1].end == BASE + timedelta(hours=3, minutes=30)  # deleted_at
    assert spans[-1].closed_by.event_type == "compute.instance.delete.end"
    assert [s.opened_by.message_id for s in spans] == [
        found[n].message_id for n in ("create", "change-1", "change-2")
    ]


def test_a_live_resource_has_an_open_last_period() -> None:
    steps = lifecycle("nova-versioned", BASE, TENANT, RESOURCE)
    del steps["delete"]
    spans = periods(RULES["nova-versioned"], list(events(steps).values()))
    assert len(spans) == 3 and spans[-1].end is None and spans[-1].closed_by is None
    assert spans[-1].as_json()["end"] is None


def test_periods_of_an_image_and_a_volume() -> None:
    image = periods(RULES["glance"], list(events(lifecycle("glance", BASE, TENANT, RESOURCE)).values()))
    assert [s.attributes for s in image] == [{}, {"size": 653262848}]
    volume = periods(RULES["cinder"], list(events(lifecycle("cinder", BASE, TENANT, RESOURCE)).values()))
    assert [s.attributes for s in volume] == [
        {"size_gb": 10, "volume_type": "lvmdriver-1"},
        {"size_gb": 20, "volume_type": "lvmdriver-1"},
        {"size_gb": 20, "volume_type": "ceph"},
    ]


# -- rules -----------------------------------------------------------------------


def test_configured_rules_add_and_change_rules() -> None:
    rules = parse_rules(
        "manila = exists:share.exists creates:share.create.end deletes:share.delete.end "
        "attributes:size=payload.size launched_at:payload.created_at\n"
        "cinder = attributes:size_gb=payload.size\n"
    )
    by_name = {rule.name: rule for rule in rules}
    assert by_name["manila"].lifecycle == ("share.create.end", "share.delete.end")
    assert by_name["manila"].attributes == {"size": ("payload", "size")}
    assert by_name["cinder"].attributes == {"size_gb": ("payload", "size")}
    assert by_name["cinder"].exists == "volume.exists"
    assert [r.name for r in select(rules, ("glance",))] == ["glance"]


@pytest.mark.parametrize(
    "text",
    [
        "manila = exists:share.exists",
        "x = exists:volume.exists creates:a attributes:s=p launched_at:p",
        "nova = colour:blue",
        "nonsense",
    ],
)
def test_bad_rules_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rules(text)
