"""Shared fixtures: real Redis and RabbitMQ, each test isolated by its own key prefix / vhost.

A server that is not running skips the tests that need it locally, and fails
them under CI (``CI`` set), as dramatiq does.

Processes: tests start them with ``tests.processes.spawn``; each is stopped
after its test, and a run that leaves any process behind fails (see
``pytest_sessionfinish``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests import processes
from tests.servers.redis_cluster import RedisCluster
from yagi_meter import config as config_module
from yagi_meter.config import Config
from yagi_meter.store.keys import Keys

CI = bool(os.environ.get("CI"))
ROOT = Path(__file__).resolve().parent.parent
# Real nova notifications (doc/notification_samples), shipped with the tests.
SAMPLES = ROOT / "tests" / "fixtures" / "notifications" / "nova-versioned"
TEST_REDIS_URL = os.environ.get("YAGI_TEST_REDIS_URL", "redis://localhost:6379/15")
TEST_AMQP_HOST = os.environ.get("YAGI_TEST_AMQP_HOST", "localhost:5672")


def pytest_configure(config: pytest.Config) -> None:
    """Mark this run: every process it starts inherits ``YAGITEST_RUN=<uuid>``."""
    os.environ[processes.MARKER] = uuid.uuid4().hex


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the partitioned pass (YAGI_REDIS_PARTITIONS > 1), skip what reads the
    one-partition key layout directly."""
    if int(os.environ.get("YAGI_REDIS_PARTITIONS", "1")) <= 1:
        return
    skip = pytest.mark.skip(reason="reads the one-partition key layout directly")
    for item in items:
        if item.get_closest_marker("one_partition"):
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a process it started is still alive (after every fixture's clean-up)."""
    left = processes.leftovers(os.environ[processes.MARKER])
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        title = f"{len(left)} processes started by the tests outlived them (killed)"
        reporter.write_sep("=", title, red=True)
        for process in left:
            reporter.write_line(f"pid {process.pid}: {process.command[:200]}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _stop_started_processes() -> Iterator[None]:
    """Stop what the test started with ``processes.spawn``, whatever its outcome."""
    yield
    processes.stop_started()


def unavailable(what: str, error: Exception) -> None:
    if CI:
        pytest.fail(f"{what} is not available under CI: {error}")
    pytest.skip(f"{what} is not available: {error}")


def sample_paths() -> list[Path]:
    """Every real nova notification sample in SAMPLES, sorted by name.

    Raises (at collection, so the run fails) when there are none: a test
    over no samples would pass without testing anything.
    """
    paths = sorted(SAMPLES.glob("*.json"))
    if not paths:
        raise RuntimeError(f"no notification samples in {SAMPLES}: the test fixtures are missing")
    return paths


def as_sent(
    sample: dict, message_id: str | None = None, timestamp: str = "2017-07-06 16:58:55.301284"
) -> dict:
    """A sample as oslo.messaging's Notifier sends it: with message_id and timestamp."""
    message = dict(sample)
    message.setdefault("message_id", message_id or str(uuid.uuid4()))
    message.setdefault("timestamp", timestamp)
    return message


def load_sample(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def redis_server() -> redis.Redis:
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as e:
        unavailable(f"Redis at {TEST_REDIS_URL}", e)
    return client


@pytest.fixture
def key_prefix(redis_server: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"yagitest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    for key in redis_server.scan_iter(match=f"{prefix}*", count=1000):
        redis_server.delete(key)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ vhost of this test session's own, deleted at the end."""
    vhost = f"yagi-test-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
        subprocess.run(
            ["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as e:
        unavailable("RabbitMQ (rabbitmqctl)", e)
    yield f"amqp://guest:guest@{TEST_AMQP_HOST}/{vhost}"
    subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)


def need_redis_server() -> None:
    """Skip (fail under CI) unless redis-server is installed: clusters are started from it."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server (for a Redis Cluster)", FileNotFoundError("redis-server not on PATH"))


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of this test module's own: 3 masters, each with 1 replica, on loopback.

    Its processes are killed when the module's tests are done, whatever their outcome.
    Tests that kill nodes use ``start_redis_cluster`` instead.
    """
    need_redis_server()
    with RedisCluster(masters=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture
def start_redis_cluster() -> Iterator[Callable[..., RedisCluster]]:
    """Start Redis Clusters of this test's own (``RedisCluster`` arguments); all stopped at the end."""
    need_redis_server()
    started: list[RedisCluster] = []

    def start(**kwargs) -> RedisCluster:
        cluster = RedisCluster(**kwargs)
        started.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a yagi-meter child process: nothing from a yagi.conf or the
    caller's YAGI_* variables but the suite's partition count (.ci/run's second pass)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("YAGI_")}
    if "YAGI_REDIS_PARTITIONS" in os.environ:
        env["YAGI_REDIS_PARTITIONS"] = os.environ["YAGI_REDIS_PARTITIONS"]
    env.update(extra)
    return env


def make_config(**settings: str) -> Config:
    """A validated Config from ``section_key=value`` settings, ignoring any yagi.conf."""
    environ = {"YAGI_CONFIG": os.devnull}
    if "YAGI_REDIS_PARTITIONS" in os.environ:  # the suite run on a partitioned store (.ci/run)
        environ["YAGI_REDIS_PARTITIONS"] = os.environ["YAGI_REDIS_PARTITIONS"]
    environ.update({f"YAGI_{name.upper()}": value for name, value in settings.items()})
    return config_module.load(environ=environ)


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    """The key names under this test's prefix, for tests that look at Redis directly: at
    the one-partition layout, so such a test is skipped in the suite's partitioned pass."""
    if int(os.environ.get("YAGI_REDIS_PARTITIONS", "1")) > 1:
        pytest.skip("reads the one-partition key layout directly")
    return Keys(key_prefix)


@pytest.fixture
def config(key_prefix: str) -> Config:
    """Defaults pointing at the test Redis under this test's key prefix."""
    return make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix)
