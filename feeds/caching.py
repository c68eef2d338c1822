"""HTTP validators (ETag, Last-Modified), conditional requests, and a render cache.

A feed page is a function of the query and of its index's newest and oldest
seq (entries never change; retention only removes the oldest), so those make
its ETag, known after one cheap Redis call and before any event is read.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Request

# Part of every ETag: bump when the rendering changes, so caches let go.
RENDER_VERSION = "2"  # 2: Base64 content, uuid5 ids, JSON


def etag_for(*parts: object) -> str:
    """A strong entity tag over ``parts`` (unquoted, as werkzeug wants it)."""
    text = "\x1f".join(str(part) for part in (RENDER_VERSION, *parts))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def last_modified(newest_ms: int, now_ms: int) -> datetime | None:
    """Last-Modified for a feed whose newest entry was ingested at ``newest_ms``.

    HTTP dates have whole seconds.  While the newest entry's second is still
    running, another entry may arrive in it, so the second before is given:
    an If-Modified-Since echoing it never earns a 304 that hides that entry.
    """
    if not newest_ms:
        return None
    second = newest_ms // 1000
    if now_ms // 1000 <= second:
        second -= 1
    return datetime.fromtimestamp(second, UTC)


def not_modified(request: Request, etag: str, changed_ms: int) -> bool:
    """True when the request's If-None-Match or If-Modified-Since says it has this version.

    If-None-Match wins when present (RFC 9110 13.2.2) and compares weakly
    (13.1.2: ``W/"x"`` matches ``"x"``), ``*`` matching any.  ``changed_ms``:
    when the resource last changed, exact.
    """
    if request.if_none_match:
        return request.if_none_match.contains_weak(etag)
    since = request.if_modified_since
    if since is not None and changed_ms:
        return changed_ms // 1000 <= int(since.timestamp())
    return False


class RenderCache:
    """A least-recently-used map (rendered pages, rendered entries), per process.

    ``size``: most items; ``max_bytes`` (with ``weigh`` giving an item's
    bytes): most bytes all items may hold together, 0 for no such limit.
    """

    def __init__(self, size: int, max_bytes: int = 0, weigh: Callable[[Any], int] = len) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.weigh = weigh
        self._items: OrderedDict[object, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: object) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: object, value: Any) -> None:
        weight = self.weigh(value) if self.max_bytes else 0
        if self.size <= 0 or weight > self.max_bytes > 0:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None and self.max_bytes:
                self._bytes -= self.weigh(old)
            self._items[key] = value
            self._bytes += weight
            while len(self._items) > self.size or (self.max_bytes and self._bytes > self.max_bytes):
                _, dropped = self._items.popitem(last=False)
                if self.max_bytes:
                    self._bytes -= self.weigh(dropped)
