"""Reading feeds: one page of an index in ingest-sequence order, and its state.

A feed is an index (a tenant, resource or event-type zset, or the events
stream for the global feed).  A page is read in one Lua call (page.lua), so
it reflects one instant of the store, together with the feed's state (newest
and oldest seq), which is all an ETag needs: the state alone is a cheaper
call, and a caller holding a rendering of the current state gets no page.
A feed spanning partitions is read per partition and merged.  An unfiltered
read of the events stream in order (the global feed from its head or its
start, and a merged read forward from a bound) is one MULTI/EXEC of plain
commands per partition instead of page.lua (``Pages._chunks``), as atomic
and cheaper: page.lua copies every entry it reads into Lua.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import redis

from yagi_meter.errors import UnknownMarker
from yagi_meter.notification import Event
from yagi_meter.store import codec, partitions, positions
from yagi_meter.store import entries as entries_module
from yagi_meter.store.base import Collection, translated
from yagi_meter.store.dictionaries import Dictionaries
from yagi_meter.store.epoch import SeqWatch
from yagi_meter.store.keys import Keys
from yagi_meter.store.nodes import Call, Command, PendingCalls
from yagi_meter.store.positions import Position, fingerprint
from yagi_meter.store.scripts import Scripts

HEAD, LAST, FORWARD, BACKWARD = "head", "last", "forward", "backward"
DIRECTIONS = (HEAD, LAST, FORWARD, BACKWARD)
STATE = "state"  # no page: the feed's state only


@dataclass(frozen=True)
class FeedIndex:
    """Where a feed's entries are listed: a zset of seqs, or the events stream, of one
    partition; or, for a feed spanning partitions, one such key in each (``merged``)."""

    key: str
    kind: str  # "zset" or "stream"
    strict: bool = True  # a marker must be an entry of this index
    partition: int = 0
    merged: tuple[str, ...] = ()  # the key in each partition: a merged feed (positions.py)


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
    merged_version: str = ""  # a merged feed's: a digest of its partitions' versions

    @property
    def empty(self) -> bool:
        return self.newest == 0

    @property
    def version(self) -> str:
        """What a rendering of this feed depends on; page.lua builds the same text."""
        if self.merged_version:
            return self.merged_version
        return f"{self.epoch}:{self.newest}:{self.oldest}:{self.newest_ingested_ms}:{self.newest_id}"

    @classmethod
    def merge(cls, states: Sequence[FeedState]) -> FeedState:
        """The state of a feed spanning partitions, from each partition's."""
        versions = "\n".join(state.version for state in states)
        newest = max(states, key=lambda state: (state.newest_ingested_ms, state.newest))
        return cls(
            sum(state.newest for state in states),
            sum(state.oldest for state in states),
            newest.newest_ingested_ms,
            max(state.now_ms for state in states),
            fingerprint([state.epoch for state in states]),
            newest.newest_id,
            "m:" + hashlib.blake2b(versions.encode(), digest_size=12).hexdigest(),
        )


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
    # Where a merged feed puts it (partitions.batch_order): the writer's batch time and its place
    # in the batch; 0 when not stored (one partition), then its ingest time stands for it.
    order: int = 0

    @property
    def merge_order(self) -> int:
        return partitions.merge_order(self.order, self.ingested_ms)

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
    last_examined: int = 0  # the partition's seq of the last index entry examined (0: none)


class _Keyed(NamedTuple):
    """An entry of a merged read as the merge sees it, before it is a StoredEvent (only
    the entries a page takes become one): its partition's own seq (what a position
    counts in), its merge order, and what page.lua returned of it."""

    seq: int
    merge_order: int
    ingested_ms: int
    message_id: bytes | str
    body: bytes
    order: int  # the stored merge order, 0 when none (StoredEvent.order)


class _Chunk(NamedTuple):
    """One partition's reply to page.lua, parsed: its state, and (status 0) its entries."""

    state: FeedState
    entries: list[_Keyed] | None  # None: no page (state only, or unchanged)
    first_id: str = ""
    last_id: str = ""
    reached_end: bool = False
    last_examined: int = 0


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
        parts: Sequence[Keys] = (),
        spread_tenants: Iterable[str] = (),
    ) -> None:
        """``spread_tenants``: tenants whose events are in every partition (the owners that
        bill other projects: events.py ``partition_of``)."""
        super().__init__(client, keys, scripts)
        self.parts = list(parts or [keys])
        self.spread_tenants = frozenset(spread_tenants)
        self.watch = watch or SeqWatch()
        self.dictionaries = dictionaries or Dictionaries(client, keys, watch=self.watch)

    # -- which index -------------------------------------------------------

    def _spanning(self, name: Callable[[Keys], str], kind: str, strict: bool) -> FeedIndex:
        """A feed of every partition: merged when there are several."""
        if len(self.parts) == 1:
            return FeedIndex(name(self.parts[0]), kind, strict)
        return FeedIndex(name(self.parts[0]), kind, strict, merged=tuple(name(k) for k in self.parts))

    def everything(self) -> FeedIndex:
        return self._spanning(lambda k: k.events, "stream", True)

    def _of_tenant(self, tenant_id: str, name: Callable[[Keys], str]) -> FeedIndex:
        """A feed of one tenant's: in its partition, or merged when its events are spread."""
        where = partitions.of_tenant(tenant_id, len(self.parts), self.spread_tenants)
        if len(where) > 1:
            return self._spanning(name, "zset", True)
        return FeedIndex(name(self.parts[where[0]]), "zset", partition=where[0])

    def tenant(self, tenant_id: str) -> FeedIndex:
        return self._of_tenant(tenant_id, lambda k: k.tenant(tenant_id))

    def resource(self, tenant_id: str, resource_id: str) -> FeedIndex:
        return self._of_tenant(tenant_id, lambda k: k.resource(tenant_id, resource_id))

    def audit_verdicts(self) -> FeedIndex:
        """The audit's verdicts (the ``/audit`` feed), indexed by ingest like ``type:``."""
        return self._spanning(lambda k: k.audit_verdicts, "zset", True)

    def event_type(self, event_type: str, strict: bool = True) -> FeedIndex:
        """``strict=False``: any entry id is a valid marker (the global feed, narrowed)."""
        return self._spanning(lambda k: k.event_type(event_type), "zset", strict)

    # -- reading -----------------------------------------------------------

    def state(self, index: FeedIndex) -> FeedState:
        """The feed's newest and oldest seq; one cheap call (per partition), no event is read."""
        return self.read(index, PageQuery(direction=STATE))[0]

    def read(
        self, index: FeedIndex, query: PageQuery, known: str | None = None
    ) -> tuple[FeedState, Page | None]:
        """The feed's state and one page of it, in one call (one per partition when merged).

        ``known``: the ``FeedState.version`` of a rendering the caller holds;
        while the feed still has it, no page is read and None comes back instead.
        Raises UnknownMarker when the marker is not an entry (or, merged, not
        a position) of this feed.
        """
        if query.direction not in (*DIRECTIONS, STATE):
            raise ValueError(f"no direction {query.direction!r}")
        if index.merged:
            return self._read_merged(index, query, known)
        if not known and self._plain(index, query, None):  # the head or the start of the stream
            [chunk] = self._chunks(index, query, [(index.partition, query, None)])
            return self._page_of(index.partition, chunk)
        reply = self._run("page", *self._call(index.partition, index, query, known), "reading a page")
        return self._reply(index.partition, query, reply)

    def _call(
        self,
        partition: int,
        index: FeedIndex,
        query: PageQuery,
        known: str | None,
        from_seq: int | None = None,
    ) -> tuple[list[str], list[str | int]]:
        """Keys and arguments of page.lua for one partition's ``index`` key."""
        exact, pattern = query.event_type, ""
        if "*" in exact:  # a glob: page.lua matches it in linear time, never as a Lua pattern
            exact, pattern = "", exact
        k = self.parts[partition]
        key = index.merged[partition] if index.merged else index.key
        args: list[str | int] = [
            index.kind,
            query.direction,
            "" if from_seq is not None else query.marker,
            query.limit,
            max(query.budget, query.limit),
            "" if query.start_ms is None else query.start_ms,
            "" if query.end_ms is None else query.end_ms,
            exact,
            pattern,
            "1" if index.strict else "0",
            known or "",
            query.user_id,
            "" if from_seq is None else from_seq,
        ]
        return [key, k.events, k.ids, k.by_time, k.seq, k.epoch], args

    def _reply(self, partition: int, query: PageQuery, reply: list[Any]) -> tuple[FeedState, Page | None]:
        """The state and page of one partition's page.lua reply (seqs made store-wide)."""
        return self._page_of(partition, self._chunk(partition, query, reply))

    def _page_of(self, partition: int, chunk: _Chunk) -> tuple[FeedState, Page | None]:
        """The state and page of one partition's chunk (seqs made store-wide)."""
        if chunk.entries is None:
            return chunk.state, None
        events = [self._event(partition, chunk.state.epoch, entry) for entry in chunk.entries]
        return chunk.state, Page(
            events, chunk.first_id, chunk.last_id, chunk.reached_end, chunk.last_examined
        )

    def _chunk(self, partition: int, query: PageQuery, reply: list[Any]) -> _Chunk:
        """One partition's page.lua reply, parsed; raises UnknownMarker (status 1)."""
        status, newest, oldest, ingested, now, epoch, last_seq, newest_id = reply[:8]
        epoch = _text(epoch)
        state = FeedState(int(newest), int(oldest), int(ingested), int(now), epoch, _text(newest_id))
        self.watch.observe(epoch, last_seq, "feed read", partition)
        if status == 1:
            raise UnknownMarker(f"unknown marker {query.marker!r}")
        if status == 2:
            # An empty feed has no page to skip, and no entry a marker could
            # name: the caller decides between 404 and an unknown marker.
            if state.empty and query.direction != STATE:
                return _Chunk(state, [], reached_end=True)
            return _Chunk(state, None)
        reached_end, _, first_id, last_examined, last_id, count = reply[8:14]
        rest = reply[14:]
        entries = []
        for i in range(0, 5 * count, 5):
            seq, ingested_ms, message_id, body, order = rest[i : i + 5]
            ingested_ms, order = int(ingested_ms), int(order or 0)
            merge_order = partitions.merge_order(order, ingested_ms)
            entries.append(_Keyed(int(seq), merge_order, ingested_ms, message_id, body, order))
        return _Chunk(state, entries, _text(first_id), _text(last_id), bool(reached_end), int(last_examined))

    def _event(self, partition: int, epoch: str, entry: _Keyed) -> StoredEvent:
        return StoredEvent(
            partitions.ref(partition, entry.seq, len(self.parts)),
            entry.ingested_ms,
            _text(entry.message_id),
            entry.body,
            epoch,
            self.dictionaries,
            entry.order,
        )

    # -- merged feeds (positions.py) -------------------------------------------

    def _read_merged(
        self, index: FeedIndex, query: PageQuery, known: str | None
    ) -> tuple[FeedState, Page | None]:
        """A page of a feed spanning every partition, by merge order, with positions as markers.

        Each partition gives a prefix of its entries in seq order from the
        position's bound (page.lua, one call per partition, all sent before a
        reply is read): first about twice its share of the page, then, for
        each partition whose entries the merge used up, another share after
        them, until none is used up.  The page's
        positions cut each partition right after (or before) what the page
        took from it, so following the links never skips or doubles an entry.
        """
        count = len(self.parts)
        if query.direction == STATE or known:
            calls = [self._call(p, index, PageQuery(direction=STATE), None) for p in range(count)]
            now = [self._reply(p, query, r)[0] for p, r in enumerate(self._run_all(calls))]
            state = FeedState.merge(now)
            if query.direction == STATE or known == state.version:
                return state, None
        ascending = query.direction in (FORWARD, LAST)
        start: list[int] | None = None  # each partition's bound; None: from its head (or its start)
        position = None
        if query.direction in (FORWARD, BACKWARD):
            position = Position.parse(query.marker, count)
            if position is None:  # an entry id: where it is in every partition
                start = self._cuts_at_entry(index, query.marker, ascending)
            else:
                start = list(position.seqs)
        share = first_share(query.limit, count)
        wanted = {p: share for p in range(count)}
        states: dict[int, FeedState] = {}  # each partition's, as its first read saw it
        got: dict[int, list[_Keyed]] = {p: [] for p in range(count)}
        latest: dict[int, _Chunk] = {}  # each partition's last chunk
        resume: dict[int, int] = {}  # where a partition's next chunk goes on from (its seq)
        tops: dict[int, int] = {}  # HEAD: each partition's newest seq at the first read
        taken: list[tuple[int, _Keyed]] = []
        first_query = replace(query, limit=share, marker="")
        more_query = replace(first_query, direction=FORWARD if ascending else BACKWARD)
        while wanted:
            reads: list[tuple[int, PageQuery, int | None]] = []
            for p in wanted:
                if p in resume:  # past what the partition gave so far, the same way
                    reads.append((p, more_query, resume[p]))
                else:
                    from_seq = None
                    if start is not None:
                        from_seq = start[p] if ascending else start[p] + 1
                    reads.append((p, first_query, from_seq))
            for (p, _, _), chunk in zip(reads, self._chunks(index, query, reads), strict=True):
                assert chunk.entries is not None  # read without a known version: always a page
                states.setdefault(p, chunk.state)
                if query.direction == HEAD and p not in tops:
                    tops[p] = chunk.state.newest
                got[p] += chunk.entries
                latest[p] = chunk
                if chunk.last_examined:
                    resume[p] = chunk.last_examined
            taken = positions.merge([got[p] for p in range(count)], ascending, query.limit)
            used = Counter(p for p, _ in taken)
            # A partition whose entries the merge used up, and which has more: its next share.
            wanted = {
                p: share
                for p in wanted
                if len(latest[p].entries or ()) == share
                and not latest[p].reached_end
                and used[p] == len(got[p])
            }
        state = FeedState.merge([states[p] for p in range(count)])
        epochs = [states[p].epoch for p in range(count)]
        if position is not None and position.fingerprint != _fingerprint(epochs, position.seqs):
            raise UnknownMarker(f"unknown marker {query.marker!r}: the store lost data since")
        used = Counter(p for p, _ in taken)
        last_taken: dict[int, _Keyed] = {p: entry for p, entry in taken}  # each partition's last
        low, high = [0] * count, [0] * count
        for p in range(count):
            consumed = used[p] == len(got[p])
            if start is not None:
                begin = start[p]
            elif ascending:
                begin = 0
            else:
                begin = tops.get(p, 0)
            examined = resume.get(p)  # the last entry any of its chunks examined
            # Past what the page took from the partition: past all it examined when
            # the page took every entry it returned, else past the last one taken.
            mine = last_taken.get(p)
            if ascending:
                low[p] = begin
                if consumed:
                    high[p] = examined if examined is not None else begin
                else:
                    high[p] = mine.seq if mine else begin
            else:
                high[p] = begin
                if consumed:
                    low[p] = examined - 1 if examined is not None else begin
                else:
                    low[p] = mine.seq - 1 if mine else begin
        events = [self._event(p, states[p].epoch, entry) for p, entry in taken]
        reached_end = all(latest[p].reached_end and used[p] == len(got[p]) for p in range(count))
        low_text = Position(tuple(low), _fingerprint(epochs, low)).text()
        high_text = Position(tuple(high), _fingerprint(epochs, high)).text()
        first, last = (low_text, high_text) if ascending else (high_text, low_text)
        return state, Page(events, first, last, reached_end)

    def _cuts_at_entry(self, index: FeedIndex, message_id: str, ascending: bool) -> list[int]:
        """The position right after (``ascending``) or right before the entry ``message_id``
        in a merged feed: in its partition, its seq; in each other, the last event
        ingested before it in the merge's order (cut.lua: by merge order, then partition).

        Exact: each partition's merge orders grow with its seqs (ingest.lua raises
        one that would not)."""
        count = len(self.parts)
        pipe = self.client.pipeline(transaction=False)
        for k in self.parts:
            pipe.hget(k.ids, message_id)
        found = [(p, known) for p, known in enumerate(self._execute(pipe, "reading a marker")) if known]
        if not found:
            raise UnknownMarker(f"unknown marker {message_id!r}")
        partition, known = found[0]
        seq = int(known.split(b" ", 1)[0])
        k = self.parts[partition]
        with translated("reading a marker"):
            entry = self.client.xrange(k.events, f"{seq}-0", f"{seq}-0")
            inside = index.kind != "zset" or not index.strict
            if not inside:
                inside = self.client.zscore(index.merged[partition], seq) is not None
        if not entry or not inside:
            raise UnknownMarker(f"unknown marker {message_id!r}: not an entry of this feed")
        fields = entry[0][1]
        order = partitions.merge_order(int(fields.get(b"o") or 0), int(fields[b"t"]))
        others = [p for p in range(count) if p != partition]
        script = self.scripts["cut"]
        calls = [Call(script, [self.parts[p].events], [order, "1" if p < partition else "0"]) for p in others]
        with translated("reading a marker"):
            replies = PendingCalls(self.client, calls).replies()
        cuts = [0] * count
        for p, cut in zip(others, replies, strict=True):
            cuts[p] = int(cut)
        cuts[partition] = seq if ascending else seq - 1
        return cuts

    def _chunks(
        self, index: FeedIndex, query: PageQuery, reads: Sequence[tuple[int, PageQuery, int | None]]
    ) -> list[_Chunk]:
        """One chunk per (partition, query, bound seq), all sent before any reply is read.

        Each is a page.lua call, but for an unfiltered read of the events
        stream from its head, from its start or forward from a bound: that is
        plain commands in a MULTI/EXEC (``_stream_commands``), as atomic and
        several times cheaper for Redis (page.lua copies every entry it reads
        into Lua: ~3 µs for an entry with a zlib body, against ~0.5 for
        XRANGE itself), which a merged page of 12 partitions pays 12 times.
        A read backward from a bound stays in page.lua, which first checks the
        bound against the stream's oldest entry (XREVRANGE from below it walks
        the whole stream).
        """
        script = self.scripts["page"]
        batch: list[Call | Command] = []
        spans: list[tuple[int, int, bool]] = []  # each read's replies in batch, and whether plain
        for p, read_query, from_seq in reads:
            plain = self._plain(index, read_query, from_seq)
            if plain:
                commands: list[Call | Command] = list(self._stream_commands(p, read_query, from_seq))
            else:
                keys, args = self._call(p, index, read_query, None, from_seq)
                commands = [Call(script, keys, args)]
            spans.append((len(batch), len(batch) + len(commands), plain))
            batch += commands
        with translated("reading a page"):
            replies = PendingCalls(self.client, batch).replies()
        chunks = []
        for (p, read_query, _), (first, end, plain) in zip(reads, spans, strict=True):
            if plain:
                chunks.append(self._stream_chunk(p, read_query, replies[end - 1]))
            else:
                chunks.append(self._chunk(p, query, replies[first]))
        return chunks

    @staticmethod
    def _plain(index: FeedIndex, query: PageQuery, from_seq: int | None) -> bool:
        """Can this read of one partition be plain commands (``_chunks``)?"""
        unfiltered = query.start_ms is None and query.end_ms is None and not query.event_type
        if index.kind != "stream" or not unfiltered or query.user_id:
            return False
        if query.direction in (HEAD, LAST):
            return from_seq is None
        return query.direction == FORWARD and from_seq is not None

    def _stream_commands(self, partition: int, query: PageQuery, from_seq: int | None) -> list[Command]:
        """What page.lua reads of an unfiltered stream, as one MULTI/EXEC on the partition's
        node: the clock, the oldest entry, epoch and seq, the chunk, and the newest entry
        (from the head, the chunk's first is the newest)."""
        k = self.parts[partition]
        on = [k.events]
        commands = [
            Command(on, ("MULTI",)),
            Command(on, ("TIME",)),
            Command(on, ("XRANGE", k.events, "-", "+", "COUNT", 1)),
            Command(on, ("MGET", k.epoch, k.seq)),
        ]
        if query.direction == HEAD:
            commands.append(Command(on, ("XREVRANGE", k.events, "+", "-", "COUNT", query.limit)))
        else:
            start = "-" if query.direction == LAST else f"({from_seq}-0"
            commands.append(Command(on, ("XRANGE", k.events, start, "+", "COUNT", query.limit)))
            commands.append(Command(on, ("XREVRANGE", k.events, "+", "-", "COUNT", 1)))
        return [*commands, Command(on, ("EXEC",))]

    def _stream_chunk(self, partition: int, query: PageQuery, replies: list[Any]) -> _Chunk:
        """The chunk of ``_stream_commands``' EXEC reply, as ``_chunk`` makes it of page.lua's:
        the same state, entries and end (page.lua's rules, for this one kind of read)."""
        clock, oldest_entry, (epoch, last_seq), entries, *newest_read = replies
        newest_entry = newest_read[0] if newest_read else entries[:1]
        now_ms = int(clock[0]) * 1000 + int(clock[1]) // 1000
        epoch = _text(epoch or b"")
        self.watch.observe(epoch, int(last_seq or 0), "feed read", partition)
        if not newest_entry:  # an empty partition: no page, and nothing past it
            return _Chunk(FeedState(0, 0, 0, now_ms, epoch, ""), [], reached_end=True)
        newest_id, newest_fields = newest_entry[0]
        newest, oldest = entries_module.seq_of(newest_id), entries_module.seq_of(oldest_entry[0][0])
        head = entries_module.fields_of(newest_fields)
        state = FeedState(newest, oldest, int(head.t), now_ms, epoch, _text(head.m))
        keyed = []
        for entry_id, flat in entries:
            fields = entries_module.fields_of(flat)
            ingested_ms, stored_order = int(fields.t), int(fields.o or 0)
            merge_order = partitions.merge_order(stored_order, ingested_ms)
            seq = entries_module.seq_of(entry_id)
            keyed.append(_Keyed(seq, merge_order, ingested_ms, fields.m, fields.d, stored_order))
        if not keyed:
            return _Chunk(state, [], reached_end=True)
        last = keyed[-1].seq
        ascending = query.direction != HEAD
        # page.lua: a short chunk ran off the end; a full one ends there when its last
        # entry is the stream's newest (ascending) or oldest.
        reached_end = len(keyed) < query.limit or (last >= newest if ascending else last <= oldest)
        first_id, last_id = _text(keyed[0].message_id), _text(keyed[-1].message_id)
        return _Chunk(state, keyed, first_id, last_id, reached_end, last)

    def _run_all(self, calls: Sequence[tuple[list[str], list[str | int]]]) -> list[Any]:
        """page.lua once per (keys, args), all sent before any reply is read (nodes.py)."""
        script = self.scripts["page"]
        with translated("reading a page"):
            return PendingCalls(self.client, [Call(script, keys, args) for keys, args in calls]).replies()

    def entry_version(self, message_id: str) -> tuple[int, str] | None:
        """(store-wide seq, digest) of a stored message_id, or None: enough for an entry's ETag."""
        pipe = self.client.pipeline(transaction=False)
        for k in self.parts:
            pipe.hget(k.ids, message_id)
        for partition, known in enumerate(self._execute(pipe, "reading an entry")):
            if known:
                seq, _, digest = known.decode().partition(" ")
                return partitions.ref(partition, int(seq), len(self.parts)), digest
        return None


def first_share(limit: int, partitions: int) -> int:
    """How many entries a merged page asks of each partition at first."""
    return min(limit, max(4, -(-2 * limit // partitions)))


def _fingerprint(epochs: Sequence[str], seqs: Sequence[int]) -> str:
    """The fingerprint of a position: the epochs of the partitions it has passed entries of.

    A partition at 0 has nothing behind the position: the epoch it gets with
    its first event (or after losing everything) does not make the position wrong.
    """
    return fingerprint([epoch if seq > 0 else "" for epoch, seq in zip(epochs, seqs, strict=True)])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
