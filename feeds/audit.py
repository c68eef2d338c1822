"""The audit's routes: ``/audit`` (verdicts, admin) and a resource's usage periods."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime
from urllib.parse import quote

from flask import Blueprint, Response, request
from lxml import etree
from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.http import quote_etag

from feeds.auth import TOKEN_HEADER, require_admin, require_tenant
from feeds.views import NO_SUCH_FEED, answer_feed, parse, principal, raw_ids, server
from yagi_meter import atom
from yagi_meter.audit.daemon import rules_of
from yagi_meter.audit.periods import Period, periods, rule_for
from yagi_meter.notification import format_timestamp
from yagi_meter.store.audit import AuditLedger
from yagi_meter.store.pages import FeedIndex

bp = Blueprint("audit", __name__)

PERIODS_FEED = ("tenants", "", "resources", "", "periods")
JSON_TYPE = "application/json"
_A = f"{{{atom.ATOM_NS}}}"
# Most lifecycle events one periods answer is computed from.
MOST_EVENTS = 10_000


@bp.get("/audit")
def audit_feed() -> Response:
    """Every verdict of the audit, newest first: paged, filtered and cached like any feed."""
    require_admin(principal())
    index = FeedIndex(server().store.keys.audit_verdicts, "zset")
    return answer_feed(index, parse(), "/audit", "audit verdicts", known=True)


@bp.get("/tenants/<path:tenant_id>/resources/<path:resource_id>/periods")
def resource_periods(tenant_id: str, resource_id: str) -> Response:
    ids = raw_ids(PERIODS_FEED, (tenant_id, resource_id))
    if ids is None:
        raise NotFound(NO_SUCH_FEED)
    tenant_id, resource_id = ids
    require_tenant(principal(), tenant_id)
    for name in request.args:
        if name != "format":
            raise BadRequest(f"unknown parameter {name!r} (known: format)")
    wanted = request.args.get("format", "")
    if wanted not in ("", "json", "atom"):
        raise BadRequest("format must be json or atom")
    as_json = wanted == "json" or (
        not wanted and request.accept_mimetypes.best_match([atom.FEED_TYPE, JSON_TYPE]) == JSON_TYPE
    )
    srv = server()
    if srv.pages.state(srv.pages.resource(tenant_id, resource_id)).empty:
        raise NotFound("unknown resource: no events")
    rules = rules_of(srv.config)
    types = sorted({t for rule in rules for t in rule.lifecycle})
    found = AuditLedger(srv.store.client, srv.store.keys).lifecycle(
        tenant_id, resource_id, types, srv.config.audit.lifecycle_scan_limit, MOST_EVENTS
    )
    rule = rule_for(rules, found.events)
    spans = periods(rule, found.events) if rule is not None else []
    path = f"/tenants/{quote(tenant_id, safe='')}/resources/{quote(resource_id, safe='')}/periods"
    url = srv.base_url + path
    if as_json:
        document = {
            "tenant_id": tenant_id,
            "resource_id": resource_id,
            "rule": rule.name if rule else None,
            "complete": found.complete,
            "periods": [span.as_json() for span in spans],
            "links": {"self": url, "events": url[: -len("periods")] + "events"},
        }
        body = json.dumps(document, sort_keys=True).encode()
        content_type = JSON_TYPE
    else:
        body = render_atom(url, tenant_id, resource_id, spans, found.events)
        content_type = atom.FEED_TYPE
    etag = hashlib.blake2b(body, digest_size=12).hexdigest()
    headers = [("ETag", quote_etag(etag)), ("Vary", f"Accept, {TOKEN_HEADER}"), ("Cache-Control", "no-cache")]
    if request.if_none_match.contains_weak(etag):
        return Response(status=304, headers=headers)
    return Response(body, 200, headers, content_type=content_type)


def render_atom(url: str, tenant_id: str, resource_id: str, spans: list[Period], events: list) -> bytes:
    """The periods as an Atom feed, newest first; each entry's content is the period's JSON (Base64)."""
    newest = max([e.ingested_at or e.timestamp for e in events], default=datetime.now(UTC))
    feed = etree.Element(_A + "feed", nsmap={None: atom.ATOM_NS})
    _sub(feed, "id", url)
    _sub(
        feed,
        "title",
        f"yagi-meter: usage periods of resource {resource_id} of tenant {tenant_id}",
        type="text",
    )
    _sub(feed, "updated", format_timestamp(newest))
    _sub(_sub(feed, "author"), "name", "yagi-meter")
    _sub(feed, "link", rel="self", href=url, type=atom.FEED_TYPE)
    for span in reversed(spans):
        entry = _sub(feed, "entry")
        key = f"{url}\x1f{span.opened_by.message_id}"
        _sub(entry, "id", f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}")
        end = "now" if span.end is None else format_timestamp(span.end)
        _sub(entry, "title", f"{format_timestamp(span.start)} - {end}", type="text")
        closed = span.closed_by.timestamp if span.closed_by else span.opened_by.timestamp
        _sub(entry, "updated", format_timestamp(closed))
        _sub(entry, "published", format_timestamp(span.start))
        attrs = ", ".join(f"{k}={v}" for k, v in sorted(span.attributes.items()))
        _sub(entry, "summary", f"{resource_id}: {attrs}", type="text")
        payload = json.dumps(span.as_json(), sort_keys=True).encode()
        _sub(entry, "content", base64.b64encode(payload).decode(), type=JSON_TYPE)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + etree.tostring(feed, encoding="utf-8")


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, _A + tag, attrs)
    if text is not None:
        element.text = text
    return element
