"""Atom (RFC 4287) rendering of events: pure functions from events to bytes, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import quote

from lxml import etree

from yagi_meter.notification import Event, format_timestamp

ATOM_NS = "http://www.w3.org/2005/Atom"
CATEGORY_SCHEME = "urn:yagi-meter:"
_A = f"{{{ATOM_NS}}}"


def entry_id(event: Event) -> str:
    return f"urn:uuid:{event.message_id}"


def entry_url(base_url: str, event: Event) -> str:
    return f"{base_url}/events/{quote(event.message_id, safe='')}"


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, _A + tag, attrs)
    if text is not None:
        element.text = text
    return element


def entry_element(event: Event, base_url: str, parent: etree._Element | None = None) -> etree._Element:
    """The ``atom:entry`` of one event, appended to ``parent`` when given."""
    entry = etree.Element(_A + "entry", nsmap={None: ATOM_NS}) if parent is None else _sub(parent, "entry")
    _sub(entry, "id", entry_id(event))
    _sub(entry, "title", event.event_type, type="text")
    # published: when it happened; updated: when it entered the archive (never
    # before published), so a feed's updated moves on even for late arrivals.
    published = format_timestamp(event.timestamp)
    updated = format_timestamp(max(event.timestamp, event.ingested_at or event.timestamp))
    _sub(entry, "updated", updated)
    _sub(entry, "published", published)
    author = _sub(entry, "author")
    _sub(author, "name", event.publisher_id or event.service)
    _sub(entry, "link", rel="self", href=entry_url(base_url, event), type="application/atom+xml;type=entry")
    categories = (
        ("event_type", event.event_type),
        ("service", event.service),
        ("tenant", event.tenant_id),
        ("resource", event.resource_id),
    )
    for scheme, term in categories:
        if term:
            _sub(entry, "category", term=term, scheme=CATEGORY_SCHEME + scheme, label=scheme)
    # notification_json is ASCII-only JSON: control characters in the payload
    # are \u escapes there, so the document is always well-formed XML.
    _sub(entry, "content", event.notification_json, type="application/json")
    return entry


def entry_document(event: Event, base_url: str) -> bytes:
    """A standalone Atom Entry Document (``application/atom+xml;type=entry``)."""
    return etree.tostring(entry_element(event, base_url), xml_declaration=True, encoding="utf-8")


def entry_bytes(event: Event, base_url: str) -> bytes:
    """One serialized ``atom:entry`` (with its xmlns), for ``feed_of_entries``."""
    return etree.tostring(entry_element(event, base_url), encoding="utf-8")


def feed_of_entries(
    entries: Sequence[bytes], self_url: str, title: str, updated: datetime, hub_url: str | None = None
) -> bytes:
    """An Atom Feed Document of already serialized entries (WebSub content distribution).

    Entries are spliced in as bytes, so a push worker renders each event once
    however many subscribers receive it.
    """
    feed = etree.Element(_A + "feed", nsmap={None: ATOM_NS})
    _sub(feed, "id", self_url)
    _sub(feed, "title", title, type="text")
    _sub(feed, "updated", format_timestamp(updated))
    _sub(feed, "link", rel="self", href=self_url, type="application/atom+xml")
    if hub_url:
        _sub(feed, "link", rel="hub", href=hub_url)
    head = etree.tostring(feed, xml_declaration=True, encoding="utf-8")
    close = b"</feed>"
    return head[: -len(close)] + b"".join(entries) + close


def feed_document(
    events: Sequence[Event], base_url: str, self_url: str, title: str, hub_url: str | None = None
) -> bytes:
    """An Atom Feed Document holding exactly ``events``."""
    updated = max((entry_updated(e) for e in events), default=datetime.now(UTC))
    return feed_of_entries([entry_bytes(e, base_url) for e in events], self_url, title, updated, hub_url)


def entry_updated(event: Event) -> datetime:
    """An entry's ``updated``: when it entered the archive, never before it happened."""
    return max(event.timestamp, event.ingested_at or event.timestamp)
