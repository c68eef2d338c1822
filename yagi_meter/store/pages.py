"""Reading feeds: one page of an index in ingest-sequence order, and its state.

A feed is an index (a tenant, resource or event-type zset, or the events
stream for the global feed).  A page is read in one Lua call (page.lua), so
it reflects one instant of the store, together with the feed's state (newest
and oldest seq), which is all an ETag needs: the state alone is a cheaper
call, and a caller holding a rendering of the current state gets no page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis

from yagi_meter.errors import UnknownMarker
from yagi_meter.notification import Event
from yagi_meter.store import codec
from yagi_meter.store.base import Collection, translated
from yagi_meter.store.dictionaries import Dictionaries
from yagi_meter.store.epoch import SeqWatch
from yagi_meter.store.keys import Keys
from yagi_meter.store.scripts import Scripts

HEAD, LAST, FORWARD, BACKWARD = "head", "last", "forward", "backward"
DIRECTIONS = (HEAD, LAST, FORWARD, BACKWARD)
STATE = "state"  # no page: the feed's state only


@dataclass(frozen=True)
class FeedIndex:
    """Where a feed's entries are listed: a zset of seqs, or the events stream."""

    key: str
    kind: str  # "zset" or "stream"
    strict: bool = True  # a marker must be an entry of this index


@dataclass(frozen=True)
class FeedState:
    """Newest and oldest seq of a feed (0 when empty), newest's ingest time, Redis' clock,
    and the store's epoch and newest message_id, which tell a version apart after Redis
    lost data and gave the same seqs out again (epoch.py)."""

    newest: int
    oldest: int
    newest_ingested_ms: int
    now_ms: int
    epoch: str = ""
    newest_id: str = ""

    @property
    def empty(self) -> bool:
        return self.newest == 0

    @property
    def version(self) -> str:
        """What a rendering of this feed depends on; page.lua builds the same text."""
        return f"{self.epoch}:{self.newest}:{self.oldest}:{self.newest_ingested_ms}:{self.newest_id}"


@dataclass(frozen=True)
class PageQuery:
    """What to read: direction from a marker, how many, and the filters."""

    direction: str = HEAD
    marker: str = ""  # message_id, for forward and backward
    limit: int = 25
    budget: int = 10_000  # most index entries examined for one page
    start_ms: int | None = None
    end_ms: int | None = None
    event_type: str = ""  # exact, or a pattern with '*'
    user_id: str = ""  # exact


@dataclass(frozen=True)
class StoredEvent:
    """An event as read, not yet decoded: a caller with the rendering cached skips decoding."""

    seq: int
    ingested_ms: int
    message_id: str
    body: bytes
    epoch: str = ""
    dictionaries: codec.DictionarySource | None = field(default=None, compare=False, repr=False)

    @property
    def identity(self) -> tuple[str, int, int, str]:
        """What a cached rendering of this event is keyed by: never the seq alone, which
        Redis losing data gives out again."""
        return (self.epoch, self.seq, self.ingested_ms, self.message_id)

    def decode(self) -> Event:
        """The event; UndecodableEvent (naming the seq) when its body or dictionary is damaged."""
        return codec.decode(self.body, self.seq, self.ingested_ms, self.dictionaries)


@dataclass(frozen=True)
class Page:
    """The events of one page in scan order, and the bounds of what was examined.

    ``first_id``/``last_id``: message_ids of the first and last index entries
    examined (empty when none): the positions the paging links continue from.
    ``reached_end``: the scan ran off the end of the index in its direction.
    """

    events: list[StoredEvent]
    first_id: str
    last_id: str
    reached_end: bool


class Pages(Collection):
    """Every read of a feed's index goes through here."""

    what = "a page"

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        scripts: Scripts,
        watch: SeqWatch | None = None,
        dictionaries: Dictionaries | None = None,
    ) -> None:
        super().__init__(client, keys, scripts)
        self.watch = watch or SeqWatch()
        self.dictionaries = dictionaries or Dictionaries(client, keys, watch=self.watch)

    # -- which index -------------------------------------------------------

    def everything(self) -> FeedIndex:
        return FeedIndex(self.keys.events, "stream")

    def tenant(self, tenant_id: str) -> FeedIndex:
        return FeedIndex(self.keys.tenant(tenant_id), "zset")

    def resource(self, tenant_id: str, resource_id: str) -> FeedIndex:
        return FeedIndex(self.keys.resource(tenant_id, resource_id), "zset")

    def audit_verdicts(self) -> FeedIndex:
        """The audit's verdicts (the ``/audit`` feed), indexed by ingest like ``type:``."""
        return FeedIndex(self.keys.audit_verdicts, "zset")

    def event_type(self, event_type: str, strict: bool = True) -> FeedIndex:
        """``strict=False``: any entry id is a valid marker (the global feed, narrowed)."""
        return FeedIndex(self.keys.event_type(event_type), "zset", strict)

    # -- reading -----------------------------------------------------------

    def state(self, index: FeedIndex) -> FeedState:
        """The feed's newest and oldest seq; one cheap call, no event is read."""
        return self.read(index, PageQuery(direction=STATE))[0]

    def read(
        self, index: FeedIndex, query: PageQuery, known: str | None = None
    ) -> tuple[FeedState, Page | None]:
        """The feed's state and one page of it, in one call.

        ``known``: the ``FeedState.version`` of a rendering the caller holds;
        while the feed still has it, no page is read and None comes back instead.
        Raises UnknownMarker when the marker is not an entry of this feed.
        """
        if query.direction not in (*DIRECTIONS, STATE):
            raise ValueError(f"no direction {query.direction!r}")
        exact, pattern = query.event_type, ""
        if "*" in exact:  # a glob: page.lua matches it in linear time, never as a Lua pattern
            exact, pattern = "", exact
        k = self.keys
        args = [
            index.kind,
            query.direction,
            query.marker,
            query.limit,
            max(query.budget, query.limit),
            "" if query.start_ms is None else query.start_ms,
            "" if query.end_ms is None else query.end_ms,
            exact,
            pattern,
            "1" if index.strict else "0",
            known or "",
            query.user_id,
        ]
        keys = [index.key, k.events, k.ids, k.by_time, k.seq, k.epoch]
        reply = self._run("page", keys, args, "reading a page")
        status, newest, oldest, ingested, now, epoch, last_seq, newest_id = reply[:8]
        epoch = _text(epoch)
        state = FeedState(int(newest), int(oldest), int(ingested), int(now), epoch, _text(newest_id))
        self.watch.observe(epoch, last_seq, "feed read")
        if status == 1:
            raise UnknownMarker(f"unknown marker {query.marker!r}")
        if status == 2:
            # An empty feed has no page to skip, and no entry a marker could
            # name: the caller decides between 404 and an unknown marker.
            if state.empty and query.direction != STATE:
                return state, Page([], "", "", reached_end=True)
            return state, None
        reached_end, _, first_id, _, last_id, count = reply[8:14]
        events = []
        rest = reply[14:]
        for i in range(count):
            seq, ingested_ms, message_id, body = rest[4 * i : 4 * i + 4]
            events.append(
                StoredEvent(int(seq), int(ingested_ms), _text(message_id), body, epoch, self.dictionaries)
            )
        return state, Page(events, _text(first_id), _text(last_id), bool(reached_end))

    def entry_version(self, message_id: str) -> tuple[int, str] | None:
        """(seq, digest) of a stored message_id, or None: enough for an entry's ETag."""
        with translated("reading an entry"):
            known = self.client.hget(self.keys.ids, message_id)
        if not known:
            return None
        seq, _, digest = known.decode().partition(" ")
        return int(seq), digest


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
