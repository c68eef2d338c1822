"""Atom (RFC 4287) rendering of events: pure functions from events to bytes, no I/O."""

from __future__ import annotations

import base64
import re
import uuid
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
FEED_TYPE = "application/atom+xml"
ENTRY_TYPE = "application/atom+xml;type=entry"
CONTENT_TYPE = "application/json"  # of atom:content: the notification, Base64


# The namespace of the name-based (version 5) UUIDs that stand for message ids
# that are not UUIDs: uuid5(NAMESPACE_URL, "urn:yagi-meter:message_id"), written
# out because it is fixed for good (entry ids never change).
MESSAGE_ID_NAMESPACE = uuid.UUID("9e772dba-b1e1-5374-bd4e-69743dc626ed")


def is_canonical_uuid(text: str) -> bool:
    """True when ``text`` is a UUID written the canonical way (lowercase, 8-4-4-4-12)."""
    if len(text) != 36:
        return False
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def entry_uuid(message_id: str) -> str:
    """The UUID of an entry: its message id when that is a canonical UUID, else a uuid5 of it."""
    if is_canonical_uuid(message_id):
        return message_id
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, message_id))


def entry_id(event: Event) -> str:
    """The entry's atom:id: ``urn:uuid:`` and a real UUID (RFC 4287 4.2.6, RFC 4122 3)."""
    return f"urn:uuid:{entry_uuid(event.message_id)}"


def summary(event: Event) -> str:
    """The entry's one-line atom:summary: event type, tenant, resource."""
    parts = [event.event_type]
    if event.tenant_id:
        parts.append(f"tenant {event.tenant_id}")
    if event.resource_id:
        parts.append(f"resource {event.resource_id}")
    return " ".join(", ".join(parts).split())  # one line, whatever the ids hold


def entry_url(base_url: str, event: Event) -> str:
    return f"{base_url}/events/{quote(event.message_id, safe='')}"


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, _A + tag, attrs)
    if text is not None:
        element.text = text
    return element


# Characters XML 1.0 cannot carry.  The notification model keeps them out of
# every field (and the notification JSON is ASCII with \u escapes); this is
# the last line of defence, so a document is well-formed whatever comes in.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


_ASCII_ILLEGAL = bytes(c for c in range(32) if c not in (9, 10, 13))


def _legal(value: str) -> str:
    """``value`` with characters XML cannot carry replaced by U+FFFD."""
    if value.isascii():
        # Deleting bytes is C-speed; a regex walks a 2 KB notification 5x slower.
        data = value.encode()
        if len(data.translate(None, _ASCII_ILLEGAL)) == len(data):
            return value
    return _XML_ILLEGAL.sub("\ufffd", value)


def _text(value: str) -> str:
    value = _legal(value)
    # str.replace runs in C; a translate table would walk the text in Python.
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    return value


def _attr(value: str) -> str:
    value = _text(value)
    for char, escaped in (('"', "&quot;"), ("\t", "&#9;"), ("\n", "&#10;"), ("\r", "&#13;")):
        if char in value:
            value = value.replace(char, escaped)
    return value


def categories(event: Event) -> list[tuple[str, str]]:
    """(label, term) of an entry's categories; the scheme is CATEGORY_SCHEME + label."""
    pairs = (
        ("event_type", event.event_type),
        ("service", event.service),
        ("tenant", event.tenant_id),
        ("user", event.user_id),
        ("resource", event.resource_id),
        ("conflict_of", event.conflict_of),  # a later body of that message_id
    )
    return [(label, term) for label, term in pairs if term]


def entry_updated(event: Event) -> datetime:
    """An entry's atom:updated: when it entered the archive, never before it happened."""
    return max(event.timestamp, event.ingested_at or event.timestamp)


def entry_bytes(event: Event, base_url: str) -> bytes:
    """One ``atom:entry`` element, serialised: the one place an entry is rendered.

    Written as text rather than through a tree: a feed page is mostly
    entries, and this is several times faster than building lxml elements.
    """
    url = _attr(entry_url(base_url, event))
    # published: when it happened; updated: when it entered the archive (never
    # before published), so a feed's updated moves on even for late arrivals.
    published = format_timestamp(event.timestamp)
    updated = format_timestamp(entry_updated(event))
    parts = [
        f'<entry xmlns="{ATOM_NS}"><id>{_text(entry_id(event))}</id>',
        f'<title type="text">{_text(event.event_type)}</title>',
        f"<updated>{updated}</updated><published>{published}</published>",
        f"<author><name>{_text(event.publisher_id or event.service)}</name></author>",
        f'<link rel="self" href="{url}" type="{ENTRY_TYPE}"/>',
        # The same URL answers a browser with HTML: what feed readers link to.
        f'<link rel="alternate" href="{url}" type="text/html"/>',
    ]
    for scheme, term in categories(event):
        parts.append(f'<category term="{_attr(term)}" scheme="{CATEGORY_SCHEME}{scheme}" label="{scheme}"/>')
    # RFC 4287 4.1.3.3: a media type neither XML nor text/* is Base64, and
    # then 4.1.2 wants a summary.  notification_json is ASCII-only JSON.
    content = base64.b64encode(event.notification_json.encode()).decode()
    parts.append(f'<summary type="text">{_text(summary(event))}</summary>')
    parts.append(f'<content type="{CONTENT_TYPE}">{content}</content></entry>')
    return "".join(parts).encode()


def entry_element(event: Event, base_url: str, parent: etree._Element | None = None) -> etree._Element:
    """The ``atom:entry`` of one event as an lxml element, appended to ``parent`` when given."""
    entry = etree.fromstring(entry_bytes(event, base_url))
    if parent is not None:
        parent.append(entry)
    return entry


def entry_document(event: Event, base_url: str, stylesheet: str | None = None) -> bytes:
    """A standalone Atom Entry Document (``application/atom+xml;type=entry``)."""
    return _prolog(stylesheet) + entry_bytes(event, base_url)


def _prolog(stylesheet: str | None) -> bytes:
    prolog = b'<?xml version="1.0" encoding="utf-8"?>\n'
    if stylesheet:
        href = escape(stylesheet, {'"': "&quot;"}).encode()
        prolog += b'<?xml-stylesheet type="text/xsl" href="' + href + b'"?>\n'
    return prolog


# -- feed documents ----------------------------------------------------------

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
