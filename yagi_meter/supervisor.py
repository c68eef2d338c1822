"""``yagi-meter run``: every daemon as a child process, restarted with backoff when it dies.

A child that dies is started again after a delay that doubles with each
quick death (``backoff_min`` to ``backoff_max`` seconds, with jitter) and
falls back to ``backoff_min`` once the child has stayed up ``stable_seconds``.
The supervisor says why a child died once, with its exit code and the last
line it wrote on standard error, and again only when that reason changes.

Every child gets a parent-death signal (``daemon.spawn_daemon``): when the
supervisor dies, even by ``kill -9``, its children get SIGTERM, so a new
``run`` never finds the old listeners still consuming or the port still taken.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, cast

from yagi_meter.config import Config
from yagi_meter.daemon import Lifecycle, backoff, child_env, spawn_daemon, start_store
from yagi_meter.errors import RET_OK

log = logging.getLogger(__name__)

# The daemons `run` starts, in start order; each is `yagi-meter <name>`.
DAEMONS = ("listen", "retention", "serve", "push", "forward", "audit")
# Daemons started only when configured.
WANTED: dict[str, Callable[[Config], bool]] = {
    "forward": lambda config: bool(config.forward.url),
    "audit": lambda config: config.audit.enabled,
}

# Only the tail of a child's standard error is kept, to name why it died.
_TAIL_BYTES = 4096
# Restart delays are jittered by up to a quarter: several supervisors restarted
# together do not hammer a shared broker or Redis in step.
RESTART_JITTER = 0.25


@dataclass
class Child:
    """One supervised daemon: its process, its standard error tail, its restart state."""

    name: str
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0  # quick deaths in a row
    restart_at: float | None = None
    reported: str = ""  # the last reason logged, so each is logged once
    tail: bytearray = field(default_factory=bytearray)

    def last_line(self) -> str:
        lines = [line for line in bytes(self.tail).splitlines() if line.strip()]
        return lines[-1].decode("utf-8", errors="replace").strip() if lines else ""


class Supervisor:
    """Starts ``names`` with ``spawn``, restarts the ones that die, stops all on ``stop()``."""

    def __init__(
        self,
        names: Sequence[str],
        spawn: Callable[[str], subprocess.Popen[bytes]],
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
        stable_seconds: float = 60.0,
        poll_seconds: float = 0.5,
        stop_seconds: float = 60.0,
    ) -> None:
        self.children = [Child(name) for name in names]
        self._spawn = spawn
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.stable_seconds = stable_seconds
        self.poll_seconds = poll_seconds
        self.stop_seconds = stop_seconds
        self.lifecycle = Lifecycle("run")
        self._selector = selectors.DefaultSelector()

    def stop(self, *_: object) -> None:
        """Ask the loop to end (SIGTERM and SIGINT do, through ``lifecycle``)."""
        self.lifecycle.stop()

    def run(self) -> None:
        """Supervise until ``stop()``, then SIGTERM every child and wait for it."""
        for child in self.children:
            self._start(child)
        while not self.lifecycle.stopping:
            self._pump(self.poll_seconds)
            now = time.monotonic()
            for child in self.children:
                if child.process is not None and child.process.poll() is not None:
                    self._died(child, now)
                elif child.process is None and child.restart_at is not None and now >= child.restart_at:
                    self._start(child)
        self._stop_all()

    def _start(self, child: Child) -> None:
        child.started = time.monotonic()
        child.restart_at = None
        child.tail.clear()
        try:
            child.process = self._spawn(child.name)
        except OSError as e:  # no fork or exec (out of memory or processes): try again later
            self._schedule_restart(child, child.started, f"could not start: {e}")
            return
        if child.process.stderr is not None:
            os.set_blocking(child.process.stderr.fileno(), False)
            self._selector.register(child.process.stderr, selectors.EVENT_READ, child)

    def _died(self, child: Child, now: float) -> None:
        process = child.process
        assert process is not None
        self._drain(child)
        child.process = None
        reason = f"exit code {process.returncode}"
        if child.last_line():
            reason += f", last words: {child.last_line()!r}"
        self._schedule_restart(child, now, reason)

    def _schedule_restart(self, child: Child, now: float, reason: str) -> None:
        """Restart ``child`` after the backoff; log ``reason`` unless it was the last one logged."""
        uptime = now - child.started
        if uptime >= self.stable_seconds:
            child.failures = 0
            child.reported = ""
        child.failures += 1
        delay = backoff(child.failures, self.backoff_min, self.backoff_max, jitter=RESTART_JITTER)
        child.restart_at = now + delay
        if reason == child.reported:
            log.debug("%s died again (%s); restarting it in %.1f s", child.name, reason, delay)
            return
        log.error(
            "%s died after %.1f s (%s); restarting it in %.1f s, backing off up to %.0f s "
            "while it keeps dying (not logged again unless the reason changes)",
            child.name,
            uptime,
            reason,
            delay,
            self.backoff_max,
        )
        child.reported = reason

    def _pump(self, timeout: float) -> None:
        """Copy whatever children wrote on standard error to ours, keeping each one's tail."""
        if not self._selector.get_map():
            time.sleep(timeout)
            return
        for key, _ in self._selector.select(timeout):
            self._read(key.data, cast(IO[bytes], key.fileobj))

    def _read(self, child: Child, stream: IO[bytes]) -> bool:
        """Copy what ``stream`` holds now; False when nothing more is there for the moment or ever.

        At end of file the stream is unregistered and closed.  A stream can
        outlive its process for a moment (forward's helpers share it).
        """
        try:
            data = os.read(stream.fileno(), 65536)
        except BlockingIOError:
            return False
        if not data:
            self._selector.unregister(stream)
            stream.close()
            return False
        _write_stderr(data)
        child.tail += data
        del child.tail[:-_TAIL_BYTES]
        return True

    def _drain(self, child: Child) -> None:
        stream = child.process.stderr if child.process is not None else None
        while stream is not None and not stream.closed and self._read(child, stream):
            pass

    def _stop_all(self) -> None:
        """SIGTERM every child; SIGKILL one still running after ``stop_seconds``.

        A SIGKILLed listener loses nothing: what it had not acknowledged is
        redelivered to the next one.
        """
        running = [(c, c.process) for c in self.children if c.process is not None]
        for _, process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_seconds
        for child, process in running:
            while process.poll() is None:
                if time.monotonic() > deadline:
                    log.error(
                        "%s did not stop within %.0f s of SIGTERM; killing it", child.name, self.stop_seconds
                    )
                    process.kill()
                    process.wait()
                    break
                self._pump(0.1)
            self._drain(child)
            log.info("%s stopped (exit %s)", child.name, process.returncode)


def _write_stderr(data: bytes) -> None:
    try:
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()
    except (OSError, ValueError):
        pass  # our own standard error is gone; the children's lines cannot go anywhere


def run(config: Config, config_path: str | None) -> int:
    """``yagi-meter run``: every daemon as a child, restarted when it dies, all stopped on SIGTERM."""
    store = start_store("run", config)
    env = child_env(config_path, store)
    names = [name for name in DAEMONS if name not in WANTED or WANTED[name](config)]
    supervisor = Supervisor(names, lambda name: spawn_daemon(name, env, stderr=subprocess.PIPE))
    supervisor.lifecycle.install_signal_handlers()
    supervisor.run()
    return RET_OK
