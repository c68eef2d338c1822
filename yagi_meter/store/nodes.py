"""Script calls sent to the nodes that hold their keys, all before any reply is read.

A batch of events becomes one ingest call per partition.  On a single Redis
they all go down one connection; on a Redis Cluster each goes to the master
of its partition's slot, one connection per master, so the masters work in
parallel.  Every call is sent before any reply is read, so the caller can
prepare its next batch meanwhile (the listener does).  A plain ``Command``
goes the same way, its reply as hiredis parsed it: retention reads the head
of a stream with XRANGE beside its removal script, in one round trip, and a
merged feed page reads each partition's stream in a MULTI/EXEC, without the
cost of copying every entry into Lua or through redis-py's callbacks.

``wait_replicas``: after its calls, each connection sends ``WAIT n timeout``;
a master that answers fewer replicas fails the whole write.  The caller then
does not acknowledge the batch and writes it again later (every event is
then a duplicate, which changes nothing): an acknowledged event is on the
master and on ``n`` replicas, so a failover to one of them loses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import (
    AskError,
    ClusterError,
    ConnectionError,
    NoScriptError,
    RedisClusterException,
    TimeoutError,
    TryAgainError,
)

from yagi_meter.errors import StoreError


@dataclass(frozen=True)
class Call:
    """One script call: the script, its keys (all in one slot) and its arguments."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Any]

    def wire(self) -> tuple[Any, ...]:
        return ("EVALSHA", self.script.sha, len(self.keys), *self.keys, *self.args)


@dataclass(frozen=True)
class Command:
    """One plain command, sent to the node that holds ``keys[0]`` (a command that
    names no key, such as TIME, still names the key whose node it asks); its
    reply is what Redis sent, parsed by hiredis, without redis-py's callbacks."""

    keys: Sequence[str]
    args: Sequence[Any]

    def wire(self) -> tuple[Any, ...]:
        return tuple(self.args)


def pack(commands: Sequence[Sequence[Any]]) -> bytes | None:
    """``commands`` in the Redis protocol, as redis-py would send them (str as UTF-8,
    int and float as decimal); None when an argument is of another type (redis-py
    then packs them, and refuses what it cannot send).

    hiredis' packer alone, without the pass redis-py makes over every argument
    first: a batch of 500 events (one EVALSHA of ~5,500 arguments) costs about
    2.1 us per event, redis-py's way 7; the 12 small page.lua calls of a merged
    feed page 17 us, 46 with the packer written in Python this replaced
    (docs/performance.md).
    """
    try:
        return b"".join([hiredis.pack_command(tuple(command)) for command in commands])
    except TypeError:  # a type hiredis does not pack (bool, None, ...)
        return None


class ReplicasBehind(StoreError):
    """Fewer replicas than ``[redis] wait_replicas`` confirmed a write in time."""


class _NodeWrite:
    """The calls of one node, sent on a connection of its own, replies not read yet."""

    def __init__(
        self, node: redis.Redis, indexes: list[int], calls: Sequence[Call | Command], wait: tuple[int, int]
    ):
        self.node = node
        self.indexes = indexes
        self.calls = [calls[i] for i in indexes]
        self.wait = wait
        self.connection: Any = node.connection_pool.get_connection()
        commands = [c.wire() for c in self.calls]
        if wait[0]:
            commands.append(("WAIT", wait[0], wait[1]))
        try:
            packed = pack(commands) if self.connection.encoder.encoding == "utf-8" else None
            self.connection.send_packed_command(
                [packed] if packed else self.connection.pack_commands(commands)
            )
        except redis.RedisError:
            self.release(broken=True)
            raise

    def read(self) -> tuple[list[Any], int | None]:
        """Replies in call order (a failed call's error in its place), and how many replicas
        confirmed them (None when no WAIT was sent)."""
        replies: list[Any] = []
        try:
            for _ in self.calls:
                try:
                    replies.append(self.connection.read_response())
                except redis.ResponseError as e:  # NOSCRIPT, MOVED, ASK, a script's error: this call only
                    replies.append(e)
            acked = int(self.connection.read_response()) if self.wait[0] else None
        except redis.RedisError:
            self.release(broken=True)
            raise
        self.release(broken=False)
        return replies, acked

    def release(self, broken: bool) -> None:
        connection, self.connection = self.connection, None
        if connection is None:
            return
        if broken:
            connection.disconnect()
        self.node.connection_pool.release(connection)


class PendingCalls:
    """Calls sent to their nodes; ``replies()`` reads what they answered, in call order."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        calls: Sequence[Call | Command],
        wait: tuple[int, int] = (0, 0),
    ) -> None:
        """``wait``: (replicas, timeout ms) each node must confirm after its calls; (0, 0) for none."""
        self.client = client
        self.calls = calls
        self._writes: list[_NodeWrite] = []
        try:
            for node, indexes in _by_node(client, calls).items():
                self._writes.append(_NodeWrite(node, indexes, calls, wait))
        except redis.RedisError as e:
            self.abandon()
            _relearn(client, e)
            raise StoreError(f"sending {len(calls)} script calls failed: {e}") from None

    def replies(self) -> list[Any]:
        """Each call's reply; raise StoreError when a write may not have happened everywhere.

        Making a write again after this raised is safe: scripts that store events dedup.
        """
        replies: list[Any] = [None] * len(self.calls)
        try:
            for write in self._writes:
                answers, acked = write.read()
                if acked is not None and not all(isinstance(a, redis.ResponseError) for a in answers):
                    _check_replicas(acked, write.wait)  # what was written on the first try
                for i, reply in zip(write.indexes, answers, strict=True):
                    if isinstance(reply, redis.ResponseError):
                        reply = self._again(write, self.calls[i], reply)  # made again, then WAIT
                    replies[i] = reply
        except StoreError:
            self.abandon()
            raise
        except redis.RedisError as e:
            self.abandon()
            _relearn(self.client, e)
            raise StoreError(f"{len(self.calls)} script calls failed: {e}") from None
        return replies

    def abandon(self) -> None:
        """Forget the replies (the caller gave up); the connections are dropped."""
        for write in self._writes:
            write.release(broken=True)

    def _again(self, write: _NodeWrite, call: Call | Command, error: redis.ResponseError) -> Any:
        """One call that failed on its node: a script the node lost is loaded and the call
        made again there (then WAIT); a slot that moved fails the write, to be made again
        by the caller once the client has learnt the cluster's new layout."""
        if not isinstance(error, NoScriptError) or not isinstance(call, Call):
            if isinstance(self.client, RedisCluster) and isinstance(
                error, (AskError, TryAgainError, ClusterError)
            ):
                self.client.nodes_manager.initialize()
                raise StoreError(f"the cluster is moving slots ({error}); the write will be made again")
            raise error
        pipe = write.node.pipeline(transaction=False)
        call.script(keys=list(call.keys), args=list(call.args), client=pipe)
        if write.wait[0]:
            pipe.execute_command("WAIT", *write.wait)
        replies = pipe.execute()
        if write.wait[0]:
            _check_replicas(replies[-1], write.wait)
        return replies[0]


def _by_node(
    client: redis.Redis | RedisCluster, calls: Sequence[Call | Command]
) -> dict[redis.Redis, list[int]]:
    """Which calls go to which node: all to ``client`` unless it is a cluster."""
    if not isinstance(client, RedisCluster):
        return {client: list(range(len(calls)))}
    nodes: dict[str, tuple[redis.Redis, list[int]]] = {}
    for i, call in enumerate(calls):
        node = client.get_node_from_key(call.keys[0])
        entry = nodes.setdefault(node.name, (client.get_redis_connection(node), []))
        entry[1].append(i)
    return dict(nodes.values())


def _relearn(client: redis.Redis | RedisCluster, error: redis.RedisError) -> None:
    """After a node failed to answer, have a cluster client learn the layout again: a
    replica may hold the dead master's slots by the time the write is made again."""
    if not isinstance(client, RedisCluster) or not isinstance(error, (ConnectionError, TimeoutError)):
        return
    try:
        client.nodes_manager.initialize()
    except (redis.RedisError, RedisClusterException):
        pass  # no node answers yet: the next write tries again


def _check_replicas(acked: Any, wait: tuple[int, int]) -> None:
    if int(acked) < wait[0]:
        raise ReplicasBehind(f"{acked} of {wait[0]} replicas confirmed the write within {wait[1]} ms")
