"""A real Redis Cluster on 127.0.0.1 for tests and benchmarks: redis-server processes in cluster mode.

``with RedisCluster(masters=3, replicas=1) as cluster:`` starts ``masters *
(1 + replicas)`` ``redis-server`` processes, each on free loopback ports (a
client port and a cluster bus port), in a temporary directory of its own and
a process group of its own; splits the 16384 slots evenly over the masters
(CLUSTER ADDSLOTSRANGE, MEET, REPLICATE, the steps ``redis-cli --cluster
create`` takes); and returns only once every node agrees on the topology,
reports ``cluster_state:ok`` and every replica has finished its first sync.

``stop()`` (also on leaving the ``with`` block, and when start-up fails
half-way) kills with SIGKILL the process group of every server it started,
reaps it and removes the directories.  ``kill_master(i)`` kills master ``i``
with SIGKILL and, when it has replicas, waits until one of them has taken
over its slots and the cluster is ``ok`` again.

Persistence is off (``--save '' --appendonly no``) unless ``appendonly=True``
(AOF, fsync every second).  ``node_timeout_ms`` is short (1 s) so a failover
completes in a few seconds.

Run alone: ``python -m tests.servers.redis_cluster --masters 3 --replicas 1``
prints the startup node URL and keeps the cluster up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SLOTS = 16384
START_TIMEOUT_SECONDS = 30.0
FAILOVER_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.05
PORT_ATTEMPTS = 3  # free ports may be taken by someone else before the server binds them


class ClusterError(RuntimeError):
    """The cluster did not reach the state asked for in time (or a server died)."""


@dataclass
class Node:
    """One redis-server process of the cluster."""

    port: int
    bus_port: int
    directory: Path
    process: subprocess.Popen
    role: str = "master"  # "master" or "replica" as started; failover may change it
    master_index: int = 0  # the master this node serves (itself for a master)
    node_id: str = ""
    killed: bool = False
    _client: redis.Redis | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        """A plain (non-cluster) client of this one node (one per node, kept: polls reuse it)."""
        if self._client is None:
            self._client = redis.Redis(
                host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=True
            )
        return self._client


class RedisCluster:
    """``masters`` masters, each with ``replicas`` replicas, as real redis-server processes."""

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 0,
        appendonly: bool = False,
        node_timeout_ms: int = 1000,
        server: str = "redis-server",
        extra_args: Callable[[int], list[str]] | None = None,
    ) -> None:
        """``extra_args(i)``: further redis-server arguments for node ``i`` (masters first)."""
        if masters < 1 or replicas < 0:
            raise ValueError("need at least one master and no negative replica count")
        self.masters_count = masters
        self.replicas_per_master = replicas
        self.appendonly = appendonly
        self.node_timeout_ms = node_timeout_ms
        self.server = server
        self.extra_args = extra_args or (lambda index: [])
        self.nodes: list[Node] = []  # every server running (or killed by kill_master)
        self.directories: list[Path] = []
        self.started_pids: list[int] = []  # every pid ever started, for the caller to check after stop()
        self.startup_seconds = 0.0

    # -- what tests use ------------------------------------------------------

    @property
    def url(self) -> str:
        """The startup node URL for a cluster client (the first live master)."""
        return self.masters[0].url

    @property
    def masters(self) -> list[Node]:
        """The live masters, in slot order (a promoted replica takes its master's place)."""
        return [node for node in self.nodes if node.role == "master"]

    @property
    def replicas(self) -> list[Node]:
        return [node for node in self.nodes if node.role == "replica"]

    def cluster_client(self, **kwargs) -> redis.cluster.RedisCluster:
        """A redis-py cluster client started from a live master."""
        return redis.cluster.RedisCluster(host="127.0.0.1", port=self.masters[0].port, **kwargs)

    # -- start and stop --------------------------------------------------------

    def __enter__(self) -> RedisCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every server and form the cluster; on any failure stop what was started and raise."""
        began = time.monotonic()
        try:
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            for index in range(self.masters_count * (1 + self.replicas_per_master)):
                self._start_node(index, deadline)
            self._form(deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Kill every server this object started (its whole process group), reap it, remove its files.

        Safe to call more than once and after a partial start.
        """
        for node in self.nodes:
            _kill_group(node.process)
        for directory in self.directories:
            shutil.rmtree(directory, ignore_errors=True)
        self.nodes = []
        self.directories = []

    def _start_node(self, index: int, deadline: float) -> None:
        directory = Path(tempfile.mkdtemp(prefix=f"yagi-redis-cluster-{index}-"))
        self.directories.append(directory)
        is_master = index < self.masters_count

        def args(port: int, bus_port: int) -> list[str]:
            return [
                "--cluster-port", str(bus_port),
                "--protected-mode", "no",  # loopback only, no password: tests connect freely
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(directory / "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # A replica may always be promoted, however long it was cut off (tests kill masters).
                "--cluster-replica-validity-factor", "0",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "everysec",
                # A replica's first sync starts at once (the default waits 5 s for more replicas).
                "--repl-diskless-sync-delay", "0",
                *self.extra_args(index),
            ]  # fmt: skip

        node = _spawn(self.server, args, directory, deadline, self.started_pids)
        node.role = "master" if is_master else "replica"
        node.master_index = index if is_master else (index - self.masters_count) % self.masters_count
        node.node_id = node.client().execute_command("CLUSTER MYID")
        self.nodes.append(node)

    def _form(self, deadline: float) -> None:
        """Assign slots, introduce the nodes to each other, attach replicas, wait until settled."""
        masters = self.masters
        for i, node in enumerate(masters):
            first, last = i * SLOTS // len(masters), (i + 1) * SLOTS // len(masters) - 1
            node.client().execute_command("CLUSTER ADDSLOTSRANGE", first, last)
        introducer = self.nodes[0].client()
        for node in self.nodes[1:]:
            introducer.execute_command("CLUSTER MEET", "127.0.0.1", node.port, node.bus_port)
        for node in self.replicas:
            master_id = masters[node.master_index].node_id
            # The replica must have learnt of its master through gossip before it can follow it.
            self._wait(
                lambda n=node, m=master_id: m in n.client().execute_command("CLUSTER", "NODES"), deadline
            )
            node.client().execute_command("CLUSTER REPLICATE", master_id)
        self._wait(self._settled, deadline, "the cluster did not settle")

    # -- failover ----------------------------------------------------------------

    def kill_master(self, index: int) -> Node | None:
        """SIGKILL master ``index`` (of ``masters``); when it has replicas, wait until one of
        them is a master holding its slots and every live node reports ``cluster_state:ok``.
        Returns the promoted replica (None without replicas: then the master leaves ``masters``)."""
        master = self.masters[index]
        _kill_group(master.process)
        master.killed = True
        followers = [n for n in self.replicas if n.master_index == index and not n.killed]
        if not followers:
            master.role = "killed"  # its slots are lost: the cluster stays down
            return None
        deadline = time.monotonic() + FAILOVER_TIMEOUT_SECONDS
        promoted: list[Node] = []

        def taken_over() -> bool:
            for node in followers:
                if node.client().info("replication")["role"] == "master":
                    promoted[:] = [node]
                    return all(_cluster_state(n.client()) == "ok" for n in self._live())
            return False

        self._wait(taken_over, deadline, f"no replica of master {index} took over")
        node = promoted[0]
        node.role = "master"
        # The promoted replica takes the dead master's place, so masters keep their order.
        self.nodes.remove(node)
        self.nodes.insert(self.nodes.index(master), node)
        master.role = "killed"
        return node

    def kill_replica(self, node: Node) -> None:
        """SIGKILL one replica; its master goes on without it (fewer replicas confirm WAIT)."""
        if node not in self.replicas:
            raise ValueError(f"node on port {node.port} is not a live replica")
        _kill_group(node.process)
        node.killed = True
        node.role = "killed"

    # -- waiting ------------------------------------------------------------------

    def _live(self) -> list[Node]:
        return [node for node in self.nodes if not node.killed]

    def _settled(self) -> bool:
        """Every node knows every node in its role, cluster_state is ok everywhere,
        every replica's link to its master is up and its first sync is done."""
        expected = {node.node_id: node for node in self._live()}
        for node in self._live():
            client = node.client()
            if _cluster_state(client) != "ok":
                return False
            seen = _parse_nodes(client.execute_command("CLUSTER", "NODES"))
            if set(seen) != set(expected):
                return False
            for node_id, (flags, master_id) in seen.items():
                if {"fail", "fail?", "handshake", "noaddr"} & flags:
                    return False
                want = expected[node_id]
                if want.role == "replica" and master_id != self.masters[want.master_index].node_id:
                    return False
        for node in self.replicas:
            info = node.client().info("replication")
            if info.get("master_link_status") != "up" or info.get("master_sync_in_progress", 1) != 0:
                return False
        return True

    def _wait(self, done: Callable[[], bool], deadline: float, what: str = "timed out") -> None:
        while True:
            for node in self._live():
                if node.process.poll() is not None:
                    raise ClusterError(f"redis-server on port {node.port} exited: {_output(node)}")
            try:
                if done():
                    return
            except redis.RedisError:
                pass  # a node busy in a sync or a failover: ask again
            _tick(deadline, what)


@contextmanager
def standalone_redis(server: str = "redis-server") -> Iterator[redis.Redis]:
    """A private non-cluster redis-server on a free loopback port, without persistence, for
    measurements nobody else's keys disturb (bench/capacity.py); killed (its process group)
    and its directory removed on leaving, whatever happens."""
    directory = Path(tempfile.mkdtemp(prefix="yagi-redis-"))
    try:
        node = _spawn(
            server, lambda port, bus_port: [], directory, time.monotonic() + START_TIMEOUT_SECONDS, []
        )
        try:
            yield redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=60)
        finally:
            _kill_group(node.process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _spawn(
    server: str, args: Callable[[int, int], list[str]], directory: Path, deadline: float, pids: list[int]
) -> Node:
    """Start ``server`` on free loopback ports, in a session (process group) of its own, and
    wait until it answers PING.  ``args(port, bus_port)``: its arguments beyond port, address,
    directory, log and persistence.  When another process took a port meanwhile, start again
    on others.  The pid of every process started goes into ``pids``; a server that does not
    come up is killed before this raises."""
    for attempt in range(PORT_ATTEMPTS):
        port, bus_port = _free_ports(2)
        command = [
            server,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "no",  # args() may turn it on: the last one given wins
            "--logfile", str(directory / "redis.log"),
            "--daemonize", "no",
            *args(port, bus_port),
        ]  # fmt: skip
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        pids.append(process.pid)
        node = Node(port, bus_port, directory, process)
        try:
            _wait_answering(node, deadline)
            return node
        except ClusterError as e:
            _kill_group(process)
            if "Address already in use" not in str(e) or attempt == PORT_ATTEMPTS - 1:
                raise
            (directory / "redis.log").unlink(missing_ok=True)
        except BaseException:
            _kill_group(process)
            raise
    raise AssertionError("unreachable")


def _wait_answering(node: Node, deadline: float) -> None:
    """Wait until the server answers, as itself: a port taken meanwhile may be another
    process's, which must never be taken for ours.  Raise ClusterError if it exits first
    or the deadline passes."""
    # No retries with backoff (redis-py's default): this loop asks again itself.
    probe = redis.Redis(
        host="127.0.0.1",
        port=node.port,
        socket_timeout=1,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        while True:
            if node.process.poll() is not None:
                raise ClusterError(f"redis-server on port {node.port} exited: {_output(node)}")
            try:
                if probe.info("server")["process_id"] == node.pid:
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                pass
            _tick(deadline, f"redis-server on port {node.port} did not answer")
    finally:
        probe.close()


def _cluster_state(client: redis.Redis) -> str:
    """``cluster_state`` from CLUSTER INFO ("ok" or "fail")."""
    # "CLUSTER", "INFO" as two words: redis-py leaves the reply as text (it parses "CLUSTER INFO").
    info = client.execute_command("CLUSTER", "INFO")
    return dict(line.split(":", 1) for line in info.splitlines() if ":" in line).get("cluster_state", "")


def _parse_nodes(text: str) -> dict[str, tuple[set[str], str]]:
    """CLUSTER NODES as node id -> (flags, master id or "-")."""
    nodes = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            nodes[fields[0]] = (set(fields[2].replace("myself,", "").split(",")), fields[3])
    return nodes


def _tick(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise ClusterError(what)
    time.sleep(POLL_SECONDS)


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (all held open together, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group led by ``process`` (start_new_session) and reap it."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    if process.stderr is not None:
        process.stderr.close()


def _output(node: Node) -> str:
    """What a server that exited said (stderr, else the tail of its log)."""
    said = node.process.stderr.read().decode(errors="replace") if node.process.stderr else ""
    log = node.directory / "redis.log"
    if not said.strip() and log.exists():
        said = log.read_text(errors="replace")[-2000:]
    return said.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=0)
    args = parser.parse_args()
    with RedisCluster(args.masters, args.replicas) as cluster:
        print(f"cluster up in {cluster.startup_seconds:.2f} s; startup node {cluster.url}", flush=True)
        for node in cluster.nodes:
            print(f"  {node.role:<8} {node.url} pid {node.pid}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
