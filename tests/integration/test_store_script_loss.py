"""A write stays all-or-nothing when Redis loses its script cache (restart) just before EXEC.

Runs on a private redis-server started for the test: the shared Redis's script
cache must never be flushed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, make_config
from tests.processes import spawn
from yagi_meter.errors import StoreError
from yagi_meter.ingest.ingestor import Ingestor, Message
from yagi_meter.store import open_store

pytestmark = [pytest.mark.integration, pytest.mark.one_partition]

FIXTURE = (ROOT / "tests/fixtures/notifications/cinder-volume.create.end.json").read_bytes()


def redis_server_binary() -> str | None:
    beside = Path(sys.executable).parent / "redis-server"
    return str(beside) if beside.exists() else shutil.which("redis-server")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = spawn(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_lost_script_cache_before_exec_writes_nothing_and_loses_no_requeued_message(
    private_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(redis_url=private_redis)
    client = redis.Redis.from_url(private_redis)
    store = open_store(config, client=client)
    ingestor = Ingestor(store, config)
    ingestor.ingest([Message(b"not json", "test")])
    [quarantined] = store.quarantine.list()

    # Redis restarts (empty script cache) after the pipeline checked its
    # scripts and before MULTI/EXEC reaches it.
    original = redis.client.Pipeline.load_scripts

    def load_then_lose(pipe: redis.client.Pipeline) -> None:
        original(pipe)
        redis.Redis.from_url(private_redis).script_flush()

    monkeypatch.setattr(redis.client.Pipeline, "load_scripts", load_then_lose)
    batch = [Message(FIXTURE, "test"), Message(b"still not json", "test")]
    try:
        summary = ingestor.ingest(batch, requeued=[quarantined.id])
    except StoreError:
        # None of it: the requeued entry is still there, nothing was added.
        assert [e.id for e in store.quarantine.list()] == [quarantined.id]
        assert store.events.count() == 0
        monkeypatch.undo()
        summary = ingestor.ingest(batch, requeued=[quarantined.id])
    # All of it.
    assert (summary.stored, summary.quarantined) == (1, 1)
    assert [e.body for e in store.quarantine.list()] == [b"still not json"]
    assert store.events.get_many([1])[0].message_id == json.loads(FIXTURE)["message_id"]
