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

from dataclasses import dataclass

from yagi_meter.store.base import Collection, translated

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
    """Reads the ``catalog:`` keys (written by ingest.lua, events.py)."""

    what = "the catalog"

    def _list(self, kind: str, tenant_id: str | None) -> str:
        """The zset listing ``kind`` (for ``tenant_id``)."""
        k = self.keys
        if kind == TENANTS and tenant_id is None:
            return k.catalog_tenants
        if kind == RESOURCES and tenant_id is not None:
            return k.catalog_resources(tenant_id)
        if kind == EVENT_TYPES:
            return k.catalog_types if tenant_id is None else k.catalog_tenant_types(tenant_id)
        raise ValueError(f"no catalog {kind!r} for tenant {tenant_id!r}")

    def _index(self, kind: str, tenant_id: str | None, name: str) -> str | None:
        """The index zset of one listed name, whose size is what retention kept; None when none."""
        k = self.keys
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
        EVENT_TYPES (all, or those of ``tenant_id``'s events).
        """
        zset = self._list(kind, tenant_id)
        start = b"(" + after.encode() if after else b"-"
        with translated(f"reading {self.what}"):
            names = self.client.zrange(zset, start, b"+", bylex=True, offset=0, num=limit + 1)
        more = len(names) > limit
        names = names[:limit]
        if not names:
            return KnownPage([], False)
        texts = [name.decode() for name in names]
        indexes = [self._index(kind, tenant_id, name) for name in texts]
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.keys.stats(zset), names)
        for index in indexes:
            if index is not None:
                pipe.zcard(index)
        replies = self._execute(pipe, f"reading {self.what}")
        stats, cards = replies[0], iter(replies[1:])
        items = []
        for name, index, stat in zip(texts, indexes, stats, strict=True):
            count, newest = (int(part) for part in stat.split(b" ", 1)) if stat else (0, 0)
            items.append(Known(name, count, newest, next(cards) if index is not None else None))
        return KnownPage(items, more)
