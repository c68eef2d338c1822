"""The lifecycle the daemons share (``listen``, ``retention``, ``push``, ``forward``, ``audit``;
``run``'s children).

- **Stop flag.**  ``Lifecycle.stop()`` and SIGTERM/SIGINT set it; each loop
  looks at it between steps.  The signal handlers only set the flag: a
  handler runs in the main thread, which may be inside ``Event.wait()``
  holding that Event's lock, so setting the Event there deadlocked (push did).
- **Waits that see a stop.**  A signal does not cut ``time.sleep`` short, so
  a backoff waits in short steps and returns once stopping.
- **Backoff with jitter.**  ``backoff()`` is the one retry delay of the code
  base: reconnects, redeliveries, archive retries and restarts.
- **Error recording.**  Run-time errors go to the store's error log under the
  daemon's name, for ``yagi-meter status``.
- **Start-up.**  One log line with the whole configuration, then the store,
  which must answer (``start_store``); each daemon's main is at the end.
- **Parent-death signal.**  A daemon started by another one (``run``'s
  children, ``forward``'s helpers) gets SIGTERM when its parent dies, even
  by ``kill -9`` (Linux ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from yagi_meter import __version__
from yagi_meter.config import Config
from yagi_meter.errors import RET_OK, ConfigError
from yagi_meter.store import Store, open_store
from yagi_meter.store.error_log import ErrorLog

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # prctl(2)
# Longest a wait goes without looking whether SIGTERM asked to stop.
STOP_CHECK_SECONDS = 0.1


def backoff(attempt: int, base: float, cap: float, jitter: float = 0.5, rand: float | None = None) -> float:
    """Seconds to wait before try number ``attempt`` (1, 2, ...) after failures.

    ``base`` doubled per attempt, capped at ``cap``, then cut by up to
    ``jitter`` of itself at random (``rand`` in [0, 1] fixes the draw: 0 cuts
    the most, 1 not at all).  The jitter keeps processes that failed together
    (a broker or Redis restart, a restarted supervisor) from retrying in step.
    """
    delay = min(cap, base * 2 ** min(attempt - 1, 60))
    draw = random.random() if rand is None else rand
    return delay * (1 - jitter * (1 - draw))


class Backoff:
    """The delays of one retry loop: ``next()`` after each failure, ``reset()`` after a success."""

    def __init__(self, base: float, cap: float, jitter: float = 0.5) -> None:
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return backoff(self.failures, self.base, self.cap, self.jitter)

    def reset(self) -> None:
        self.failures = 0


class Lifecycle:
    """The stop flag, signal handlers, stop-aware waits and error log of one daemon."""

    def __init__(self, component: str, errors: ErrorLog | None = None) -> None:
        self.component = component
        self.errors = errors
        self._stopping = False

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called or a signal came (a property: it changes under any loop)."""
        return self._stopping

    def stop(self, *_: object) -> None:
        """Ask the daemon's loops to end (also the signal handler: only a flag, see above)."""
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def wait(self, seconds: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Sleep ``seconds`` in steps of at most STOP_CHECK_SECONDS; return early once stopping.

        ``sleep`` is what waits a step (the listener's keeps its AMQP connection served).
        """
        deadline = time.monotonic() + seconds
        while not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            sleep(min(remaining, STOP_CHECK_SECONDS))

    def record(self, text: str) -> None:
        """Keep ``text`` in the store's error log under this daemon's name; never raises.

        Without an error log (the supervisor's: each child records its own)
        only the caller's log line is left.
        """
        if self.errors is not None:
            self.errors.record(self.component, text)


def start_store(name: str, config: Config) -> Store:
    """Log the one start-up line and open the store (fails loudly if unreachable)."""
    log.info("yagi-meter %s %s starting: %s", name, __version__, config.describe())
    store = open_store(config)
    store.ping()
    store.check_layout()
    store.warn_if_evicting()
    return store


def child_env(config_path: str | None, store: Store) -> dict[str, str]:
    """The environment of a child daemon: the same configuration and the same Redis."""
    env = dict(os.environ)
    shared = store.socket_url()
    if shared:  # children join the embedded Redis this process started
        env["YAGI_REDIS_URL"] = shared
    if config_path:
        env["YAGI_CONFIG"] = str(Path(config_path).resolve())
    return env


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when ``parent_pid`` dies, so none outlives a kill -9."""

    def arm() -> None:
        if sys.platform != "linux":
            return
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        # The parent may have died between fork and prctl: then no signal comes.
        if os.getppid() != parent_pid:
            os._exit(1)

    return arm


def spawn_daemon(name: str, env: dict[str, str], stderr: int | None = None) -> subprocess.Popen[bytes]:
    """``python -m yagi_meter <name>`` as a child that dies with this process.

    The child gets a process group of its own, so Ctrl-C in a terminal
    reaches only this process, which then stops the children with SIGTERM,
    once and in order (a child hit by both would die mid-shutdown).
    """
    return subprocess.Popen(
        [sys.executable, "-m", "yagi_meter", name],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=stderr,
        process_group=0,
        preexec_fn=die_with_parent(os.getpid()),
    )


# -- the daemons -------------------------------------------------------------
# Each imports its module only when started: a command pays only for what it runs.


class _Worker(Protocol):
    lifecycle: Lifecycle

    def run(self) -> None: ...


def _run_worker(name: str, config: Config, make: Callable[[Config, Store], _Worker]) -> int:
    """Open the store, build the daemon's worker, stop it on SIGTERM/SIGINT, run it."""
    worker = make(config, start_store(name, config))
    worker.lifecycle.install_signal_handlers()
    worker.run()
    return RET_OK


def listen(config: Config) -> int:
    """``yagi-meter listen``: consume until SIGTERM, acknowledging what is stored."""
    from yagi_meter.ingest.ingestor import Ingestor
    from yagi_meter.ingest.listener import Listener
    from yagi_meter.store.dictionaries import AutoTrain

    store = start_store("listen", config)
    listener = Listener(config, Ingestor(store, config))
    listener.lifecycle.install_signal_handlers()
    # Trains the first dictionary in a thread of its own once enough events are stored.
    trainer = AutoTrain(
        store.events.dictionaries,
        config.redis.dictionary_train_after,
        config.redis.dictionary_samples,
        every=config.redis.dictionary_check_seconds,
    ).start()
    try:
        listener.run()
    finally:
        trainer.stop()
    return RET_OK


def retention(config: Config) -> int:
    """``yagi-meter retention``: remove expired events in small steps until SIGTERM."""
    from yagi_meter.retention import Retention

    return _run_worker("retention", config, Retention)


def push(config: Config) -> int:
    """``yagi-meter push``: verify subscriptions and deliver until SIGTERM."""
    from yagi_meter.websub.push import PushWorker

    return _run_worker("push", config, PushWorker)


def forward(config: Config, config_path: str | None) -> int:
    """``yagi-meter forward``: this forwarder and ``[forward] processes - 1`` helper processes."""
    from yagi_meter.forward.forwarder import Forwarder

    if not config.forward.url:
        raise ConfigError("[forward] url: empty, so forwarding is off")
    store = start_store("forward", config)
    # One Python process posts on one core: the others are forwarders of their
    # own (the outbox's leases keep them from posting the same event).
    env = {**child_env(config_path, store), "YAGI_FORWARD_PROCESSES": "1"}
    helpers = [spawn_daemon("forward", env) for _ in range(config.forward.processes - 1)]
    forwarder = Forwarder(config, store)
    forwarder.lifecycle.install_signal_handlers()
    try:
        forwarder.run()
    finally:
        for helper in helpers:
            helper.send_signal(signal.SIGTERM)
        for helper in helpers:
            helper.wait()
    return RET_OK


# The web app is named by its import string, as gunicorn names ``feeds.wsgi:app``:
# ``feeds`` depends on ``yagi_meter``, never the reverse.
WEB_APP_FACTORY = "feeds.app:create_app"


def _web_app_factory() -> Callable[[Config, Store], Any]:
    module, _, name = WEB_APP_FACTORY.partition(":")
    factory: Callable[[Config, Store], Any] = getattr(importlib.import_module(module), name)
    return factory


def serve(config: Config) -> int:
    """Werkzeug's threaded server on [feeds] host:port; gunicorn runs feeds.wsgi:app in production."""
    from werkzeug.serving import make_server

    store = start_store("serve", config)
    app = _web_app_factory()(config, store)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(RET_OK))
    # Werkzeug says "Port N is in use by another program" and exits 1 when it cannot bind.
    server = make_server(config.feeds.host, config.feeds.port, app, threaded=True)
    log.info(
        "serving feeds on http://%s:%d (public URL %s)", config.feeds.host, config.feeds.port, config.base_url
    )
    server.serve_forever()
    return RET_OK


def audit(config: Config) -> int:
    """``yagi-meter audit``: judge exists events and report missing ones until SIGTERM."""
    from yagi_meter.audit.daemon import Auditor

    return _run_worker("audit", config, Auditor)
