"""An events-stream entry as Redis sends it to a plain command (nodes.Command: no redis-py
callbacks): ``[id, [name, value, ...]]``.  The retention head and the merged feed reads
parse their XRANGE replies here, once, by the layout ingest.lua writes (keys.py ``events``)."""

from __future__ import annotations

from typing import NamedTuple


class Fields(NamedTuple):
    """The fields of an entry that readers use: ingest ms ``t``, event type ``e``, message
    id ``m``, body ``d``, and merge order ``o`` (None on an entry without one)."""

    t: bytes
    e: bytes
    m: bytes
    d: bytes
    o: bytes | None


def seq_of(entry_id: bytes) -> int:
    """The seq of an entry id ``<seq>-0``."""
    return int(entry_id.partition(b"-")[0])


def fields_of(flat: list[bytes]) -> Fields:
    """An entry's fields: by place where they are in the order ingest.lua writes them
    (t e m d u n, then o with partitions), else by name (entries written before a field
    existed have fewer)."""
    if flat[0] == b"t" and flat[2] == b"e" and flat[4] == b"m" and flat[6] == b"d":
        if len(flat) > 13 and flat[12] == b"o":
            return Fields(flat[1], flat[3], flat[5], flat[7], flat[13])
        if len(flat) <= 12:
            return Fields(flat[1], flat[3], flat[5], flat[7], None)
    named = dict(zip(flat[::2], flat[1::2], strict=True))
    return Fields(named[b"t"], named[b"e"], named[b"m"], named[b"d"], named.get(b"o"))
