"""HTTP validators (ETag, Last-Modified), conditional requests, and a render cache.

A feed page is a function of the query and of its index's newest and oldest
seq (entries never change; retention only removes the oldest), so those make
its ETag, known after one cheap Redis call and before any event is read.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from flask import Request

# Part of every ETag: bump when the rendering changes, so caches let go.
RENDER_VERSION = "1"


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

    If-None-Match wins when present (RFC 9110 13.2.2).  ``changed_ms``: when
    the resource last changed, exact.
    """
    if request.if_none_match:
        return request.if_none_match.contains(etag)
    since = request.if_modified_since
    if since is not None and changed_ms:
        return changed_ms // 1000 <= int(since.timestamp())
    return False


class RenderCache:
    """A small least-recently-used map (rendered pages, rendered entries), per process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[object, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: object) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: object, value: object) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
