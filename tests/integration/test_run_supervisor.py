"""``yagi-meter run`` as a real process tree: parent-death signal and restart backoff."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.listener_helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def children_of(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Run:
    """``yagi-meter run`` in its own process group, standard error in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # closed in cleanup()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "yagi_meter", "run"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pgid = self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self) -> str:
        return "\n".join(self.log().splitlines()[-30:])

    def cleanup(self) -> None:
        # The children first (each has a process group of its own), then run's group.
        for pid in children_of(self.process.pid):
            os.kill(pid, signal.SIGKILL)
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self._log.close()


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator:
    started: list[Run] = []

    def start(env: dict[str, str]) -> Run:
        run = Run(env, tmp_path / f"run-{len(started) + 1}.log")
        started.append(run)
        return run

    yield start
    for run in started:
        run.cleanup()


def start_all(start_run, env: dict[str, str], port: int) -> tuple[Run, list[int]]:
    """`run` serving on ``port``, once its four children are up; their pids."""
    run = start_run({**env, "YAGI_FEEDS_PORT": str(port)})
    wait_until(lambda: answers(port), 60, "the feed server of `run`", run.tail, interval=0.2)
    wait_until(
        lambda: len(children_of(run.process.pid)) == 4, 30, "listen, retention, serve and push", run.tail
    )
    return run, children_of(run.process.pid)


def test_children_exit_when_the_run_parent_is_killed_with_sigkill(env: dict[str, str], start_run) -> None:
    port = unused_port()
    run, children = start_all(start_run, env, port)

    run.process.kill()
    run.process.wait(10)
    wait_until(
        lambda: not any(alive(pid) for pid in children),
        10,
        "the children to exit after their parent's kill -9",
        lambda: f"still alive: {[p for p in children if alive(p)]}\n{run.tail()}",
        interval=0.1,
    )
    assert not answers(port)


def test_a_child_whose_port_is_taken_backs_off_logs_once_and_recovers(env: dict[str, str], start_run) -> None:
    port = unused_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        run = start_run({**env, "YAGI_FEEDS_PORT": str(port), "YAGI_LOGGING_LEVEL": "debug"})
        # Three restarts: after ~1, ~2 and ~4 s (with jitter), each after serve's start-up.
        wait_until(lambda: len(re.findall(r"serve died again", run.log())) >= 2, 60, "restarts", run.tail)
    finally:
        blocker.close()
    log = run.log()
    reported = re.findall(r"ERROR yagi_meter.supervisor\[\d+\]: serve died .*", log)
    assert len(reported) == 1, log
    assert "exit code 1" in reported[0] and "is in use" in reported[0]
    delays = [float(d) for d in re.findall(r"serve died.*?restarting it in ([\d.]+) s", log)]
    assert delays[:3] == sorted(delays[:3]) and delays[2] >= 1.5 * delays[0], delays
    assert log.count(f"Port {port} is in use") >= len(delays)
    # Once the port is free, the next restart serves.
    wait_until(lambda: answers(port), 60, "serve to come back once the port is free", run.tail, 0.2)
    assert run.process.poll() is None
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(30) == 0
    assert re.search(r"serve stopped \(exit 0\)", run.log()), run.tail()


@pytest.mark.parametrize("how", ["SIGTERM to run", "SIGINT to its process group (Ctrl-C)"])
def test_stopping_run_stops_every_child_cleanly_and_exits_0(env: dict[str, str], start_run, how: str) -> None:
    port = unused_port()
    run, children = start_all(start_run, env, port)
    time.sleep(0.5)
    if how.startswith("SIGTERM"):
        run.process.send_signal(signal.SIGTERM)
    else:
        os.killpg(run.pgid, signal.SIGINT)
    assert run.process.wait(30) == 0, run.tail()
    assert not any(alive(pid) for pid in children)
    for name in ("listen", "retention", "serve", "push"):
        assert f"{name} stopped (exit 0)" in run.log(), run.tail()


def test_run_starts_the_audit_when_enabled_and_stops_it_cleanly(env: dict[str, str], start_run) -> None:
    port = unused_port()
    run = start_run({**env, "YAGI_FEEDS_PORT": str(port), "YAGI_AUDIT_ENABLED": "true"})
    wait_until(lambda: answers(port), 60, "the feed server of `run`", run.tail, interval=0.2)
    wait_until(
        lambda: len(children_of(run.process.pid)) == 5,
        30,
        "listen, retention, serve, push and audit",
        run.tail,
    )
    wait_until(
        lambda: "yagi-meter audit" in run.log() and "auditing nova" in run.log(), 30, "audit", run.tail
    )
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(30) == 0, run.tail()
    assert "audit stopped (exit 0)" in run.log(), run.tail()
