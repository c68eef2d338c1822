"""Partition tags, the partition of an event, positions and the merge of partitions."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from redis.crc import key_slot

from yagi_meter.store.partitions import SLOTS, partition_of
from yagi_meter.store.partitions import partition_tag as tag
from yagi_meter.store.positions import Position, fingerprint, merge


@pytest.mark.parametrize("count", [1, 2, 3, 12, 24, 64])
def test_each_partition_hashes_into_its_own_equal_slot_range(count: int) -> None:
    for index in range(count):
        slot = key_slot(("{" + tag(index, count) + "}:events").encode())
        assert index * SLOTS // count <= slot < (index + 1) * SLOTS // count


@pytest.mark.parametrize(("count", "masters"), [(24, 2), (24, 3), (24, 4), (24, 6), (24, 8)])
def test_masters_with_equal_slot_ranges_hold_equal_numbers_of_partitions(count: int, masters: int) -> None:
    held = [0] * masters
    for index in range(count):
        slot = key_slot(("{" + tag(index, count) + "}").encode())
        held[slot * masters // SLOTS] += 1
    assert held == [count // masters] * masters


def test_tags_are_a_pure_function_of_index_and_count() -> None:
    # Stored data depends on them: they must never change between versions.
    assert [tag(i, 24) for i in range(3)] == ["p0.49", "p1.2", "p2.32"]
    with pytest.raises(ValueError):
        tag(24, 24)


def test_the_partition_of_an_owner_is_stable_and_spreads_owners() -> None:
    assert partition_of("tenant-a", 24) == partition_of("tenant-a", 24)
    assert partition_of("\ud800", 24) in range(24)  # a lone surrogate is an id like another
    counts = [0] * 24
    for n in range(24_000):
        counts[partition_of(f"tenant-{n}", 24)] += 1
    assert max(counts) < 1.1 * 1000 and min(counts) > 0.9 * 1000


def test_a_position_reads_back_what_it_wrote_and_refuses_anything_else() -> None:
    position = Position((0, 15, 992), fingerprint(["a", "b", "c"]))
    assert Position.parse(position.text(), 3) == position
    text = position.text()
    assert Position.parse(text, 4) is None  # another partition count
    assert Position.parse(text.replace("v2.", "v3."), 3) is None
    assert Position.parse(text + "x", 3) is None
    assert Position.parse(text.replace(".15.", ".-15."), 3) is None
    assert Position.parse(text.replace(".15.", ".\u0661\u0665."), 3) is None  # Arabic-Indic digits
    assert Position.parse(text.replace(".15.", ".99999999999999999."), 3) is None
    assert Position.parse("9a3f-req-1", 3) is None
    assert fingerprint(["a", "b", "c"]) != fingerprint(["a", "b", "d"])


@dataclass(frozen=True)
class Entry:
    seq: int
    merge_order: int


def test_merge_takes_a_prefix_of_each_partition_in_time_order() -> None:
    a = [Entry(1, 10), Entry(2, 30), Entry(3, 50)]
    b = [Entry(1, 20), Entry(2, 40)]
    taken = merge([a, b], ascending=True, limit=4)
    assert [(p, e.seq) for p, e in taken] == [(0, 1), (1, 1), (0, 2), (1, 2)]
    newest = merge([list(reversed(a)), list(reversed(b))], ascending=False, limit=2)
    assert [(p, e.seq) for p, e in newest] == [(0, 3), (1, 2)]


def test_merge_keeps_each_partitions_order_even_when_its_clock_went_back() -> None:
    a = [Entry(1, 50), Entry(2, 10)]  # a failover to a node whose clock is behind
    b = [Entry(1, 20)]
    taken = merge([a, b], ascending=True, limit=2)
    assert [(p, e.seq) for p, e in taken] == [(1, 1), (0, 1)]


def test_following_positions_forward_sees_every_entry_once_while_writers_append() -> None:
    """A poller reading merged pages forward while entries are appended to random partitions."""
    rng = random.Random(7)
    partitions = 5
    stored: list[list[Entry]] = [[] for _ in range(partitions)]
    clock = 0

    def write(n: int) -> None:
        nonlocal clock
        for _ in range(n):
            clock += rng.choice([0, 1, 3])
            p = rng.randrange(partitions)
            stored[p].append(Entry(len(stored[p]) + 1, clock - rng.choice([0, 0, 5])))

    seen: list[tuple[int, int]] = []
    position = [0] * partitions
    for _ in range(300):
        write(rng.randrange(0, 6))
        candidates = [[e for e in stored[p] if e.seq > position[p]][:7] for p in range(partitions)]
        for p, entry in merge(candidates, ascending=True, limit=7):
            seen.append((p, entry.seq))
            position[p] = entry.seq
    for _ in range(200):  # drain what is left
        candidates = [[e for e in stored[p] if e.seq > position[p]][:7] for p in range(partitions)]
        for p, entry in merge(candidates, ascending=True, limit=7):
            seen.append((p, entry.seq))
            position[p] = entry.seq
    every = [(p, e.seq) for p in range(partitions) for e in stored[p]]
    assert len(seen) == len(set(seen)) == len(every)
    assert set(seen) == set(every)


def test_a_writers_merge_orders_only_grow_and_stay_exact_as_lua_numbers() -> None:
    from yagi_meter.store.partitions import ORDER_PER_MS, batch_order

    now_ms = 1_796_324_000_000
    first = batch_order(now_ms, 0)
    assert first == now_ms * ORDER_PER_MS  # the writer's clock, and places after it
    # The next batch within the same ms, and a batch of more than ORDER_PER_MS events,
    # go on after the batch before; a later clock starts from the clock again.
    assert batch_order(now_ms, first + 500) == first + 500
    assert batch_order(now_ms + 1, first + 2500) == first + 2500
    assert batch_order(now_ms + 5, first + 2500) == (now_ms + 5) * ORDER_PER_MS
    assert batch_order(4_102_444_800_000, 0) + 999 < 2**53  # 2100-01-01: still an exact double
