"""``yagi-meter audit`` as real processes: notifications through RabbitMQ and a listener, verdicts out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audit_lifecycles import lifecycle
from tests.integration.listener_helpers import Publisher, run_cli, wait_until
from tests.integration.test_audit import BASE, period, summary, verdicts
from tests.processes import spawn
from yagi_meter.config import Config
from yagi_meter.store import open_store

pytestmark = pytest.mark.integration

AUDIT = dict(YAGI_AUDIT_PERIOD="hour", YAGI_AUDIT_GRACE_SECONDS="0", YAGI_AUDIT_POLL_SECONDS="0.2")


def test_the_daemon_judges_what_the_listener_archives_and_stops_on_sigterm(
    env: dict[str, str], config: Config, start_listener, tmp_path: Path
) -> None:
    env = {**env, **AUDIT}
    listener = start_listener(env)
    listener.wait_consuming()
    log_path = tmp_path / "audit.log"
    with open(log_path, "wb") as log:
        auditor = spawn(
            [sys.executable, "-m", "yagi_meter", "audit"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    complete = lifecycle("nova", BASE, "tenant-a", "vm-complete")
    no_create = lifecycle("nova-versioned", BASE, "tenant-a", "vm-no-create")
    del no_create["create"]
    publisher = Publisher(env["YAGI_AMQP_URL"])
    try:
        publisher.publish_all(json.dumps(m).encode() for m in [*complete.values(), *no_create.values()])
    finally:
        publisher.close()
    store = open_store(config)
    wait_until(
        lambda: len(verdicts(store)) == 8,
        30,
        "8 verdicts",
        lambda: log_path.read_text(errors="replace")[-3000:],
    )
    found = summary(verdicts(store))
    assert found[("tenant-a", "vm-complete")] == sorted(("verified", (), period(n)) for n in range(4))
    assert found[("tenant-a", "vm-no-create")] == sorted(
        ("failed", ("no_create",), period(n)) for n in range(4)
    )
    auditor.terminate()
    assert auditor.wait(20) == 0
    text = log_path.read_text()
    assert "yagi-meter audit" in text and "audit stopped" in text
    assert listener.stop() == 0


def test_audit_check_once_from_the_command_line(env: dict[str, str], config: Config) -> None:
    env = {**env, **AUDIT}
    steps = lifecycle("cinder", BASE, "tenant-a", "vol-1")
    del steps["delete"]
    path = Path(env.get("TMPDIR", "/tmp")) / f"audit-{config.redis.key_prefix.replace(':', '_')}.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in steps.values()))
    try:
        run_cli(env, "replay", str(path))
    finally:
        path.unlink()
    first = json.loads(run_cli(env, "audit", "check", "--since", BASE.isoformat(), "--json"))
    assert first["judged"] == 4 and first["stored"] == 4 and first["waiting"] == 0
    second = json.loads(run_cli(env, "audit", "check", "--since", BASE.isoformat(), "--json"))
    assert second["stored"] == 0
    text = run_cli(env, "audit", "check", "--since", BASE.isoformat())
    assert text.startswith("audit since ") and "0 verdicts new" in text
    report = json.loads(run_cli(env, "status", "--json"))["audit"]
    assert {row["period"]: row["reasons"] for row in report["periods"]}[period(3)] == {"no_delete": 1}
    bad = subprocess.run(
        [sys.executable, "-m", "yagi_meter", "audit", "check", "--since", "yesterday"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "--since is not an ISO 8601 date" in bad.stderr
