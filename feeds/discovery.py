"""Discovery: what feeds there are and what the archive knows.

``GET /`` is an AtomPub service document (RFC 5023 section 8) listing the
feeds the caller may read.  ``GET /tenants``, ``/tenants/<t>/resources`` and
``/event_types`` list the names the archive knows, a bounded page at a
time, with their counts (store/catalog.py: no event is read), in Atom or
JSON, with ETags and 304s, under the same auth as the feeds.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from flask import Blueprint, Response, request
from lxml import etree
from werkzeug.exceptions import BadRequest, NotFound

from feeds import representation as rep
from feeds.auth import Principal, require_admin, require_tenant
from feeds.caching import etag_for, not_modified
from feeds.views import FeedServer, principal, raw_ids, respond, server, validators
from yagi_meter import atom
from yagi_meter.notification import format_timestamp
from yagi_meter.store.catalog import EVENT_TYPES, RESOURCES, TENANTS, Known, KnownPage

bp = Blueprint("discovery", __name__)

APP_NS = "http://www.w3.org/2007/app"
SERVICE_TYPE = "application/atomsvc+xml"
# Foreign markup of the list entries (RFC 4287 6.4): the counts, machine-readable.
DISCOVERY_NS = "urn:yagi-meter:discovery"
# uuid5 namespace of the list entries' ids: one id per (list, name), never changed.
LIST_NAMESPACE = uuid.UUID("0b3f6a52-6c1e-4b8e-9d0a-7f2e5c4b3a19")
_PARAMS = ("limit", "marker", "format")
_A = "{" + atom.ATOM_NS + "}"
_APP = "{" + APP_NS + "}"
_D = "{" + DISCOVERY_NS + "}"
_EPOCH = datetime.fromtimestamp(0, UTC)


def _q(value: str) -> str:
    return quote(value, safe="")


def _etag(srv: FeedServer, caller: Principal, kind: str, gz: bool) -> str:
    """Any ingest may change a list: the store's position versions it (one MGET)."""
    epoch, seq = srv.store.events.position()
    scope = "admin" if caller.admin else f"tenant:{caller.tenant_id}"
    etag = etag_for("discovery", srv.base_url, request.path, request.query_string, kind, scope, epoch, seq)
    return etag + rep.GZIP_SUFFIX if gz else etag


# -- the service document ----------------------------------------------------


@bp.get("/")
def service_document() -> Response:
    """The feeds the caller may read: an admin every global and event type feed (the
    first ``[feeds] max_page_size`` types; /event_types lists them all), a tenant its own."""
    caller = principal()
    srv = server()
    gz = rep.gzip_accepted(request)
    etag = _etag(srv, caller, "service", gz)
    headers = validators(etag, None)
    if not_modified(request, etag, 0):
        return Response(status=304, headers=headers)
    base = srv.base_url
    service = etree.Element(_APP + "service", nsmap={None: APP_NS, "atom": atom.ATOM_NS})
    if caller.admin:
        archive = _workspace(service, "yagi-meter")
        _collection(archive, f"{base}/events", "all events")
        types = srv.store.catalog.page(EVENT_TYPES, None, "", srv.config.feeds.max_page_size)
        if types.items:
            workspace = _workspace(service, "event types")
            for item in types.items:
                _collection(workspace, f"{base}/event_types/{_q(item.name)}/events", f"{item.name} events")
        _link(service, "related", f"{base}/tenants")
        _link(service, "related", f"{base}/event_types")
    elif caller.tenant_id is not None:
        tenant = caller.tenant_id
        workspace = _workspace(service, f"tenant {tenant}")
        _collection(workspace, f"{base}/tenants/{_q(tenant)}/events", f"events of tenant {tenant}")
        _link(service, "related", f"{base}/tenants/{_q(tenant)}/resources")
        _link(service, "related", f"{base}/event_types")
    body = etree.tostring(service, xml_declaration=True, encoding="utf-8")
    return respond(body, SERVICE_TYPE, headers, gz)


def _workspace(service: etree._Element, title: str) -> etree._Element:
    workspace = etree.SubElement(service, _APP + "workspace")
    etree.SubElement(workspace, _A + "title", type="text").text = title
    return workspace


def _collection(workspace: etree._Element, href: str, title: str) -> None:
    collection = etree.SubElement(workspace, _APP + "collection", href=href)
    etree.SubElement(collection, _A + "title", type="text").text = title
    etree.SubElement(collection, _APP + "accept")  # empty: read only (RFC 5023 8.3.4)


def _link(parent: etree._Element, rel: str, href: str) -> None:
    etree.SubElement(parent, _A + "link", rel=rel, href=href)


# -- the lists -----------------------------------------------------------------


@bp.get("/tenants")
def tenants() -> Response:
    caller = principal()
    require_admin(caller)
    return answer_list(caller, TENANTS, None, "/tenants", "tenants")


@bp.get("/tenants/<path:tenant_id>/resources")
def resources(tenant_id: str) -> Response:
    ids = raw_ids(("tenants", "", "resources"), (tenant_id,))
    if ids is None:
        raise NotFound("no such list (percent-encode a '/' in an id as %2F)")
    caller = principal()
    require_tenant(caller, ids[0])
    path = f"/tenants/{_q(ids[0])}/resources"
    return answer_list(caller, RESOURCES, ids[0], path, f"resources of tenant {ids[0]}")


@bp.get("/event_types")
def event_types() -> Response:
    """An admin: every event type; a tenant: the types of its own events."""
    caller = principal()
    if caller.admin:
        return answer_list(caller, EVENT_TYPES, None, "/event_types", "event types")
    if caller.tenant_id is None:
        require_admin(caller)
    tenant = caller.tenant_id
    return answer_list(caller, EVENT_TYPES, tenant, "/event_types", f"event types of tenant {tenant}")


def _parse_list_args(page_size: int, max_page_size: int) -> tuple[int, str, str]:
    args = request.args
    for name in args:
        if name not in _PARAMS:
            raise BadRequest(f"unknown parameter {name!r} (known: {', '.join(_PARAMS)})")
    text = args.get("limit")
    if text is None:
        limit = page_size
    else:
        try:
            limit = int(text)
        except ValueError:
            raise BadRequest("limit must be a whole number") from None
        if not 1 <= limit <= max_page_size:
            raise BadRequest(f"limit must be between 1 and {max_page_size}")
    marker = args.get("marker", "")
    if len(marker) > 1024:
        raise BadRequest("marker is longer than 1024 characters")
    fmt = args.get("format", "")
    if fmt and fmt not in ("atom", "json"):
        raise BadRequest("format must be one of atom, json")
    return limit, marker, fmt


def answer_list(caller: Principal, kind: str, tenant_id: str | None, path: str, title: str) -> Response:
    srv = server()
    feeds = srv.config.feeds
    limit, marker, fmt = _parse_list_args(feeds.page_size, feeds.max_page_size)
    shown = rep.JSON if rep.chosen(request, fmt) == rep.JSON else rep.ATOM
    gz = rep.gzip_accepted(request)
    etag = _etag(srv, caller, shown, gz)
    headers = validators(etag, None)
    if not_modified(request, etag, 0):
        return Response(status=304, headers=headers)
    page = srv.store.catalog.page(kind, tenant_id, marker, limit)
    url = srv.base_url + path
    query = {"limit": str(limit), **({"format": fmt} if fmt else {})}
    links = [("self", f"{url}?{urlencode({**query, **({'marker': marker} if marker else {})})}")]
    if marker:
        links.append(("first", f"{url}?{urlencode(query)}"))
    if page.more:
        links.append(("next", f"{url}?{urlencode({**query, 'marker': page.items[-1].name})}"))
    if shown == rep.JSON:
        body = _list_json(srv, kind, tenant_id, url, title, page, links)
        return respond(body, rep.CONTENT_TYPES[rep.JSON], headers, gz)
    return respond(_list_atom(srv, kind, tenant_id, url, title, page, links), atom.FEED_TYPE, headers, gz)


def _feed_of(srv: FeedServer, kind: str, tenant_id: str | None, name: str) -> str:
    """The URL of the feed of one listed name."""
    base = srv.base_url
    if kind == TENANTS:
        return f"{base}/tenants/{_q(name)}/events"
    if kind == RESOURCES:
        return f"{base}/tenants/{_q(tenant_id or '')}/resources/{_q(name)}/events"
    if tenant_id is None:
        return f"{base}/event_types/{_q(name)}/events"
    return f"{base}/tenants/{_q(tenant_id)}/events?{urlencode({'event_type': name})}"


def _entry_id(kind: str, tenant_id: str | None, name: str) -> str:
    key = "\n".join((kind, tenant_id or "", name))
    return f"urn:uuid:{uuid.uuid5(LIST_NAMESPACE, key)}"


def _when(item: Known) -> datetime:
    return datetime.fromtimestamp(item.newest_ms / 1000, UTC) if item.newest_ms else _EPOCH


def _summary(item: Known) -> str:
    kept = "" if item.retained is None else f", {item.retained} retained"
    return f"{item.events} events stored{kept}, newest {format_timestamp(_when(item))}"


def _updated(page: KnownPage) -> datetime:
    return max([_EPOCH, *(_when(item) for item in page.items)])


def _list_atom(
    srv: FeedServer,
    kind: str,
    tenant_id: str | None,
    url: str,
    title: str,
    page: KnownPage,
    links: list[tuple[str, str]],
) -> bytes:
    feed = etree.Element(_A + "feed", nsmap={None: atom.ATOM_NS, "d": DISCOVERY_NS})
    etree.SubElement(feed, _A + "id").text = url
    etree.SubElement(feed, _A + "title", type="text").text = f"yagi-meter: {title}"
    etree.SubElement(feed, _A + "updated").text = format_timestamp(_updated(page))
    etree.SubElement(etree.SubElement(feed, _A + "author"), _A + "name").text = "yagi-meter"
    for rel, href in links:
        etree.SubElement(feed, _A + "link", rel=rel, href=href, type=atom.FEED_TYPE)
    for item in page.items:
        entry = etree.SubElement(feed, _A + "entry")
        etree.SubElement(entry, _A + "id").text = _entry_id(kind, tenant_id, item.name)
        etree.SubElement(entry, _A + "title", type="text").text = item.name
        etree.SubElement(entry, _A + "updated").text = format_timestamp(_when(item))
        etree.SubElement(
            entry,
            _A + "link",
            rel="alternate",
            href=_feed_of(srv, kind, tenant_id, item.name),
            type=atom.FEED_TYPE,
        )
        etree.SubElement(entry, _A + "summary", type="text").text = _summary(item)
        etree.SubElement(entry, _D + "events").text = str(item.events)
        if item.retained is not None:
            etree.SubElement(entry, _D + "retained").text = str(item.retained)
    return etree.tostring(feed, xml_declaration=True, encoding="utf-8")


def _list_json(
    srv: FeedServer,
    kind: str,
    tenant_id: str | None,
    url: str,
    title: str,
    page: KnownPage,
    links: list[tuple[str, str]],
) -> bytes:
    entries = [
        {
            "id": _entry_id(kind, tenant_id, item.name),
            "name": item.name,
            "events": item.events,
            "retained": item.retained,
            "newest": format_timestamp(_when(item)) if item.newest_ms else None,
            "feed": _feed_of(srv, kind, tenant_id, item.name),
        }
        for item in page.items
    ]
    document = {
        "feed": {
            "id": url,
            "title": f"yagi-meter: {title}",
            "updated": format_timestamp(_updated(page)),
            "link": [{"rel": rel, "href": href} for rel, href in links],
            "entry": entries,
        }
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
