"""The lifecycle the daemons share: backoff, stop-aware waits, signals only setting a flag."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from yagi_meter.daemon import Backoff, Lifecycle, backoff


def test_backoff_doubles_from_the_base_with_jitter_and_stops_at_the_cap() -> None:
    assert backoff(1, 1, 300, rand=0) == 0.5
    assert backoff(1, 1, 300, rand=1) == 1
    assert backoff(4, 1, 300, rand=1) == 8
    assert backoff(21, 1, 300, rand=1) == 300
    assert backoff(10_000, 1, 300, rand=0) == 150  # no overflow however many attempts
    assert 0.5 <= backoff(1, 1, 300) <= 1


@pytest.mark.parametrize("jitter", [0.25, 0.5])
def test_backoff_is_jittered_down_by_at_most_its_share(jitter: float) -> None:
    for attempt, nominal in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (30, 60)]:
        delays = [backoff(attempt, 1.0, 60.0, jitter=jitter) for _ in range(200)]
        assert all((1 - jitter) * nominal <= d <= nominal for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_a_backoff_starts_again_from_the_base_after_a_success() -> None:
    retry = Backoff(0.2, 30, jitter=0)
    assert [retry.next() for _ in range(4)] == pytest.approx([0.2, 0.4, 0.8, 1.6])
    retry.reset()
    assert retry.next() == pytest.approx(0.2)


def test_a_wait_returns_soon_after_a_stop() -> None:
    lifecycle = Lifecycle("test")
    threading.Timer(0.2, lifecycle.stop).start()
    started = time.monotonic()
    lifecycle.wait(30)
    assert time.monotonic() - started < 2
    assert lifecycle.stopping


def test_sigterm_only_sets_the_flag_and_ends_a_wait() -> None:
    lifecycle = Lifecycle("test")
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    lifecycle.install_signal_handlers()
    try:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        started = time.monotonic()
        lifecycle.wait(30)
        assert lifecycle.stopping
        assert time.monotonic() - started < 2
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
