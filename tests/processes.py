"""Processes the tests start, and the check that none outlives the test run.

Every process a test starts goes through ``spawn``: it runs in a session
(process group) of its own, and after each test ``stop_started`` stops every
group still alive, whatever the test's outcome.  The test session puts a
marker of its own, ``MARKER=<uuid>``, in its environment, so every process it
starts (and theirs) inherits it; at the end of the run ``leftovers`` finds the
processes still carrying it.  Only processes carrying the marker are ever
signalled: a pid reused by someone else's process is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# Not YAGI_*: the tests hand their children environments without YAGI_* variables,
# and yagi-meter reads YAGI_* as configuration.
MARKER = "YAGITEST_RUN"

_started: list[subprocess.Popen] = []


@dataclass(frozen=True)
class Marked:
    """A live process carrying this run's marker."""

    pid: int
    pgid: int
    command: str


def spawn(args: list[str], **popen: object) -> subprocess.Popen:
    """``subprocess.Popen(args)`` in a new session, stopped (with its group) after the current
    test: for a process of one test, not one a session- or module-scoped fixture shares."""
    process = subprocess.Popen(args, start_new_session=True, **popen)
    _started.append(process)
    return process


def marked(run_id: str) -> list[Marked]:
    """Every process other than this one whose environment has ``MARKER=run_id``."""
    wanted = f"{MARKER}={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        # Fields after the command (which may hold spaces) in parentheses: state, ppid, pgrp.
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # exited, waiting for its parent to reap it
            continue
        found.append(Marked(int(entry.name), int(fields[2]), command.strip()))
    return found


def kill_marked(processes: list[Marked], sig: int) -> None:
    for process in processes:
        try:
            os.kill(process.pid, sig)
        except ProcessLookupError:
            pass


def stop_started(timeout: float = 10) -> None:
    """SIGTERM each started process group still alive (marked members only), SIGKILL after ``timeout``."""
    if not _started:
        return
    run_id = os.environ.get(MARKER)
    groups = {process.pid for process in _started}
    for process in _started:
        if process.poll() is None:  # not reaped: the pid is still the one we started
            process.send_signal(signal.SIGTERM)
    members = [p for p in marked(run_id) if p.pgid in groups] if run_id else []
    kill_marked(members, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in _started if p.poll() is None]
        members = [p for p in marked(run_id) if p.pgid in groups] if run_id else []
        if not alive and not members:
            break
        time.sleep(0.05)
    for process in _started:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    if run_id:
        kill_marked([p for p in marked(run_id) if p.pgid in groups], signal.SIGKILL)
    _started.clear()


def wait_healthy(process: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Wait until ``url``/health answers 200; fail with ``log`` when ``process`` exits or time runs out."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited {process.returncode}\n{log.read_text()}")
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url}/health did not answer 200 in {timeout}s\n{log.read_text()}")
        time.sleep(0.1)


def leftovers(run_id: str, grace: float = 3) -> list[Marked]:
    """The marked processes still alive ``grace`` seconds from now (those exiting are let finish);
    each is killed before returning."""
    deadline = time.monotonic() + grace
    found = marked(run_id)
    while found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = marked(run_id)
    kill_marked(found, signal.SIGKILL)
    return found
