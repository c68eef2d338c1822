"""Partitions: the keyspace split over hash tags, so a Redis Cluster spreads it over its masters.

An event lives in one partition, chosen from its tenant (else its message_id):
a tenant's events and its resources' stay together, so a tenant or resource
page is one atomic read of one slot, and a redelivered message (same body,
same tenant) always lands where its first copy is, so dedup stays exact.

Each partition's keys share a hash tag chosen so that partition ``i`` of
``count`` hashes into the ``i``-th of ``count`` equal slot ranges.  A cluster
whose masters hold equal contiguous slot ranges (what ``redis-cli --cluster
create`` makes) thus holds ``count / masters`` partitions on each master,
and a single Redis simply holds them all.  The tags are a pure function of
``(i, count)``: the same on every machine and in every version.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection
from functools import lru_cache

from redis.crc import key_slot

SLOTS = 16384
MAX_PARTITIONS = 1024
GLOBAL_TAG = "g"  # the slot of what is not partitioned: hub, quarantine, logs, layout


@lru_cache(maxsize=MAX_PARTITIONS * 4)
def partition_tag(index: int, count: int) -> str:
    """The hash tag of partition ``index`` of ``count``: its slot lies in the index-th range."""
    if not 0 <= index < count <= MAX_PARTITIONS:
        raise ValueError(f"no partition {index} of {count}")
    low, high = index * SLOTS // count, (index + 1) * SLOTS // count
    attempt = 0
    while True:
        candidate = f"p{index}.{attempt}"
        if low <= key_slot(b"{" + candidate.encode() + b"}") < high:
            return candidate
        attempt += 1


def partition_of(owner: str, count: int) -> int:
    """The partition of ``owner``: an event's tenant_id, or its message_id when it has none."""
    return zlib.crc32(owner.encode("utf-8", "surrogatepass")) % count


def of_tenant(tenant_id: str, count: int, spread: Collection[str] = ()) -> list[int]:
    """The partitions holding a tenant's events (and its resources'): its own, or every
    one for a tenant in ``spread`` (an owner billing other projects, whose events are
    in the billed projects' partitions: events.py ``partition_of``)."""
    if count == 1:
        return [0]
    if tenant_id in spread:
        return list(range(count))
    return [partition_of(tenant_id, count)]


# An event's number in the whole store (its "ref"): seq * count + partition.
# With one partition it is the seq itself; outboxes, hub queues, dead letters
# and the derived field ``seq`` carry refs, so they name one event of one
# partition without a second field.


def ref(partition: int, seq: int, count: int) -> int:
    """The store-wide number of the event ``seq`` of ``partition``."""
    return seq * count + partition


def split(number: int, count: int) -> tuple[int, int]:
    """(partition, seq) of a store-wide event number."""
    return number % count, number // count


# The merge order of an event of a partitioned store (stream field "o"): the
# writer's clock when it prepared the batch, in ms, times ORDER_PER_MS, plus
# the event's place in the batch, so the events of one batch, written by one
# call per partition, interleave in the merged feeds as they arrived instead
# of coming partition after partition.  Entries without one (one partition,
# or written before it) stand at their ingest ms times ORDER_PER_MS.
ORDER_PER_MS = 1000  # ms x 1000 + place stays below 2^53: exact as a Lua number too


def merge_order(stored: int, ingested_ms: int) -> int:
    """An entry's merge order: its stored ``o`` (0 when it has none), else its ingest ms
    times ORDER_PER_MS (as _order.lua reads it inside Redis)."""
    return stored or ingested_ms * ORDER_PER_MS


def batch_order(now_ms: int, next_order: int) -> int:
    """The merge order of the first event of a batch prepared at ``now_ms``, whose
    writer's batch before ended below ``next_order``: its clock, or right after that
    batch when the clock has not passed it (two batches in one ms, a batch of more
    than ORDER_PER_MS events), so a writer's orders only grow.  The event at
    ``place`` in the batch has this plus ``place``."""
    return max(now_ms * ORDER_PER_MS, next_order)
