"""The AtomPub forwarder against a real archive server on 127.0.0.1 and the real Redis."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.integration.forwarding import (
    drained,
    forward_config,
    free_port,
    ingest,
    outbox,
    running,
    spawn_forwarder,
    wait_until,
)
from tests.servers.atomhopper import AtomHopper
from tests.servers.keystone import FakeKeystone
from yagi_meter import atom, cli
from yagi_meter.store import open_store

pytestmark = pytest.mark.integration


@pytest.fixture
def archive():
    with AtomHopper(validate=True) as server:
        yield server


def assert_archived_once(archive: AtomHopper, sent: dict[str, str]) -> None:
    assert archive.ids() == set(sent)
    assert all(archive.created[entry_id] == 1 for entry_id in sent)


def test_every_event_is_archived_exactly_once_with_requests_in_parallel(archive, key_prefix):
    config = forward_config(key_prefix, archive.url(), forward_concurrency="4")
    archive.delay = 0.01
    sent = ingest(config, 120)
    with running(config):
        wait_until(drained(config), what="backlog to drain")
    assert_archived_once(archive, sent)
    assert archive.posts.total() == len(sent)
    assert 1 < archive.max_in_flight <= 4
    recent = open_store(config).archived.recent(1)
    assert recent[0].status == 201
    assert recent[0].location.startswith(archive.url() + "/entries/urn")


def test_each_event_type_goes_to_its_target_collection(archive, key_prefix):
    targets = (
        f"instance.* = {archive.url('/nova/instances')}\naggregate.* = {archive.url('/nova/aggregates')}"
    )
    config = forward_config(key_prefix, archive.url("/nova/events"), forward_targets=targets)
    sent = ingest(config, 70)
    with running(config):
        wait_until(drained(config))
    by_prefix = {
        "/nova/instances": {i for i, t in sent.items() if t.startswith("instance.")},
        "/nova/aggregates": {i for i, t in sent.items() if t.startswith("aggregate.")},
    }
    by_prefix["/nova/events"] = set(sent) - by_prefix["/nova/instances"] - by_prefix["/nova/aggregates"]
    for path, ids in by_prefix.items():
        assert ids and archive.ids(path) == ids, path


def test_event_types_filter_keeps_other_events_out_of_the_outbox(archive, key_prefix):
    config = forward_config(key_prefix, archive.url(), forward_event_types="instance.create.*, keypair.*")
    sent = ingest(config, 70)
    wanted = {i for i, t in sent.items() if t.startswith(("instance.create.", "keypair."))}
    assert outbox(open_store(config)).backlog() == len(wanted) == 5
    with running(config):
        wait_until(drained(config))
    assert archive.ids() == wanted


def test_forwarder_killed_mid_way_loses_nothing(archive, key_prefix, tmp_path):
    config = forward_config(key_prefix, archive.url())
    archive.delay = 0.02
    sent = ingest(config, 300)
    first = spawn_forwarder(config, tmp_path / "first.log")
    try:
        wait_until(lambda: len(archive.created) >= 40, what="some events archived")
    finally:
        first.kill()  # SIGKILL: no clean-up at all, leases held
        first.wait()
    assert len(archive.created) < len(sent)
    second = spawn_forwarder(config, tmp_path / "second.log")
    try:
        wait_until(drained(config), timeout=40, what="backlog to drain after the restart")
    finally:
        second.terminate()
        assert second.wait(timeout=20) == 0
    assert_archived_once(archive, sent)  # what the first had in flight was answered 409


def test_archive_down_then_failing_then_up_drains_the_backlog(key_prefix):
    port = free_port()
    config = forward_config(key_prefix, f"http://127.0.0.1:{port}/namespace/feed")
    sent = ingest(config, 50)
    store = open_store(config)
    with running(config):
        wait_until(lambda: any("Connection refused" in e.text for e in store.errors.recent()))
        with AtomHopper(port, validate=True) as archive:
            archive.fail_status = 500
            wait_until(lambda: archive.statuses[500] >= 5, what="500s")
            archive.fail_status = None
            wait_until(drained(config), what="backlog to drain")
    assert_archived_once(archive, sent)
    assert any("HTTP 500" in e.text for e in store.errors.recent(200))


def test_timeouts_are_retried_and_the_late_copies_answered_409(archive, key_prefix):
    config = forward_config(key_prefix, archive.url(), forward_timeout="0.3", forward_concurrency="2")
    sent = ingest(config, 20)
    archive.delay = 0.6  # stored after the client gave up
    with running(config):
        wait_until(lambda: len(archive.created) >= 2, what="late stores")
        archive.delay = 0
        wait_until(drained(config))
    assert_archived_once(archive, sent)
    assert archive.statuses[409] >= 1


def test_400_is_dead_lettered_and_can_be_retried(archive, key_prefix, monkeypatch, capsys):
    config = forward_config(key_prefix, archive.url())
    sent = ingest(config, 10)
    refused = sorted(sent)[3]
    archive.refuse[refused] = 400
    with running(config):
        wait_until(drained(config))
    assert archive.ids() == set(sent) - {refused}
    store = open_store(config)
    [letter] = store.dead_letters.list()
    assert (f"urn:uuid:{atom.entry_uuid(letter.message_id)}", letter.status, letter.url) == (
        refused,
        400,
        archive.url(),
    )
    assert letter.event_type == sent[refused] and "bad category" in letter.body
    assert any(refused.removeprefix("urn:uuid:") in e.text for e in store.errors.recent())

    for name, value in {"YAGI_CONFIG": "/dev/null", "YAGI_REDIS_URL": config.redis.url}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("YAGI_REDIS_KEY_PREFIX", key_prefix)
    monkeypatch.setenv("YAGI_FORWARD_URL", config.forward.url)
    assert cli.main(["forward", "dead-letters", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["id"] == letter.id and listed["status"] == 400

    del archive.refuse[refused]  # the operator fixed the archive's rule
    assert cli.main(["forward", "dead-letters", "retry", letter.id]) == 0
    assert "re-driven 1" in capsys.readouterr().out
    assert store.dead_letters.count() == 0
    assert outbox(store).backlog() == 1
    with running(config):
        wait_until(drained(config))
    assert_archived_once(archive, sent)


def test_401_with_basic_auth_reauthenticates_once_then_succeeds(archive, key_prefix):
    config = forward_config(
        key_prefix, archive.url(), forward_auth="basic", forward_username="yagi", forward_password="s3cret"
    )
    refusals = iter([True])  # the archive's session store forgot us once
    good = "Basic eWFnaTpzM2NyZXQ="

    def authorize(headers):
        return headers.get("Authorization") == good and not next(refusals, False)

    archive.authorize = authorize
    sent = ingest(config, 10)
    with running(config):
        wait_until(drained(config))
    assert_archived_once(archive, sent)
    assert archive.statuses[401] == 1
    assert archive.statuses.total() == len(sent) + 1  # the refused one sent again at once


def test_401_with_keystone_gets_a_new_token_once_then_succeeds(archive, key_prefix):
    with FakeKeystone() as keystone:
        keystone.add_user("yagi", "secret", "service")
        archive.authorize = lambda headers: keystone._valid(headers.get("X-Auth-Token")) is not None
        config = forward_config(
            key_prefix,
            archive.url(),
            forward_auth="keystone",
            forward_keystone_url=keystone.auth_url,
            forward_username="yagi",
            forward_password="secret",
            forward_project_name="service",
        )
        first = ingest(config, 10)
        with running(config):
            wait_until(drained(config))
            assert keystone.issued_count == 1
            keystone.revoke_all()  # e.g. Keystone restarted with new fernet keys
            second = ingest(config, 30)
            wait_until(drained(config))
        assert keystone.issued_count == 2  # one renewal for all threads refused at once
    assert_archived_once(archive, {**first, **second})
    assert archive.statuses[401] >= 1


def test_two_forwarders_never_post_an_entry_twice(archive, key_prefix):
    config = forward_config(key_prefix, archive.url(), forward_lease_seconds="30")
    archive.delay = 0.005
    sent = ingest(config, 200)
    with running(config) as one, running(config) as two:
        wait_until(drained(config))
    assert_archived_once(archive, sent)
    assert max(archive.posts.values()) == 1
    assert one.counts["archived"] > 0 and two.counts["archived"] > 0


def test_sigterm_finishes_requests_in_flight_and_exits_0(archive, key_prefix, tmp_path, keys, redis_server):
    config = forward_config(key_prefix, archive.url(), forward_timeout="5", forward_lease_seconds="60")
    archive.delay = 0.5
    sent = ingest(config, 100)
    process = spawn_forwarder(config, tmp_path / "forward.log")
    wait_until(lambda: archive.in_flight > 0, what="requests in flight")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    store = open_store(config)
    # Every request the archive answered was recorded, and nothing is still leased.
    assert outbox(store).backlog() == len(sent) - len(archive.created)
    due = redis_server.zrange(keys.outbox("forward"), 0, -1, withscores=True)
    assert all(score <= time.time() * 1000 for _, score in due)


def test_a_stuck_archive_does_not_slow_ingest(archive, key_prefix):
    config = forward_config(key_prefix, archive.url(), forward_timeout="5", forward_lease_seconds="60")
    archive.delay = 4  # every forwarder thread is stuck waiting
    ingest(config, 20)
    with running(config):
        wait_until(lambda: archive.in_flight > 0)
        started = time.monotonic()
        ingest(config, 500)  # ingest writes to Redis only; it never waits for the forwarder
        assert time.monotonic() - started < 2
        archive.delay = 0


def test_status_shows_backlog_oldest_pending_age_and_dead_letters(archive, key_prefix, monkeypatch, capsys):
    config = forward_config(key_prefix, archive.url())
    sent = ingest(config, 5)
    archive.refuse[sorted(sent)[0]] = 422
    with running(config):
        wait_until(drained(config))
    ingest(config, 3)
    time.sleep(0.05)
    monkeypatch.setenv("YAGI_CONFIG", "/dev/null")
    monkeypatch.setenv("YAGI_REDIS_URL", config.redis.url)
    monkeypatch.setenv("YAGI_REDIS_KEY_PREFIX", key_prefix)
    assert cli.main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["forward_backlog"] == 3
    assert report["dead_letters"] == 1
    assert 0.05 <= report["forward_oldest_pending_seconds"] < 30


def test_an_archive_in_trouble_is_not_hammered_and_queued_events_are_given_back(
    archive, key_prefix, keys, redis_server
):
    config = forward_config(
        key_prefix,
        archive.url(),
        forward_concurrency="2",
        forward_backoff_base="1",
        forward_backoff_max="5",
        forward_lease_seconds="30",
    )
    archive.fail_status = 503
    sent = ingest(config, 40)
    with running(config):
        wait_until(lambda: archive.statuses[503] >= 1)
        time.sleep(0.4)  # within the first pause (0.5-1 s)
        assert archive.statuses.total() <= 2  # only what was in flight when trouble began
    due = redis_server.zrange(keys.outbox("forward"), 0, -1, withscores=True)
    assert len(due) == len(sent)
    leased = [member for member, score in due if score > (time.time() + 6) * 1000]
    assert leased == []  # the queued ones went back at once, not held for the 30 s lease


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(child) for child in handle.read().split()]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def test_forward_runs_its_processes_together_and_they_die_with_it(archive, key_prefix, tmp_path):
    config = forward_config(key_prefix, archive.url())
    archive.delay = 0.01
    sent = ingest(config, 200)
    parent = spawn_forwarder(config, tmp_path / "forward.log", forward_processes="3")
    try:
        wait_until(lambda: len(_children(parent.pid)) == 2, what="two helper processes")
        helpers = _children(parent.pid)
        wait_until(drained(config), timeout=40, what="backlog to drain")
    finally:
        parent.kill()  # SIGKILL: the helpers must not outlive it
        parent.wait()
    wait_until(lambda: all(_gone(pid) for pid in helpers), timeout=20, what="helpers to exit")
    assert_archived_once(archive, sent)
