"""The audit's routes: ``/audit`` (verdicts, admin) and a resource's usage periods.

Both answer as the other feeds do (feeds/representation.py): Atom, JSON
(``Accept: application/json`` or ``format=json``) or the browser view, gzip
when accepted, an ETag per representation compared weakly, and Atom entries
whose content is Base64 JSON with a ``<summary>`` beside it.
"""

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

from feeds import browser
from feeds import representation as rep
from feeds.auth import require_admin, require_tenant
from feeds.caching import etag_for, last_modified, not_modified
from feeds.views import (
    NO_SUCH_FEED,
    answer_feed,
    entry_format,
    parse,
    principal,
    raw_ids,
    respond,
    server,
    validators,
)
from yagi_meter import atom
from yagi_meter.audit.daemon import rules_of
from yagi_meter.audit.periods import Period, periods, rule_for
from yagi_meter.notification import Event, format_timestamp

bp = Blueprint("audit", __name__)

PERIODS_FEED = ("tenants", "", "resources", "", "periods")
_A = f"{{{atom.ATOM_NS}}}"
# Most lifecycle events one periods answer is computed from.
MOST_EVENTS = 10_000


@bp.get("/audit")
def audit_feed() -> Response:
    """Every verdict of the audit, newest first: paged, filtered and cached like any feed."""
    require_admin(principal())
    index = server().pages.audit_verdicts()
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
    kind = rep.chosen(request, entry_format())
    gz = rep.gzip_accepted(request)
    srv = server()
    if srv.pages.state(srv.pages.resource(tenant_id, resource_id)).empty:
        raise NotFound("unknown resource: no events")
    rules = rules_of(srv.config)
    types = sorted({t for rule in rules for t in rule.lifecycle})
    found = srv.store.audit.lifecycle(
        tenant_id, resource_id, types, srv.config.audit.lifecycle_scan_limit, MOST_EVENTS
    )
    rule = rule_for(rules, found.events)
    spans = periods(rule, found.events) if rule is not None else []
    path = f"/tenants/{quote(tenant_id, safe='')}/resources/{quote(resource_id, safe='')}/periods"
    url = srv.base_url + path
    if kind == rep.JSON:
        document = {
            "tenant_id": tenant_id,
            "resource_id": resource_id,
            "rule": rule.name if rule else None,
            "complete": found.complete,
            "periods": [span.as_json() for span in spans],
            "links": {"self": url, "events": url[: -len("periods")] + "events"},
        }
        body = json.dumps(document, sort_keys=True).encode()
    else:
        body = render_atom(url, tenant_id, resource_id, spans, found.events, srv.stylesheet)
        if kind == rep.HTML:
            body = browser.to_html(body)
    # The answer is computed from the lifecycle read now: its ETag is over what was rendered.
    digest = hashlib.blake2b(body, digest_size=12).hexdigest()
    etag = etag_for("periods", url, kind, digest) + (rep.GZIP_SUFFIX if gz else "")
    newest_ms = max((_ms(e.ingested_at or e.timestamp) for e in found.events), default=0)
    headers = validators(etag, last_modified(newest_ms, _ms(datetime.now(UTC))))
    if not_modified(request, etag, newest_ms):
        return Response(status=304, headers=headers)
    return respond(body, rep.CONTENT_TYPES.get(kind, atom.FEED_TYPE), headers, gz)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def render_atom(
    url: str,
    tenant_id: str,
    resource_id: str,
    spans: list[Period],
    events: list[Event],
    stylesheet: str | None = None,
) -> bytes:
    """The periods as an Atom feed, newest first; each entry's content is the period's JSON (Base64)."""
    newest = max([e.ingested_at or e.timestamp for e in events], default=datetime.now(UTC))
    meta = atom.FeedMeta(
        feed_id=url,
        title=f"yagi-meter: usage periods of resource {resource_id} of tenant {tenant_id}",
        updated=newest,
        links=(atom.Link("self", url),),
        stylesheet=stylesheet,
    )
    return atom.feed_document(meta, (_period_entry(url, resource_id, span) for span in reversed(spans)))


def _period_entry(url: str, resource_id: str, span: Period) -> bytes:
    entry = etree.Element(_A + "entry", nsmap={None: atom.ATOM_NS})
    key = f"{url}\x1f{span.opened_by.message_id}"
    _sub(entry, "id", f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}")
    end = "now" if span.end is None else format_timestamp(span.end)
    _sub(entry, "title", f"{format_timestamp(span.start)} - {end}", type="text")
    closed = span.closed_by.timestamp if span.closed_by else span.opened_by.timestamp
    _sub(entry, "updated", format_timestamp(closed))
    _sub(entry, "published", format_timestamp(span.start))
    attrs = ", ".join(f"{k}={v}" for k, v in sorted(span.attributes.items()))
    _sub(
        entry, "summary", f"{resource_id} from {format_timestamp(span.start)} to {end}: {attrs}", type="text"
    )
    payload = json.dumps(span.as_json(), sort_keys=True).encode()
    _sub(entry, "content", base64.b64encode(payload).decode(), type=atom.CONTENT_TYPE)
    return etree.tostring(entry, encoding="utf-8")


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, _A + tag, attrs)
    if text is not None:
        element.text = text
    return element
