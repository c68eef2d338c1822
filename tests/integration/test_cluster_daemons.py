"""Every daemon on a real Redis Cluster (3 masters on loopback, 12 partitions): replay and
status through the CLI, push to a real subscriber, forward to a real archive, retention."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest
from flask import Flask
from lxml import etree

from feeds.hub import init_hub
from tests.conftest import ROOT, as_sent, child_env, load_sample, make_config, sample_paths
from tests.hub_helpers import BASE, subscribe
from tests.integration.forwarding import FAST, running, wait_until
from tests.processes import spawn
from tests.servers.atomhopper import AtomHopper
from tests.servers.redis_cluster import RedisCluster
from tests.servers.subscriber import Subscriber
from yagi_meter import cli
from yagi_meter.atom import ATOM_NS, entry_uuid
from yagi_meter.store import open_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TENANTS = [f"tenant-{n}" for n in range(30)]


def settings(cluster: RedisCluster, prefix: str, archive: AtomHopper) -> dict[str, str]:
    """The deployment's settings, as YAGI_* variables (the CLI and the push worker read them)."""
    return {
        "YAGI_CONFIG": os.devnull,
        "YAGI_REDIS_URL": cluster.masters[1].url,
        "YAGI_REDIS_CLUSTER": "true",
        "YAGI_REDIS_PARTITIONS": "12",
        "YAGI_REDIS_KEY_PREFIX": prefix,
        "YAGI_FORWARD_URL": archive.url(),
        "YAGI_HUB_ALLOWED_CALLBACK_NETWORKS": "127.0.0.0/8",
        "YAGI_HUB_POLL_INTERVAL_MS": "5",
        **{f"YAGI_{name.upper()}": value for name, value in FAST.items()},
    }


def samples_file(path: Path, count: int) -> list[str]:
    """A JSON-lines file of ``count`` real samples spread over 30 tenants; their message ids."""
    paths = sample_paths()
    ids, lines = [], []
    for n in range(count):
        message = as_sent(load_sample(paths[n % len(paths)]), message_id=str(uuid.uuid4()))
        message["_context_project_id"] = message["_context_tenant"] = TENANTS[n % len(TENANTS)]
        if isinstance(message.get("payload"), dict):
            message["payload"]["tenant_id"] = TENANTS[n % len(TENANTS)]
        ids.append(message["message_id"])
        lines.append(json.dumps(message))
    path.write_text("\n".join(lines) + "\n")
    return ids


def entry_ids(posts) -> list[str]:
    ns = {"a": ATOM_NS}
    return [
        e.findtext("a:id", namespaces=ns)
        for p in posts
        for e in etree.fromstring(p.body).findall("a:entry", ns)
    ]


def test_replay_status_push_forward_and_retention_on_a_cluster(
    redis_cluster: RedisCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    prefix = f"yagitest-{uuid.uuid4().hex[:8]}:"
    with AtomHopper() as archive, Subscriber() as subscriber:
        env = settings(redis_cluster, prefix, archive)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        config = make_config(
            **{name[5:].lower(): value for name, value in env.items() if name != "YAGI_CONFIG"}
        )
        store = open_store(config)
        app = Flask(__name__)
        init_hub(app, config, store)
        worker = spawn([sys.executable, "-m", "yagi_meter", "push"], env=child_env(**env), cwd=ROOT)
        try:
            # A subscriber of the global feed, verified by the push worker.
            assert subscribe(app.test_client(), subscriber.url("/all"), f"{BASE}/events").status_code == 202
            wait_until(lambda: len(store.subscriptions.ids()) == 1, 30, "the subscription verified")

            ids = samples_file(tmp_path / "events.jsonl", 90)
            assert cli.main(["replay", str(tmp_path / "events.jsonl")]) == 0
            assert "stored 90" in capsys.readouterr().out
            assert cli.main(["status", "--json"]) == 0
            status = json.loads(capsys.readouterr().out)
            assert (status["events"], status["forward_backlog"]) == (90, 90)
            # Partitions of every master's slot range (4 each) hold some of it.
            nodes = {store.events.split(store.events.seq_of(m))[0] * 3 // 12 for m in ids}
            assert nodes == {0, 1, 2}

            expected = sorted(f"urn:uuid:{entry_uuid(m)}" for m in ids)
            assert subscriber.wait_for(lambda: len(entry_ids(subscriber.posts_to("/all"))) >= 90, 60)
            assert sorted(entry_ids(subscriber.posts_to("/all"))) == expected

            with running(config):
                wait_until(lambda: store.outbox("forward").backlog() == 0, 60, "the forward backlog drained")
            assert sorted(archive.ids()) == expected
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(20) == 0
        wait_until(lambda: store.outbox("push").backlog() == 0, 30, "the push backlog drained")
        assert store.events.expire(1, now=time.time() + 2 * 86400) == 90
        assert store.events.count() == 0
