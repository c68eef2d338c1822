"""Positions in feeds that span every partition (the global and event-type feeds).

Such a feed is the merge of one index per partition.  Its marker is not an
entry id but a *position*: a seq per partition, and a fingerprint of the
partitions' epochs.  Reading forward from a position returns, in each
partition, entries with a higher seq than the position's; backward, a lower
one.  Each partition's entries are taken in seq order (a prefix of what is
left), so an entry written later, in any partition, has a higher seq there
than any position already handed out: a poller following the feed forward
never skips and never doubles an entry, however the merge interleaves them.

The fingerprint ties a position to the epochs it was read under: after Redis
lost a partition's data its seqs are given out again, and an old position
would skip the new events, so it is refused as an unknown marker instead.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

PREFIX = "v2."
_MAX_SEQ = 2**53
_HEX8 = re.compile("[0-9a-f]{8}")
_DIGITS = re.compile("[0-9]{1,16}")


class Positioned(Protocol):
    """What a merge needs of an entry: its seq in its partition and its merge order."""

    @property
    def seq(self) -> int: ...

    @property
    def merge_order(self) -> int: ...


def fingerprint(epochs: Sequence[str]) -> str:
    """Eight hex digits naming the partitions' epochs, in partition order."""
    return hashlib.blake2b("\n".join(epochs).encode(), digest_size=4).hexdigest()


@dataclass(frozen=True)
class Position:
    """A seq per partition (exclusive bounds), under the epochs named by ``fingerprint``."""

    seqs: tuple[int, ...]
    fingerprint: str

    def text(self) -> str:
        return PREFIX + self.fingerprint + "." + ".".join(str(seq) for seq in self.seqs)

    @classmethod
    def parse(cls, text: str, partitions: int) -> Position | None:
        """The position written as ``text``, or None when ``text`` is no position (an entry id)."""
        if not text.startswith(PREFIX):
            return None
        parts = text[len(PREFIX) :].split(".")
        if len(parts) != partitions + 1 or not _HEX8.fullmatch(parts[0]):
            return None
        if not all(_DIGITS.fullmatch(part) for part in parts[1:]):
            return None
        seqs = tuple(int(part) for part in parts[1:])
        if any(seq > _MAX_SEQ for seq in seqs):
            return None
        return cls(seqs, parts[0])


P = TypeVar("P", bound=Positioned)


def merge(per_partition: Sequence[Sequence[P]], ascending: bool, limit: int) -> list[tuple[int, P]]:
    """Up to ``limit`` entries of all partitions, as (partition, entry), oldest first when
    ``ascending`` else newest first, by merge order (then partition, then seq).

    Each input is one partition's entries in its scan order; the merge takes a
    prefix of each, which is what makes positions exact.
    """
    sign = 1 if ascending else -1

    def keyed(partition: int, entries: Sequence[P]) -> Iterator[tuple[int, int, int, int]]:
        for i, entry in enumerate(entries):
            yield sign * entry.merge_order, sign * partition, sign * entry.seq, i

    streams = [keyed(partition, entries) for partition, entries in enumerate(per_partition)]
    taken: list[tuple[int, P]] = []
    for _, signed_partition, _, i in heapq.merge(*streams):
        partition = sign * signed_partition
        if len(taken) == limit:
            break
        taken.append((partition, per_partition[partition][i]))
    return taken
