"""The feed routes: who may read, which index, then one shared way to answer."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import quote, unquote_to_bytes, urlsplit

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.http import http_date, quote_etag

from feeds import browser, json_format
from feeds import representation as rep
from feeds.auth import TOKEN_HEADER, Authenticator, Principal, require_admin, require_tenant
from feeds.caching import RenderCache, etag_for, last_modified, not_modified
from feeds.paging import (
    ENTRY_ID_PREFIX,
    FORMATS,
    FeedRequest,
    feed_id,
    feed_links,
    marker_text,
    parse_request,
    self_href,
)
from yagi_meter import atom
from yagi_meter.config import Config
from yagi_meter.errors import UnknownMarker
from yagi_meter.store import Store
from yagi_meter.store.pages import (
    FeedIndex,
    FeedState,
    Page,
    PageQuery,
    Pages,
    StoredEvent,
    ms_to_datetime,
)

bp = Blueprint("feeds", __name__)

STYLESHEET_PATH = "/static/atom.xsl"


@dataclass
class FeedServer:
    """What the views share, built once by create_app."""

    config: Config
    store: Store
    pages: Pages
    authenticate: Authenticator
    pages_cache: RenderCache  # whole pages by path, query and representation
    entries_cache: RenderCache  # entry elements by seq

    def __post_init__(self) -> None:
        self.base_url = self.config.base_url
        self.hub = self.config.hub.external_url or f"{self.base_url}/hub"
        self.stylesheet = self.base_url + STYLESHEET_PATH


def server() -> FeedServer:
    return current_app.extensions["yagi_meter"]


def principal() -> Principal:
    return server().authenticate(request.headers.get(TOKEN_HEADER))


# -- routes ------------------------------------------------------------------


@bp.get("/events")
def all_events() -> Response:
    require_admin(principal())
    feed = parse()
    pages = server().pages
    index = pages.everything()
    event_type = feed.query.event_type
    if event_type and "*" not in event_type:
        # An exact type has its own index: read that instead of filtering.
        index = pages.event_type(event_type, strict=False)
        return answer_feed(index, feed, "/events", "all events", read=replace(feed.query, event_type=""))
    return answer_feed(index, feed, "/events", "all events")


NO_SUCH_FEED = "no such feed (percent-encode a '/' in an id as %2F)"
TENANT_FEED = ("tenants", "", "events")
RESOURCE_FEED = ("tenants", "", "resources", "", "events")


def raw_ids(shape: tuple[str, ...], decoded: tuple[str, ...]) -> tuple[str, ...] | None:
    """The ids in the request path, each as the client percent-encoded it.

    The server decodes %2F into "/" before routing, so a tenant or resource
    id holding "/" (swift objects: "account/container/object") reaches the
    route split at its slashes.  The raw URI (RAW_URI from gunicorn and
    werkzeug, REQUEST_URI from others) still has the client's segments:
    ``shape`` names the literal segments and "" where an id goes.  Without a
    raw URI, the router's ``decoded`` values are used.  None: the raw path
    does not have this shape.
    """
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not raw:
        return decoded
    path = urlsplit(raw).path
    root = request.script_root
    if root and path.startswith(root):
        path = path[len(root) :]
    segments = path.split("/")[1:]
    if len(segments) != len(shape) or any(
        lit and seg != lit for lit, seg in zip(shape, segments, strict=True)
    ):
        return None
    return tuple(_segment_text(seg) for lit, seg in zip(shape, segments, strict=True) if not lit)


def _segment_text(segment: str) -> str:
    """A raw path segment as text: percent-decoded, its bytes read as UTF-8.

    WSGI servers give the raw URI as a "WSGI string" (each byte one latin-1
    character); some give real text.
    """
    try:
        raw = segment.encode("latin-1")
    except UnicodeEncodeError:
        raw = segment.encode("utf-8")
    return unquote_to_bytes(raw).decode("utf-8", errors="replace")


# A path converter, so an id with an encoded "/" reaches the view; raw_ids
# then takes the ids from the raw URI.  werkzeug tries the rule with more
# static parts first, so .../resources/<r>/events is never a tenant id.
@bp.get("/tenants/<path:tenant_id>/events")
def tenant_events(tenant_id: str) -> Response:
    ids = raw_ids(TENANT_FEED, (tenant_id,))
    if ids is None:
        raise NotFound(NO_SUCH_FEED)
    return tenant_feed(ids[0])


def tenant_feed(tenant_id: str) -> Response:
    caller = principal()
    require_tenant(caller, tenant_id)
    path = f"/tenants/{quote(tenant_id, safe='')}/events"
    index = server().pages.tenant(tenant_id)
    own = caller.tenant_id == tenant_id
    return answer_feed(index, parse(), path, f"events of tenant {tenant_id}", known=own, what="tenant")


@bp.get("/tenants/<path:tenant_id>/resources/<path:resource_id>/events")
def resource_events(tenant_id: str, resource_id: str) -> Response:
    ids = raw_ids(RESOURCE_FEED, (tenant_id, resource_id))
    if ids is None:
        # e.g. /tenants/x%2Fresources%2Fy/events: one tenant, decoded into this rule's shape
        tenant = raw_ids(TENANT_FEED, (f"{tenant_id}/resources/{resource_id}",))
        if tenant is None:
            raise NotFound(NO_SUCH_FEED)
        return tenant_feed(tenant[0])
    tenant_id, resource_id = ids
    require_tenant(principal(), tenant_id)
    path = f"/tenants/{quote(tenant_id, safe='')}/resources/{quote(resource_id, safe='')}/events"
    index = server().pages.resource(tenant_id, resource_id)
    title = f"events of resource {resource_id} of tenant {tenant_id}"
    return answer_feed(index, parse(), path, title, what="resource")


@bp.get("/event_types/<event_type>/events")
def type_events(event_type: str) -> Response:
    require_admin(principal())
    path = f"/event_types/{quote(event_type, safe='')}/events"
    index = server().pages.event_type(event_type)
    return answer_feed(index, parse(), path, f"{event_type} events", what="event type")


@bp.get("/events/<path:message_id>")
def one_event(message_id: str) -> Response:
    caller = principal()
    if message_id.startswith(ENTRY_ID_PREFIX):
        message_id = message_id[len(ENTRY_ID_PREFIX) :]
    srv = server()
    version = srv.pages.entry_version(message_id)
    found = srv.store.events.get_many([version[0]]) if version else []
    event = found[0] if found else None
    # Another tenant's event is answered exactly like a missing one.
    # A billed project reads the events in its feed (README, What is stored).
    readers = (event.tenant_id, event.billed_tenant_id) if event is not None else ()
    if version is None or event is None or not any(caller.may_read_tenant(t) for t in readers):
        raise NotFound(f"no event {message_id}")
    changed_ms = int(event.ingested_at.timestamp() * 1000) if event.ingested_at else 0
    kind = rep.chosen(request, entry_format())
    gz = rep.gzip_accepted(request)
    # seq and digest alone could come back after Redis lost data; the ingest time does not.
    etag = etag_for("entry", srv.base_url, event.seq, version[1], changed_ms, kind)
    etag += rep.GZIP_SUFFIX if gz else ""
    # An entry never changes: its second is over for good once it is stored.
    headers = validators(etag, last_modified(changed_ms, changed_ms + 1000))
    if not_modified(request, etag, changed_ms):
        return Response(status=304, headers=headers)
    if kind == rep.JSON:
        entry = json_format.entry_json(event, srv.base_url, marker_text(event.message_id))
        body = json_format.entry_document(entry)
    else:
        body = atom.entry_document(event, srv.base_url, stylesheet=srv.stylesheet)
        if kind == rep.HTML:
            body = browser.to_html(body)
    return respond(body, rep.CONTENT_TYPES.get(kind, atom.ENTRY_TYPE), headers, gz)


def entry_format() -> str:
    """An entry document's ``format`` parameter (other parameters are ignored, as ever)."""
    fmt = request.args.get("format", "")
    if fmt and fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
    return fmt


# -- one way to answer a feed ----------------------------------------------------


def parse() -> FeedRequest:
    feeds = server().config.feeds
    return parse_request(request.args, feeds.page_size, feeds.max_page_size, feeds.scan_limit)


@dataclass(frozen=True)
class CachedPage:
    """A rendered page and the version of the feed it was rendered from (FeedState.version)."""

    version: str
    etag: str
    body: bytes


def answer_feed(
    index: FeedIndex,
    feed: FeedRequest,
    path: str,
    title: str,
    *,
    known: bool = False,
    what: str = "",
    read: PageQuery | None = None,
) -> Response:
    """304, the cached rendering, or a freshly read and rendered page, with its headers.

    One Redis call in the usual cases: a conditional request asks for the
    feed's state only (enough for a 304); any other asks for the state and
    the page together, telling Redis which state it has rendered already.
    ``known``: answer an empty feed rather than 404 when the index is empty
    (a tenant's own feed before its first event).  ``read``: the query run
    against ``index`` when it differs from the one the links repeat.
    """
    srv = server()
    query = read or feed.query
    kind = rep.chosen(request, feed.format)
    gz = rep.gzip_accepted(request)
    key = (path, request.query_string, kind)
    plain = srv.pages_cache.get(key)
    packed = srv.pages_cache.get((*key, "gzip")) if gz else None
    held = packed or plain  # a rendering of the feed's current state, in either coding
    conditional = bool(request.if_none_match or request.if_modified_since)
    page = None
    if conditional:
        state = srv.pages.state(index)
    else:
        state, page = read_page(srv, index, query, held)
    if state.empty and what and not known:
        raise NotFound(f"unknown {what}: no events")
    if state.empty and query.marker:
        raise BadRequest(f"unknown marker {query.marker!r}: not an entry of this feed")
    etag = etag_for(srv.base_url, *key, state.version)
    sent = etag + rep.GZIP_SUFFIX if gz else etag
    headers = feed_headers(srv, path, feed, sent, state)
    if conditional and not_modified(request, sent, state.newest_ingested_ms):
        return Response(status=304, headers=headers)
    if packed is not None and packed.etag == sent:
        return respond(packed.body, content_type(kind), headers, gz, compressed=True)
    if plain is not None and plain.etag == etag:
        body = plain.body
    else:
        if page is None:  # a conditional request that did not match
            state, page = read_page(srv, index, query, None)
            etag = etag_for(srv.base_url, *key, state.version)
            sent = etag + rep.GZIP_SUFFIX if gz else etag
            headers = feed_headers(srv, path, feed, sent, state)
        assert page is not None  # read without a known version: always a page
        body = render_page(srv, page, feed, srv.base_url + path, title, state, kind)
        srv.pages_cache.put(key, CachedPage(state.version, etag, body))
    if gz:
        body = rep.compress(body)
        srv.pages_cache.put((*key, "gzip"), CachedPage(state.version, sent, body))
    return respond(body, content_type(kind), headers, gz, compressed=gz)


def content_type(kind: str) -> str:
    return rep.CONTENT_TYPES.get(kind, atom.FEED_TYPE)


def read_page(
    srv: FeedServer, index: FeedIndex, query: PageQuery, cached: CachedPage | None
) -> tuple[FeedState, Page | None]:
    known = cached.version if cached is not None else None
    try:
        return srv.pages.read(index, query, known)
    except UnknownMarker:
        raise BadRequest(f"unknown marker {query.marker!r}: not an entry of this feed") from None


def feed_headers(
    srv: FeedServer, path: str, feed: FeedRequest, etag: str, state: FeedState
) -> list[tuple[str, str]]:
    headers = validators(etag, last_modified(state.newest_ingested_ms, state.now_ms))
    # The same canonical URL as the document's rel=self: one topic URL for WebSub.
    headers.append(("Link", f'<{srv.hub}>; rel="hub", <{self_href(srv.base_url + path, feed)}>; rel="self"'))
    return headers


def render_page(
    srv: FeedServer, page: Page, feed: FeedRequest, url: str, title: str, state: FeedState, kind: str
) -> bytes:
    stored = page.events
    if feed.query.direction in ("forward", "last"):
        stored = list(reversed(stored))  # a feed lists newest first
    entries = [entry_rendering(srv, item, kind == rep.JSON) for item in stored]
    updated = max([ms_to_datetime(state.newest_ingested_ms or 0)] + [when for _, when in entries])
    meta = atom.FeedMeta(
        feed_id=feed_id(url, feed),
        title=f"yagi-meter: {title}",
        updated=updated,
        links=feed_links(url, feed, page, srv.hub),
        stylesheet=srv.stylesheet,
    )
    bodies = (body for body, _ in entries)
    if kind == rep.JSON:
        return json_format.feed_document(meta, bodies)
    document = atom.feed_document(meta, bodies)
    return browser.to_html(document) if kind == rep.HTML else document


def entry_rendering(srv: FeedServer, stored: StoredEvent, as_json: bool) -> tuple[bytes, datetime]:
    """An entry's rendering (Atom, or JSON) and its atom:updated, from the cache when there (entries
    never change; the key is the event's identity, not its seq, which Redis losing data gives out again)."""
    key = (stored.identity, srv.base_url, as_json)
    cached = srv.entries_cache.get(key)
    if cached is None:
        event = stored.decode()
        if as_json:
            body = json_format.entry_json(event, srv.base_url, marker_text(event.message_id))
        else:
            body = atom.entry_bytes(event, srv.base_url)
        cached = (body, atom.entry_updated(event))
        srv.entries_cache.put(key, cached)
    return cached


def validators(etag: str, modified: datetime | None) -> list[tuple[str, str]]:
    headers = [("ETag", quote_etag(etag)), ("Vary", f"Accept, Accept-Encoding, {TOKEN_HEADER}")]
    if modified is not None:
        headers.append(("Last-Modified", http_date(modified)))
    if server().config.auth.mode != "none":
        headers.append(("Cache-Control", "private, no-cache"))
    else:
        headers.append(("Cache-Control", "no-cache"))
    return headers


def respond(
    body: bytes, content_type: str, headers: list[tuple[str, str]], gz: bool, compressed: bool = False
) -> Response:
    """A 200 with ``body``, gzipped when ``gz`` (``compressed``: it is already)."""
    if gz:
        body = body if compressed else rep.compress(body)
        headers = [*headers, ("Content-Encoding", "gzip")]
    return Response(body, 200, headers, content_type=content_type)
