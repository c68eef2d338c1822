"""The yagi-meter command run as a subprocess against the real Redis (and RabbitMQ for status)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import (
    ROOT,
    TEST_AMQP_HOST,
    TEST_REDIS_URL,
    as_sent,
    child_env,
    load_sample,
    make_config,
    sample_paths,
)
from yagi_meter.store import open_store
from yagi_meter.store.keys import Keys

pytestmark = pytest.mark.integration

FIXTURES = ROOT / "tests" / "fixtures" / "notifications"


class CLI:
    """Runs ``python -m yagi_meter`` with this test's Redis key prefix and no config file."""

    def __init__(self, key_prefix: str, tmp_path: Path) -> None:
        self.key_prefix = key_prefix
        self.tmp_path = tmp_path

    def run(self, *args: str, **settings: str) -> subprocess.CompletedProcess:
        env = child_env()
        env.update(
            YAGI_CONFIG=os.devnull, YAGI_REDIS_URL=TEST_REDIS_URL, YAGI_REDIS_KEY_PREFIX=self.key_prefix
        )
        env.update({f"YAGI_{name.upper()}": value for name, value in settings.items()})
        return subprocess.run(
            [sys.executable, "-m", "yagi_meter", *args],
            env=env,
            cwd=self.tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ok(self, *args: str, **settings: str) -> str:
        result = self.run(*args, **settings)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def replay(self, *files: Path, **settings: str) -> dict[str, int]:
        """Replay and return the counts from its summary line."""
        out = self.ok("replay", *map(str, files), **settings)
        return {
            name: int(n) for name, n in re.findall(r"(stored|duplicates|conflicts|quarantined) (\d+)", out)
        }

    def status(self) -> dict:
        out = self.ok("status", "--json")
        lines = out.splitlines()
        assert len(lines) == 1, out
        report = json.loads(lines[0])
        assert isinstance(report, dict)
        return report


@pytest.fixture
def cli(key_prefix: str, tmp_path: Path, redis_server: redis.Redis) -> CLI:
    return CLI(key_prefix, tmp_path)


def samples(count: int) -> list[dict]:
    return [as_sent(load_sample(path), message_id=f"m-{path.stem}") for path in sample_paths()[:count]]


# -- replay ------------------------------------------------------------------


def test_replay_of_a_json_object_file(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text((FIXTURES / "nova-compute.instance.create.end.json").read_text())
    assert cli.replay(path) == {"stored": 1, "duplicates": 0, "conflicts": 0, "quarantined": 0}
    assert cli.status()["events"] == 1


def test_replay_of_a_json_array_file(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_text(json.dumps(samples(5), indent=2))
    assert cli.replay(path)["stored"] == 5
    assert cli.status()["events"] == 5


@pytest.mark.one_partition
def test_replay_of_json_lines_quarantines_the_line_that_is_not_json(
    cli: CLI, tmp_path: Path, redis_server: redis.Redis
) -> None:
    lines = [json.dumps(message) for message in samples(3)]
    lines.insert(2, "this line is not json")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert cli.replay(path) == {"stored": 3, "duplicates": 0, "conflicts": 0, "quarantined": 1}
    status = cli.status()
    assert (status["events"], status["quarantined"]) == (3, 1)
    [(_, fields)] = redis_server.xrange(Keys(cli.key_prefix).quarantine)
    assert fields[b"body"] == b"this line is not json"
    assert fields[b"source"] == f"file:{path}:3".encode()


def test_replaying_twice_stores_nothing_new(cli: CLI, tmp_path: Path) -> None:
    array = tmp_path / "array.json"
    array.write_text(json.dumps(samples(4)))
    single = tmp_path / "one.json"
    single.write_text((FIXTURES / "glance-image.upload.json").read_text())
    assert cli.replay(array, single)["stored"] == 5
    before = cli.status()
    assert cli.replay(array, single) == {"stored": 0, "duplicates": 5, "conflicts": 0, "quarantined": 0}
    after = cli.status()
    assert (after["events"], after["last_seq"], after["push_backlog"]) == (5, 5, 5)
    assert after["duplicates"] == before["duplicates"] + 5


def test_replay_of_a_missing_file_fails_with_one_line(cli: CLI, tmp_path: Path) -> None:
    result = cli.run("replay", str(tmp_path / "missing.json"))
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "missing.json" in result.stderr


# -- status ------------------------------------------------------------------


def test_status_json_is_one_object_with_the_documented_counts(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(samples(1)[0]) + "\n{not json\n")
    cli.replay(path)
    status = cli.status()
    assert {
        key: status[key]
        for key in ("events", "quarantined", "push_backlog", "forward_backlog", "dead_letters")
    } == {"events": 1, "quarantined": 1, "push_backlog": 1, "forward_backlog": 0, "dead_letters": 0}
    assert status["oldest_quarantined"][0]["reason"].startswith("body is not JSON")
    assert isinstance(status["queues"], dict)


def test_status_without_json_is_readable_text(cli: CLI) -> None:
    out = cli.ok("status")
    assert re.search(r"^events\s+0 \(last seq 0\)$", out, re.MULTILINE)
    assert re.search(r"^quarantined\s+0", out, re.MULTILINE)


# -- quarantine --------------------------------------------------------------


def test_quarantine_list_shows_the_reason_and_source(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    no_id = {k: v for k, v in samples(1)[0].items() if k != "message_id"}
    path.write_text(json.dumps(no_id) + "\n")
    assert cli.replay(path)["quarantined"] == 1
    out = cli.ok("quarantine", "list")
    assert "missing message_id" in out
    assert f"file:{path}" in out
    [entry] = [json.loads(line) for line in cli.ok("quarantine", "list", "--json").splitlines()]
    assert entry["reason"] == "missing message_id"
    assert json.loads(entry["body"]) == no_id


def test_requeue_after_raising_the_size_limit_stores_the_message_and_keeps_the_still_bad_one(
    cli: CLI, tmp_path: Path
) -> None:
    big = as_sent(load_sample(sample_paths()[11]), message_id="big-1")
    assert len(json.dumps(big)) > 2048
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(big) + "\n" + "still not json\n")
    assert cli.replay(path, amqp_max_body_bytes="2048")["quarantined"] == 2
    reasons = [json.loads(line)["reason"] for line in cli.ok("quarantine", "list", "--json").splitlines()]
    assert reasons[0].startswith("body too large:") and "max_body_bytes 2048" in reasons[0]

    # Requeued with the same small limit: nothing changes, and nothing is doubled.
    cli.ok("quarantine", "requeue", amqp_max_body_bytes="2048")
    assert cli.status()["quarantined"] == 2

    out = cli.ok("quarantine", "requeue")  # default limit, 4 MiB
    assert "requeued 2: stored 1" in out and "still quarantined 1" in out
    status = cli.status()
    assert (status["events"], status["quarantined"]) == (1, 1)
    [entry] = [json.loads(line) for line in cli.ok("quarantine", "list", "--json").splitlines()]
    assert entry["reason"].startswith("body is not JSON")
    assert entry["body"] == "still not json"

    # Requeuing again stores nothing twice and keeps the bad one once.
    cli.ok("quarantine", "requeue")
    status = cli.status()
    assert (status["events"], status["quarantined"], status["duplicates"]) == (1, 1, 0)


def test_requeue_of_one_entry_by_id_and_of_an_unknown_id(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("first bad\nsecond bad\n")
    cli.replay(path)
    first, second = [json.loads(line)["id"] for line in cli.ok("quarantine", "list", "--json").splitlines()]
    assert "requeued 1:" in cli.ok("quarantine", "requeue", second)
    bodies = [json.loads(line)["body"] for line in cli.ok("quarantine", "list", "--json").splitlines()]
    assert bodies == ["first bad", "second bad"]
    result = cli.run("quarantine", "requeue", "1-1")
    assert result.returncode == 1
    assert "no quarantined message 1-1" in result.stderr


# -- configuration -----------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "names"),
    [
        ("redis_retention_days", "soon", "[redis] retention_days"),
        ("amqp_prefetch", "0", "[amqp] prefetch"),
        ("redis_url", "http://localhost:6379/0", "[redis] url"),
        ("redis_compress", "maybe", "[redis] compress"),
        ("notifications_mapping", "share.* = owner:payload.x", "[notifications] mapping"),
        ("logging_config", "/nonexistent/logging.conf", "[logging] config"),
    ],
)
def test_bad_configuration_exits_2_with_one_line_naming_the_key(
    cli: CLI, setting: str, value: str, names: str
) -> None:
    result = cli.run("status", "--json", **{setting: value})
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert names in lines[0]


def test_unknown_option_in_the_config_file_is_named(cli: CLI, tmp_path: Path) -> None:
    conf = tmp_path / "yagi.conf"
    conf.write_text("[redis]\nretention = 30\n")
    result = cli.run("-c", str(conf), "status")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"yagi-meter: configuration error: {conf}: unknown option [redis] retention"
    ]


def test_unknown_yagi_variable_in_the_environment_exits_2_with_one_line(cli: CLI) -> None:
    result = cli.run("status", redis_retention="30")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "yagi-meter: configuration error: environment: unknown variable YAGI_REDIS_RETENTION "
        "(no such option; see yagi.conf.sample)"
    ]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("amqp://guest:wrong@{host}/%2F", "RabbitMQ refused the login (user or password): ACCESS_REFUSED"),
        ("amqp://guest:guest@{host}/no-such-vhost", "RabbitMQ refused access to the virtual host"),
    ],
)
def test_refused_amqp_credentials_are_one_configuration_line_without_traceback(
    cli: CLI, amqp_url: str, url: str, reason: str
) -> None:
    result = cli.run("listen", amqp_url=url.format(host=TEST_AMQP_HOST))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "pika" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "yagi-meter listen" not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"yagi-meter: configuration error: [amqp] url: {reason}")


def test_status_with_refused_amqp_credentials_still_reports_redis(cli: CLI, amqp_url: str) -> None:
    result = cli.run("status", amqp_url=f"amqp://guest:wrong@{TEST_AMQP_HOST}/%2F")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"^events\s+0 \(last seq 0\)$", result.stdout, re.MULTILINE)
    assert re.search(r"^queues\s+could not be read: RabbitMQ refused the login", result.stdout, re.MULTILINE)
    report = json.loads(
        cli.run("status", "--json", amqp_url=f"amqp://guest:wrong@{TEST_AMQP_HOST}/%2F").stdout
    )
    assert report["events"] == 0 and "refused the login" in report["queues"]["error"]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("command", [["replay", "FILE"], ["quarantine", "requeue"], ["status", "--json"]])
def test_unreachable_redis_exits_3_with_a_one_line_reason(cli: CLI, command: list[str]) -> None:
    args = [str(FIXTURES / "glance-image.upload.json") if arg == "FILE" else arg for arg in command]
    result = cli.run(*args, redis_url=f"redis://127.0.0.1:{unused_port()}/0", redis_socket_timeout="1")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("yagi-meter: Redis error: ")


@pytest.mark.parametrize("form", ["object", "lines"])
def test_replay_of_a_file_starting_with_a_utf8_bom(cli: CLI, tmp_path: Path, form: str) -> None:
    messages = samples(1 if form == "object" else 2)
    text = json.dumps(messages[0]) if form == "object" else "\n".join(map(json.dumps, messages))
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert cli.replay(path) == {"stored": len(messages), "duplicates": 0, "conflicts": 0, "quarantined": 0}


# -- quarantine delete, subscriptions, pipes ------------------------------------


def quarantined_ids(cli: CLI) -> list[str]:
    return [json.loads(line)["id"] for line in cli.ok("quarantine", "list", "--json").splitlines()]


def test_quarantine_delete_by_id_reports_an_unknown_id(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("first bad\nsecond bad\nthird bad\n")
    cli.replay(path)
    first, second, third = quarantined_ids(cli)
    result = cli.run("quarantine", "delete", first, third, "1-1")
    assert result.returncode == 1
    assert result.stdout == "deleted 2 quarantined messages\n"
    assert result.stderr == "yagi-meter: no quarantined message 1-1\n"
    assert quarantined_ids(cli) == [second]
    status = cli.status()
    assert (status["quarantined"], status["quarantined_ever"]) == (1, 3)


def test_quarantine_delete_all_empties_it_and_needs_ids_or_all(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(f"bad {n}\n" for n in range(2500)))
    cli.replay(path)
    assert cli.ok("quarantine", "delete", "--all") == "deleted 2500 quarantined messages\n"
    assert cli.status()["quarantined"] == 0
    assert cli.run("quarantine", "delete").returncode == 2


def test_quarantine_list_into_a_closed_pipe_ends_quietly_with_141(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(f"bad {n} {'x' * 200}\n" for n in range(3000)))
    cli.replay(path)
    env = child_env()
    env.update(YAGI_CONFIG=os.devnull, YAGI_REDIS_URL=TEST_REDIS_URL, YAGI_REDIS_KEY_PREFIX=cli.key_prefix)
    result = subprocess.run(
        [
            "bash",
            "-c",
            f"set -o pipefail; {sys.executable} -m yagi_meter quarantine list --json --limit 3000 | head -1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 141
    assert result.stderr == ""
    assert json.loads(result.stdout)["body"].startswith("bad 0 ")


def subscribe(redis_server: redis.Redis, key_prefix: str, topic_path: str, callback: str) -> str:
    from yagi_meter.store.subscriptions import HubMode, Intent

    config = make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix)
    subscriptions = open_store(config, client=redis_server).subscriptions
    intent = Intent(
        HubMode.SUBSCRIBE, f"http://127.0.0.1:8080{topic_path}", topic_path, callback, lease_seconds=3600
    )
    subscriptions.activate(intent, expires_ms=4102444800000)  # 2100-01-01
    return intent.id


def test_subscriptions_list_and_remove(cli: CLI, redis_server: redis.Redis) -> None:
    alpha = subscribe(redis_server, cli.key_prefix, "/tenants/alpha/events", "http://127.0.0.1:9/alpha")
    beta = subscribe(redis_server, cli.key_prefix, "/events", "http://127.0.0.1:9/beta")
    rows = [json.loads(line) for line in cli.ok("subscriptions", "list", "--json").splitlines()]
    assert {(r["id"], r["topic"], r["callback"], r["backlog"]) for r in rows} == {
        (alpha, "http://127.0.0.1:8080/tenants/alpha/events", "http://127.0.0.1:9/alpha", 0),
        (beta, "http://127.0.0.1:8080/events", "http://127.0.0.1:9/beta", 0),
    }
    assert {r["expires"] for r in rows} == {"2100-01-01T00:00:00+00:00"}
    text = cli.ok("subscriptions", "list")
    assert f"{alpha}  until 2100-01-01 00:00:00  0 queued" in text and "-> http://127.0.0.1:9/beta" in text

    result = cli.run("subscriptions", "remove", alpha, "nope")
    assert result.returncode == 1
    assert result.stdout == "removed 1 subscriptions\n"
    assert result.stderr == "yagi-meter: no subscription nope\n"
    assert [json.loads(line)["id"] for line in cli.ok("subscriptions", "list", "--json").splitlines()] == [
        beta
    ]
    assert cli.status()["push_subscriptions"] == 1
