"""The feeds as JSON (``Accept: application/json`` or ``format=json``): pure, no I/O.

The same page as the Atom one, in the spirit of Atom Hopper's JSON format:
``{"feed": {"id", "title", "updated", "link": [{"rel", "href"}], "entry": [...]}}``,
each entry with its Atom fields, the derived fields (``event``) and the
notification itself as JSON (not Base64: JSON carries JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from yagi_meter import atom
from yagi_meter.notification import Event, format_timestamp

CONTENT_TYPE = "application/json"


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def entry_json(event: Event, base_url: str, marker: str) -> bytes:
    """One entry as a JSON object; ``marker``: what a ``marker=`` parameter names it by."""
    url = atom.entry_url(base_url, event)
    head = {
        "id": atom.entry_id(event),
        "marker": marker,
        "title": event.event_type,
        "summary": atom.summary(event),
        "updated": format_timestamp(atom.entry_updated(event)),
        "published": format_timestamp(event.timestamp),
        "author": {"name": event.publisher_id or event.service},
        "link": [{"rel": "self", "href": url}],
        "category": [
            {"term": term, "scheme": atom.CATEGORY_SCHEME + label, "label": label}
            for label, term in atom.categories(event)
        ],
        "event": {**event.derived(), "seq": event.seq},
    }
    # The stored notification is JSON already: spliced in, not parsed and dumped again.
    return _dumps(head)[:-1] + b',"notification":' + event.notification_json.encode() + b"}"


def entry_document(entry: bytes) -> bytes:
    return b'{"entry":' + entry + b"}"


def feed_document(meta: atom.FeedMeta, entries: Iterable[bytes]) -> bytes:
    """A feed page: ``meta`` and ``entries`` (from entry_json), in order."""
    head = {
        "id": meta.feed_id,
        "title": meta.title,
        "updated": format_timestamp(meta.updated),
        "author": {"name": "yagi-meter"},
        "link": [{"rel": link.rel, "href": link.href} for link in meta.links],
    }
    return b'{"feed":' + _dumps(head)[:-1] + b',"entry":[' + b",".join(entries) + b"]}}"
