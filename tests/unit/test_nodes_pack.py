"""store/nodes.py's packer writes exactly what redis-py's would."""

from __future__ import annotations

import redis

from yagi_meter.store.nodes import pack


def _redis_py(commands: list[tuple[object, ...]]) -> bytes:
    return b"".join(redis.Connection().pack_commands(commands))


def test_pack_is_byte_for_byte_redis_pys() -> None:
    commands: list[tuple[object, ...]] = [
        ("EVALSHA", "a" * 40, 2, "yagi:seq", "yagi:tenant:é", b"", 0, -17, 2**70, "", "ü" * 40),
        ("EVALSHA", "b" * 40, 0, b"x" * 63, b"y" * 64, b"\r\n" * 5000, "z" * 64, 1_700_000_000_123),
        ("WAIT", 1, 500),
    ]
    assert pack(commands) == _redis_py(commands)


def test_pack_writes_floats_and_memoryviews_as_redis_py_does() -> None:
    commands: list[tuple[object, ...]] = [("SET", "k", 1.5), ("SET", "k", memoryview(b"v")), ("GET", "k")]
    assert pack(commands) == _redis_py(commands)


def test_pack_leaves_other_types_to_redis_py() -> None:
    assert pack([("SET", "k", True)]) is None
    assert pack([("SET", "k", None)]) is None
    assert pack([("GET", "k"), ("SET", "k", [1])]) is None
