"""The supervisor's restart policy, on real short-lived processes."""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
import threading
import time

import pytest

from yagi_meter.supervisor import Supervisor


def dying(code: int, words: str) -> subprocess.Popen:
    script = f"import sys; print({words!r}, file=sys.stderr); sys.exit({code})"
    return subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)


def supervise(supervisor: Supervisor, seconds: float) -> None:
    thread = threading.Thread(target=supervisor.run)
    thread.start()
    thread.join(seconds)
    supervisor.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_a_child_that_keeps_dying_is_reported_once_and_restarted_ever_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    starts: list[str] = []

    def spawn(name: str) -> subprocess.Popen:
        starts.append(name)
        return dying(3, "boom: port in use")

    supervisor = Supervisor(["serve"], spawn, backoff_min=0.1, backoff_max=0.4, poll_seconds=0.02)
    with caplog.at_level(logging.DEBUG, logger="yagi_meter.supervisor"):
        supervise(supervisor, 2.5)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert "exit code 3" in errors[0] and "boom: port in use" in errors[0]
    # Delays 0.1, 0.2, 0.4, 0.4, ... plus start-up: far fewer starts than a 20 ms poll would make.
    assert 3 <= len(starts) <= 12, len(starts)
    delays = [
        float(r.getMessage().split("restarting it in ")[1].split(" s")[0])
        for r in caplog.records
        if "restarting it in" in r.getMessage()
    ]
    assert delays[2] > delays[0]


def test_a_new_reason_is_reported_again(caplog: pytest.LogCaptureFixture) -> None:
    codes = itertools.chain([1, 1], itertools.repeat(2))

    def spawn(name: str) -> subprocess.Popen:
        return dying(next(codes), "bad")

    supervisor = Supervisor(["push"], spawn, backoff_min=0.05, backoff_max=0.05, poll_seconds=0.02)
    with caplog.at_level(logging.ERROR, logger="yagi_meter.supervisor"):
        supervise(supervisor, 1.5)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert [("exit code 1" in e, "exit code 2" in e) for e in errors] == [(True, False), (False, True)]


def test_a_child_that_stayed_up_restarts_after_the_minimum_again() -> None:
    supervisor = Supervisor(["listen"], lambda name: dying(1, "x"), backoff_min=1.0, stable_seconds=0.0)
    child = supervisor.children[0]
    supervisor._start(child)
    child.process.wait()
    child.failures = 5  # it had been failing before, then stayed up past stable_seconds
    supervisor._died(child, now=child.started + 1)
    assert child.failures == 1
    assert child.restart_at is not None and child.restart_at - (child.started + 1) <= 1.0


def test_a_child_that_ignores_sigterm_is_killed_after_stop_seconds(caplog: pytest.LogCaptureFixture) -> None:
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    processes: list[subprocess.Popen] = []

    def spawn(name: str) -> subprocess.Popen:
        processes.append(subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE))
        return processes[-1]

    supervisor = Supervisor(["stubborn"], spawn, poll_seconds=0.02, stop_seconds=0.5)
    try:
        thread = threading.Thread(target=supervisor.run)
        thread.start()
        deadline = time.monotonic() + 10
        while not processes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert processes[0].stdout.readline() == b"up\n"  # SIGTERM is ignored from here on
        supervisor.stop()
        thread.join(10)
        assert not thread.is_alive()
        assert processes[0].returncode == -9
        assert any(
            "did not stop within 0 s" in r.getMessage() or "did not stop" in r.getMessage()
            for r in caplog.records
        )
    finally:
        supervisor.stop()
        for process in processes:
            process.kill()
            process.wait()
            process.stdout.close()


def test_a_child_that_cannot_be_started_is_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[float] = []

    def spawn(name: str) -> subprocess.Popen:
        attempts.append(time.monotonic())
        return subprocess.Popen(["/nonexistent/yagi-meter", name])

    supervisor = Supervisor(["listen"], spawn, backoff_min=0.1, backoff_max=0.4, poll_seconds=0.02)
    with caplog.at_level(logging.ERROR, logger="yagi_meter.supervisor"):
        supervise(supervisor, 1.5)
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1 and "could not start" in errors[0] and "/nonexistent/yagi-meter" in errors[0]
    assert 3 <= len(attempts) <= 8, attempts
