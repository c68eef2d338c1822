"""Which representation a request gets: Atom, HTML (browsers) or JSON, gzipped or not.

Each is a variant with an ETag of its own (RFC 9110 8.8.3: a content coding
makes another representation), so the responses say ``Vary: Accept,
Accept-Encoding``.
"""

from __future__ import annotations

import gzip

from flask import Request

from yagi_meter import atom

ATOM, HTML, JSON = "atom", "html", "json"
CONTENT_TYPES = {HTML: "text/html; charset=utf-8", JSON: "application/json"}
GZIP_SUFFIX = "-gzip"  # appended to a representation's ETag for its gzip variant
# Level 1: on a 1,000-entry page about half the time of the default 6, for
# 1.7x its bytes, still an eighth of the page (docs/performance.md, gzip).
GZIP_LEVEL = 1


def chosen(request: Request, format_param: str) -> str:
    """ATOM, HTML or JSON: ``format=`` wins; else the best match of Accept (Atom for */*)."""
    if format_param:
        return JSON if format_param == JSON else ATOM
    offered = [atom.FEED_TYPE, "application/xml", "text/html", "application/json"]
    best = request.accept_mimetypes.best_match(offered)
    return {"text/html": HTML, "application/json": JSON}.get(best or "", ATOM)


def gzip_accepted(request: Request) -> bool:
    """True when Accept-Encoding takes gzip (``gzip`` or ``*``, with a quality above 0)."""
    return request.accept_encodings["gzip"] > 0


def compress(body: bytes) -> bytes:
    """``body`` gzipped; the same bytes every time (no timestamp in the header)."""
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
