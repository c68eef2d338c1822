"""Atom (RFC 4287) rendering of events: pure functions from events to bytes, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote
from xml.sax.saxutils import escape

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
    url = entry_url(base_url, event)
    _sub(entry, "link", rel="self", href=url, type="application/atom+xml;type=entry")
    # The same URL answers a browser with HTML: what feed readers link to.
    _sub(entry, "link", rel="alternate", href=url, type="text/html")
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


def entry_document(event: Event, base_url: str, stylesheet: str | None = None) -> bytes:
    """A standalone Atom Entry Document (``application/atom+xml;type=entry``)."""
    return _prolog(stylesheet) + etree.tostring(entry_element(event, base_url), encoding="utf-8")


def _prolog(stylesheet: str | None) -> bytes:
    prolog = b'<?xml version="1.0" encoding="utf-8"?>\n'
    if stylesheet:
        href = escape(stylesheet, {'"': "&quot;"}).encode()
        prolog += b'<?xml-stylesheet type="text/xsl" href="' + href + b'"?>\n'
    return prolog


# -- feed documents ----------------------------------------------------------

FEED_TYPE = "application/atom+xml"
ENTRY_TYPE = "application/atom+xml;type=entry"
_FEED_CLOSE = b"</feed>"


@dataclass(frozen=True)
class Link:
    rel: str
    href: str


@dataclass(frozen=True)
class FeedMeta:
    """Everything about a feed page except its entries."""

    feed_id: str
    title: str
    updated: datetime
    links: tuple[Link, ...]
    stylesheet: str | None = None  # href of an XSLT stylesheet for browsers


def entry_bytes(event: Event, base_url: str) -> bytes:
    """One ``atom:entry`` element, serialised, to be placed inside a feed."""
    return etree.tostring(entry_element(event, base_url), encoding="utf-8")


def feed_document(meta: FeedMeta, entries: Iterable[bytes]) -> bytes:
    """An Atom Feed Document: metadata, then ``entries`` (from entry_bytes) in order.

    The entries are spliced in as bytes, so a page of cached entries costs a
    join, not a tree walk.
    """
    feed = etree.Element(_A + "feed", nsmap={None: ATOM_NS})
    _sub(feed, "id", meta.feed_id)
    _sub(feed, "title", meta.title, type="text")
    _sub(feed, "updated", format_timestamp(meta.updated))
    author = _sub(feed, "author")
    _sub(author, "name", "yagi-meter")
    _sub(feed, "generator", "yagi-meter")
    for link in meta.links:
        attrs = {"rel": link.rel, "href": link.href}
        if link.rel in ("self", "current", "next", "previous", "last"):
            attrs["type"] = FEED_TYPE
        _sub(feed, "link", **attrs)
    head = etree.tostring(feed, encoding="utf-8")
    # lxml writes an empty <feed .../> when there is nothing inside; there is.
    assert head.endswith(_FEED_CLOSE)
    return b"".join((_prolog(meta.stylesheet), head[: -len(_FEED_CLOSE)], *entries, _FEED_CLOSE))
