"""Discovery: the tenants, resources and event types the archive knows, a bounded page at a time.

ingest.lua keeps the ``catalog:`` keys (keys.py) in the same atomic step
as the events: a lex-ordered zset of names (all scored 0) and a hash of
``"<events> <newest ms>"`` per list.  Nothing here scans events: a page is
one ZRANGE BYLEX with a LIMIT, one HMGET and, where the name has an index
zset of its own, one ZCARD per name for the events retention has kept.

``events`` counts the events ever stored (retention does not lower it: it
removes seq ranges and never reads whose events they were); ``retained``
is what is in the store now (the index's size, which retention trims);
a name whose events have all expired stays listed with ``retained`` 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from yagi_meter.store import partitions
from yagi_meter.store.base import Collection
from yagi_meter.store.keys import Keys
from yagi_meter.store.scripts import Scripts

TENANTS, RESOURCES, EVENT_TYPES = "tenants", "resources", "event_types"


@dataclass(frozen=True)
class Known:
    """One listed name and its counts."""

    name: str
    events: int  # ever stored
    newest_ms: int  # the latest notification time among them
    retained: int | None  # in the store now; None where no index of its own says (a tenant's types)


@dataclass(frozen=True)
class KnownPage:
    items: list[Known]
    more: bool  # a name follows the last one


class Catalog(Collection):
    """Reads the ``catalog:`` keys (written by ingest.lua, events.py) of every partition."""

    what = "the catalog"

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        scripts: Scripts,
        parts: Sequence[Keys] = (),
        spread_tenants: Iterable[str] = (),
    ) -> None:
        super().__init__(client, keys, scripts)
        self.parts = list(parts or [keys])
        self.spread_tenants = frozenset(spread_tenants)

    def _parts(self, tenant_id: str | None) -> list[Keys]:
        """Where the lists are: a tenant's in its partition (an owner billing others': in
        each, Pages.spread_tenants), the store-wide ones in each."""
        if tenant_id is None:
            return self.parts
        return [self.parts[p] for p in partitions.of_tenant(tenant_id, len(self.parts), self.spread_tenants)]

    @staticmethod
    def _list(k: Keys, kind: str, tenant_id: str | None) -> str:
        """The zset listing ``kind`` (for ``tenant_id``)."""
        if kind == TENANTS and tenant_id is None:
            return k.catalog_tenants
        if kind == RESOURCES and tenant_id is not None:
            return k.catalog_resources(tenant_id)
        if kind == EVENT_TYPES:
            return k.catalog_types if tenant_id is None else k.catalog_tenant_types(tenant_id)
        raise ValueError(f"no catalog {kind!r} for tenant {tenant_id!r}")

    @staticmethod
    def _index(k: Keys, kind: str, tenant_id: str | None, name: str) -> str | None:
        """The index zset of one listed name, whose size is what retention kept; None when none."""
        if kind == TENANTS:
            return k.tenant(name)
        if kind == RESOURCES and tenant_id is not None:
            return k.resource(tenant_id, name)
        if kind == EVENT_TYPES and tenant_id is None:
            return k.event_type(name)
        return None

    def page(self, kind: str, tenant_id: str | None = None, after: str = "", limit: int = 25) -> KnownPage:
        """Up to ``limit`` names of ``kind`` after ``after`` ("" from the first), in byte order.

        ``kind``: TENANTS (``tenant_id`` None), RESOURCES (of ``tenant_id``),
        EVENT_TYPES (all, or those of ``tenant_id``'s events).  A store-wide
        list is the merge of every partition's (a bounded read of each), its
        counts the sums of theirs.
        """
        parts = self._parts(tenant_id)
        zsets = [self._list(k, kind, tenant_id) for k in parts]
        start = b"(" + after.encode() if after else b"-"
        pipe = self.client.pipeline(transaction=False)
        for zset in zsets:
            pipe.zrange(zset, start, b"+", bylex=True, offset=0, num=limit + 1)
        listed = self._execute(pipe, f"reading {self.what}")
        names = sorted({name for names in listed for name in names})[: limit + 1]
        more = len(names) > limit
        names = names[:limit]
        if not names:
            return KnownPage([], False)
        texts = [name.decode() for name in names]
        pipe = self.client.pipeline(transaction=False)
        for k, zset in zip(parts, zsets, strict=True):
            pipe.hmget(k.stats(zset), names)
        has_index = self._index(parts[0], kind, tenant_id, texts[0]) is not None
        if has_index:
            for k in parts:
                for name in texts:
                    pipe.zcard(self._index(k, kind, tenant_id, name))
        replies = self._execute(pipe, f"reading {self.what}")
        counts = [0] * len(texts)
        newest = [0] * len(texts)
        for stats in replies[: len(parts)]:
            for i, stat in enumerate(stats):
                if stat:
                    count, ms = (int(part) for part in stat.split(b" ", 1))
                    counts[i] += count
                    newest[i] = max(newest[i], ms)
        retained: list[int | None] = [None] * len(texts)
        if has_index:
            cards = replies[len(parts) :]
            retained = [sum(cards[p * len(texts) + i] for p in range(len(parts))) for i in range(len(texts))]
        items = [Known(texts[i], counts[i], newest[i], retained[i]) for i in range(len(texts))]
        return KnownPage(items, more)
