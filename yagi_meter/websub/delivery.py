"""What one WebSub delivery is made of: the Atom document and its signature.

Pure functions and a cache of rendered entries; no HTTP (websub.py) and no
loop (push.py).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from yagi_meter.atom import FeedMeta, Link, entry_bytes, entry_updated, feed_document
from yagi_meter.store import Store

ENTRY_CACHE_SIZE = 2000  # a few seconds of events at a few hundred a second


def signature(algorithm: str, secret: str, body: bytes) -> str:
    """The X-Hub-Signature value: ``<algorithm>=<hex HMAC of body>`` (WebSub 7.1)."""
    return f"{algorithm}={hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).hexdigest()}"


@dataclass(frozen=True)
class RenderedEntry:
    seq: int
    updated: datetime
    xml: bytes


def delivery_document(
    entries: Sequence[RenderedEntry], feed_id: str, topic_url: str, title: str, hub: str
) -> bytes:
    """The Atom feed document POSTed to a subscriber: exactly ``entries`` (WebSub 7).

    ``feed_id``: the feed's atom:id, as the feed itself has it; ``topic_url``:
    the topic as subscribed, its rel=self."""
    meta = FeedMeta(
        feed_id=feed_id,
        title=title,
        updated=max(e.updated for e in entries),
        links=(Link("self", topic_url), Link("hub", hub)),
    )
    return feed_document(meta, (e.xml for e in entries))


class EntryCache:
    """Events rendered as Atom entries, most recent kept: an event going to many
    subscribers is read from Redis and rendered once.

    Keyed by (store epoch, seq), and emptied when the store's seq goes back
    (epoch.py): after Redis loses data a seq names another event.
    """

    def __init__(self, store: Store, base_url: str, size: int = ENTRY_CACHE_SIZE) -> None:
        self.store = store
        self.base_url = base_url
        self.size = size
        self._entries: OrderedDict[tuple[str, int], RenderedEntry] = OrderedDict()
        self._generation = 0
        self._lock = threading.Lock()

    def get_many(self, seqs: list[int]) -> list[RenderedEntry]:
        """The entries of ``seqs`` in order; events retention removed are left out."""
        epoch, _ = self.store.events.position()  # one cheap call; notices a seq gone back
        generation = self.store.events.watch.generation
        with self._lock:
            if generation != self._generation:
                self._entries.clear()
                self._generation = generation
            found = {seq: self._entries[(epoch, seq)] for seq in seqs if (epoch, seq) in self._entries}
        missing = [seq for seq in seqs if seq not in found]
        if missing:
            loaded: dict[int, RenderedEntry] = {}
            for event in self.store.events.get_many(missing):
                assert event.seq is not None  # a stored event has its seq
                loaded[event.seq] = RenderedEntry(
                    event.seq, entry_updated(event), entry_bytes(event, self.base_url)
                )
            found.update(loaded)
            with self._lock:
                self._entries.update(((epoch, seq), entry) for seq, entry in loaded.items())
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return [found[seq] for seq in seqs if seq in found]
