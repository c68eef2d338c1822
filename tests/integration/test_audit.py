"""The audit on the real Redis: whole lifecycles in, verdicts and periods out, nothing twice."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from lxml import etree

from feeds.app import create_app
from tests.audit_lifecycles import REMOVALS, SERVICES, lifecycle
from tests.conftest import TEST_REDIS_URL, make_config
from tests.feeds_support import assert_valid_atom
from tests.integration.listener_helpers import wait_until
from yagi_meter import status as status_module
from yagi_meter.audit import calendar
from yagi_meter.audit.daemon import Auditor
from yagi_meter.audit.rules import BUILT_IN
from yagi_meter.ingest.ingestor import Ingestor, Message
from yagi_meter.notification import Event
from yagi_meter.store import open_store
from yagi_meter.store.keys import Keys
from yagi_meter.store.pages import LAST, PageQuery

pytestmark = pytest.mark.integration

EXISTS = {rule.name: rule.exists for rule in BUILT_IN}
ATOM = "{http://www.w3.org/2005/Atom}"
TOKENS = "admin-token = admin, a-token = tenant:tenant-a, b-token = tenant:tenant-b"


def hours_ago(n: int) -> datetime:
    return calendar.floor(datetime.now(UTC), "hour") - timedelta(hours=n)


BASE = hours_ago(8)  # the lives below end in period 3 (BASE + 3h), long finished


def audit_config(key_prefix: str, **settings: str):
    values = dict(
        redis_url=TEST_REDIS_URL,
        redis_key_prefix=key_prefix,
        audit_period="hour",
        audit_grace_seconds="0",
        audit_batch_size="7",  # small batches: every loop runs more than once
    )
    values.update(settings)
    return make_config(**values)


def ingest(store, config, messages: list[dict]) -> None:
    Ingestor(store, config).ingest([Message(json.dumps(m).encode(), "test") for m in messages])


def verdicts(store) -> list[Event]:
    """Every verdict in the /audit index, oldest first."""
    _, page = store.pages.read(store.pages.audit_verdicts(), PageQuery(direction=LAST, limit=1000))
    return [item.decode() for item in page.events]


def summary(found: list[Event]) -> dict[tuple[str, str], list[tuple[str, tuple[str, ...], str]]]:
    """(tenant, resource) -> sorted (outcome, reason codes, audit period start) of its verdicts."""
    table: dict = {}
    for event in found:
        payload = event.notification["payload"]
        codes = tuple(r["code"] for r in payload["reasons"])
        key = (event.tenant_id, event.resource_id)
        table.setdefault(key, []).append((payload["outcome"], codes, payload["audit_period_beginning"]))
    return {key: sorted(rows) for key, rows in table.items()}


def period(n: int) -> str:
    return (BASE + timedelta(hours=n)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def expected_for(service: str, removed: tuple[str, ...]) -> list[tuple[str, tuple[str, ...], str]]:
    failing = REMOVALS.get((service, removed[0]), {}) if removed and removed[0] != "exists-1" else {}
    rows = []
    for n in range(4):
        name = f"exists-{n}"
        if name in removed:
            rows.append(("failed", ("missing_exists",), period(n)))
        elif name in failing:
            rows.append(("failed", tuple(failing[name]), period(n)))
        else:
            rows.append(("verified", (), period(n)))
    return sorted(rows)


# Per service: resource -> steps removed from its life.
VARIANTS = {
    "complete": (),
    "no-create": ("create",),
    "no-delete": ("delete",),
    "no-change-1": ("change-1",),
    "no-change-2": ("change-2",),
    "no-exists-1": ("exists-1",),
}


def archive(store, config) -> dict[tuple[str, str], list]:
    """Every service's lives, each variant one resource of tenant-a; returns what the audit must say."""
    expected = {}
    messages = []
    for service in SERVICES:
        for variant, removed in VARIANTS.items():
            if service == "glance" and variant == "no-change-2":
                continue  # an image has one change only (its upload)
            resource = f"{service}-{variant}"
            steps = lifecycle(service, BASE, "tenant-a", resource)
            for name in removed:
                del steps[name]
            messages += steps.values()
            expected[("tenant-a", resource)] = expected_for(service, removed)
    ingest(store, config, messages)
    return expected


def test_audit_check_catches_every_removed_event_and_a_rerun_adds_nothing(key_prefix: str) -> None:
    config = audit_config(key_prefix)
    store = open_store(config)
    expected = archive(store, config)
    report = Auditor(config, store).check(since=BASE)
    found = verdicts(store)
    assert summary(found) == expected
    assert report.stored == len(found) == sum(len(rows) for rows in expected.values())
    for event in found:
        rule = event.notification["payload"]["audit_rule"]
        outcome = event.notification["payload"]["outcome"]
        assert event.event_type == f"{EXISTS[rule]}.{outcome}"

    events_before = store.events.count()
    again = Auditor(config, store).check(since=BASE)
    assert again.stored == 0 and store.events.count() == events_before
    rebuilt = Auditor(config, store).check(since=BASE, reset=True)
    assert rebuilt.judged == report.judged and rebuilt.missing == report.missing
    assert rebuilt.stored == 0 and store.events.count() == events_before


def test_a_resource_alive_with_no_exists_is_missing_every_finished_period(key_prefix: str) -> None:
    config = audit_config(key_prefix)
    store = open_store(config)
    steps = lifecycle("nova", BASE, "tenant-a", "still-running")
    del steps["delete"], steps["exists-3"]
    ingest(store, config, list(steps.values()))
    Auditor(config, store).check(since=BASE)
    rows = summary(verdicts(store))[("tenant-a", "still-running")]
    missing = [row[2] for row in rows if row[1] == ("missing_exists",)]
    finished = [period(n) for n in range(3, 8)]  # periods 3..7 ended; period 8 (this hour) has not
    assert missing == finished
    assert [row[0] for row in rows if row[1] != ("missing_exists",)] == ["verified"] * 3


def test_audit_keys_are_bounded_once_periods_are_checked(key_prefix: str, redis_server: redis.Redis) -> None:
    config = audit_config(key_prefix)
    store = open_store(config)
    archive(store, config)
    Auditor(config, store).check(since=BASE)
    keys = {k.decode().removeprefix(key_prefix) for k in redis_server.scan_iter(match=f"{key_prefix}audit:*")}
    assert not any(k.startswith("audit:seen:") for k in keys), keys  # every period checked, forgotten
    assert redis_server.zcard(f"{key_prefix}audit:due") == 0
    # every resource was deleted (an exists saying so counts): none is remembered as alive
    assert not any(k.startswith("audit:alive:") and redis_server.zcard(key_prefix + k) for k in keys)
    assert redis_server.zcard(f"{key_prefix}audit:count_periods") <= config.audit.keep_periods


def test_no_more_exists_are_read_while_max_due_wait(key_prefix: str) -> None:
    config = audit_config(key_prefix, audit_grace_seconds="3600", audit_max_due="4")
    store = open_store(config)
    ingest(store, config, list(lifecycle("nova", BASE, "tenant-a", "vm-1").values()))
    auditor = Auditor(config, store)
    assert auditor.track().caught_up
    assert auditor.ledger.due_count() == 4
    ingest(store, config, list(lifecycle("nova", BASE, "tenant-a", "vm-2").values()))
    held = auditor.track()
    assert not held.caught_up and held.read == 2  # its create and delete, not its exists
    assert auditor.ledger.due_count() == 4
    later = Auditor(config, store, clock=lambda: time.time() + 3700)
    assert later.check(since=BASE).judged == 8
    assert later.ledger.due_count() == 0


def test_an_exists_waits_for_its_grace_period(key_prefix: str) -> None:
    config = audit_config(key_prefix, audit_grace_seconds="3600")
    store = open_store(config)
    ingest(store, config, list(lifecycle("cinder", BASE, "tenant-a", "vol-1").values()))
    now = Auditor(config, store).check(since=BASE)
    assert now.judged == 0 and not verdicts(store)
    later = Auditor(config, store, clock=lambda: time.time() + 3700).check(since=BASE)
    assert later.judged == 4
    assert [row[0] for row in summary(verdicts(store))[("tenant-a", "vol-1")]] == ["verified"] * 4


def test_a_failing_pass_is_recorded_and_retried_until_redis_answers(
    key_prefix: str, redis_server: redis.Redis
) -> None:
    # A real Redis error, no mock: the audit's due set holds a string, so every pass fails WRONGTYPE.
    config = audit_config(key_prefix, audit_poll_seconds="0.05")
    store = open_store(config)
    ingest(store, config, list(lifecycle("cinder", BASE, "tenant-a", "vol-1").values()))
    due = Keys.partitions(key_prefix, config.redis.partition_count)[0].audit_due
    redis_server.set(due, "not a zset")
    auditor = Auditor(config, store)
    thread = threading.Thread(target=auditor.run)
    thread.start()
    try:
        wait_until(
            lambda: (
                sum(e.component == "audit" and "WRONGTYPE" in e.text for e in store.errors.recent(50)) >= 2
            ),
            20,
            "two failed passes recorded under 'audit'",
        )
        assert not verdicts(store)
        redis_server.delete(due)
        wait_until(lambda: len(verdicts(store)) >= 4, 20, "the verdicts once Redis answers")
    finally:
        auditor.stop()
        thread.join(20)
    assert not thread.is_alive()
    assert [row[0] for row in summary(verdicts(store))[("tenant-a", "vol-1")]] == ["verified"] * 4


def test_verdicts_are_in_the_resource_feed_and_in_the_admin_audit_feed(key_prefix: str) -> None:
    config = audit_config(key_prefix, auth_mode="token", auth_tokens=TOKENS)
    store = open_store(config)
    steps = lifecycle("nova-versioned", BASE, "tenant-a", "vm-1")
    del steps["change-1"]
    ingest(store, config, list(steps.values()))
    Auditor(config, store).check(since=BASE)
    client = create_app(config, store).test_client()
    own = client.get("/tenants/tenant-a/resources/vm-1/events?limit=100", headers={"X-Auth-Token": "a-token"})
    assert own.status_code == 200
    titles = [e.text for e in etree.fromstring(own.data).iter(f"{ATOM}title")][1:]
    assert titles.count("instance.exists.verified") == 3 and titles.count("instance.exists.failed") == 1
    assert client.get("/audit", headers={"X-Auth-Token": "a-token"}).status_code == 403
    audit = client.get("/audit?limit=100", headers={"X-Auth-Token": "admin-token"})
    assert audit.status_code == 200
    assert_valid_atom(audit.data)
    audit_titles = [e.text for e in etree.fromstring(audit.data).iter(f"{ATOM}title")][1:]
    assert sorted(audit_titles) == sorted(["instance.exists.failed"] + ["instance.exists.verified"] * 3)
    failed = client.get("/audit?event_type=*.failed", headers={"X-Auth-Token": "admin-token"})
    assert [e.text for e in etree.fromstring(failed.data).iter(f"{ATOM}title")][1:] == [
        "instance.exists.failed"
    ]
    # Verdicts are entries like any: Base64 JSON content with a summary, JSON on request.
    entries = list(etree.fromstring(audit.data).iter(f"{ATOM}entry"))
    assert all(e.find(f"{ATOM}summary") is not None for e in entries)
    assert {json.loads(base64.b64decode(e.find(f"{ATOM}content").text))["publisher_id"] for e in entries} == {
        "yagi-meter.audit"
    }
    as_json = client.get("/audit?limit=100&format=json", headers={"X-Auth-Token": "admin-token"})
    assert as_json.mimetype == "application/json"
    assert sorted(e["title"] for e in as_json.get_json()["feed"]["entry"]) == sorted(audit_titles)
    weak = f"W/{audit.headers['ETag']}"
    again = client.get("/audit?limit=100", headers={"X-Auth-Token": "admin-token", "If-None-Match": weak})
    assert again.status_code == 304


def test_usage_periods_as_json_and_atom(key_prefix: str) -> None:
    config = audit_config(key_prefix, auth_mode="token", auth_tokens=TOKENS)
    store = open_store(config)
    ingest(store, config, list(lifecycle("nova", BASE, "tenant-a", "vm-2").values()))
    client = create_app(config, store).test_client()
    path = "/tenants/tenant-a/resources/vm-2/periods"
    as_json = client.get(path, headers={"X-Auth-Token": "a-token", "Accept": "application/json"})
    assert as_json.status_code == 200 and as_json.mimetype == "application/json"
    document = as_json.get_json()
    assert document["rule"] == "nova" and document["complete"] is True
    spans = document["periods"]
    assert [(s["attributes"]["flavor"], s["attributes"]["vcpus"]) for s in spans] == [
        ("m1.small", 1),
        ("m1.medium", 2),
        ("m1.small", 1),
    ]
    assert spans[0]["start"] == (BASE + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert [s["end"] for s in spans[:-1]] == [s["start"] for s in spans[1:]]
    assert spans[-1]["closed_by"]["event_type"] == "compute.instance.delete.end"
    assert client.get(path + "?format=json", headers={"X-Auth-Token": "a-token"}).get_json() == document

    feed = client.get(path, headers={"X-Auth-Token": "a-token"})
    assert feed.mimetype == "application/atom+xml"
    assert_valid_atom(feed.data)
    contents = [
        json.loads(base64.b64decode(c.text)) for c in etree.fromstring(feed.data).iter(f"{ATOM}content")
    ]
    assert contents == list(reversed(spans))  # newest first
    entries = list(etree.fromstring(feed.data).iter(f"{ATOM}entry"))
    assert [e.find(f"{ATOM}summary").text.split(" from ")[0] for e in entries] == ["vm-2"] * 3
    etag = feed.headers["ETag"]
    assert client.get(path, headers={"X-Auth-Token": "a-token", "If-None-Match": etag}).status_code == 304
    weak = {"X-Auth-Token": "a-token", "If-None-Match": f"W/{etag}"}
    assert client.get(path, headers=weak).status_code == 304
    assert as_json.headers["ETag"] != etag  # each representation its own ETag
    assert "Accept-Encoding" in feed.headers["Vary"]
    packed = client.get(path, headers={"X-Auth-Token": "a-token", "Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip" and packed.headers["ETag"] != etag
    assert gzip.decompress(packed.data) == feed.data
    page = client.get(path, headers={"X-Auth-Token": "a-token", "Accept": "text/html"})
    assert page.mimetype == "text/html" and b"m1.medium" in page.data
    assert client.get(path + "?format=xml", headers={"X-Auth-Token": "a-token"}).status_code == 400

    assert client.get(path, headers={"X-Auth-Token": "b-token"}).status_code == 403
    assert client.get(path + "?limit=3", headers={"X-Auth-Token": "a-token"}).status_code == 400
    missing = client.get("/tenants/tenant-a/resources/nope/periods", headers={"X-Auth-Token": "a-token"})
    assert missing.status_code == 404


def test_status_and_metrics_count_verdicts_per_period_and_reason(key_prefix: str) -> None:
    config = audit_config(key_prefix)
    store = open_store(config)
    steps = lifecycle("nova", BASE, "tenant-a", "vm-3")
    del steps["change-1"], steps["exists-2"]
    ingest(store, config, list(steps.values()))
    Auditor(config, store).check(since=BASE)
    report = status_module.collect(store, config)["audit"]
    rows = {row["period"]: row for row in report["periods"]}
    assert rows[period(0)]["verified"] == 1
    assert rows[period(1)]["failed"] == 1 and rows[period(1)]["reasons"] == {"attributes_differ": 1}
    assert rows[period(2)]["missing"] == 1 and rows[period(2)]["reasons"] == {"missing_exists": 1}
    assert rows[period(3)]["verified"] == 1
    assert report["due"] == 0
    metrics = create_app(config, store).test_client().get("/metrics").data.decode()
    assert (
        f'yagi_audit_verdicts{{outcome="failed",period="{period(1)}",reason="attributes_differ"}} 1.0'
        in metrics
    )
    assert f'yagi_audit_verdicts{{outcome="missing",period="{period(2)}",reason=""}} 1.0' in metrics
    assert "yagi_audit_due 0.0" in metrics
