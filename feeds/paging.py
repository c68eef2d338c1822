"""Feed paging as Atom Hopper does it, on the ingest sequence.

A feed lists entries newest first.  Without a marker a request gets the head
page (the newest ``limit`` entries).  ``marker`` is an entry id
(``urn:uuid:<message_id>`` or the bare message_id) and ``direction`` says
which side of it: ``forward`` gives the ``limit`` entries ingested right after
the marker (newer), ``backward`` the ``limit`` entries right before it (older);
the marker itself is never included, so following links never doubles an
entry.  ``marker=last`` is the oldest page.  Links (RFC 5005 names, as Atom
Hopper uses them): ``current`` the head, ``self`` this page, ``previous``
newer entries (forward from this page's newest), ``next`` older entries
(backward from this page's oldest; absent on the oldest page), ``last`` the
oldest page, ``hub`` the WebSub hub.

A poller follows ``previous`` links forever: an empty or short forward page
links to itself or its newest entry, and sees every entry exactly once.

Markers are message ids.  Links write one as the entry id
(``urn:uuid:<message_id>``) when the message id is a canonical UUID, which
every oslo.messaging notification has, and bare otherwise: an entry whose
message id is not a UUID has a uuid5 as its atom:id (yagi_meter.atom), and
that cannot be turned back into the message id.  ``urn:uuid:<message_id>``
is taken for any message id, as earlier links wrote it.

Every link is canonical: the parameters in one order (_href), so the
``self`` link in the feed and in the Link header are one URL.  The feed id is
the page's URL without paging parameters: one id per feed and filter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest

from yagi_meter.atom import Link, is_canonical_uuid
from yagi_meter.store.pages import BACKWARD, FORWARD, HEAD, LAST, Page, PageQuery

ENTRY_ID_PREFIX = "urn:uuid:"
_PARAMS = ("limit", "marker", "direction", "start", "end", "event_type", "user_id", "format")
FORMATS = ("atom", "json")
# A user id as the notification model keeps one (notification.MAX_ID_LENGTH).
MAX_USER_ID_LENGTH = 255
MAX_MARKER_LENGTH = 300
# An event_type glob is matched in linear time whatever its stars (page.lua);
# the cap only keeps silly patterns out.
MAX_STARS = 8
_ASCII_NUMBER = re.compile("[0-9]{1,9}")


@dataclass(frozen=True)
class FeedRequest:
    """A feed request's validated parameters."""

    query: PageQuery
    start: str = ""  # as given, for links
    end: str = ""
    format: str = ""  # "json" when asked for by parameter: links keep it

    def filters(self) -> dict[str, str]:
        params = {
            "start": self.start,
            "end": self.end,
            "event_type": self.query.event_type,
            "user_id": self.query.user_id,
        }
        return {name: value for name, value in params.items() if value}


def parse_request(
    args: MultiDict[str, str], page_size: int, max_page_size: int, scan_limit: int
) -> FeedRequest:
    """Validate the query string; raise BadRequest with a one-line reason."""
    for name in args:
        if name not in _PARAMS:
            raise BadRequest(f"unknown parameter {name!r} (known: {', '.join(_PARAMS)})")
    limit = _limit(args.get("limit"), page_size, max_page_size)
    direction, marker = _position(args.get("marker", ""), args.get("direction", ""))
    start_text, end_text = args.get("start", ""), args.get("end", "")
    start = _instant("start", start_text)
    end = _instant("end", end_text)
    if start is not None and end is not None and start >= end:
        raise BadRequest("start must be before end")
    event_type = args.get("event_type", "").strip()
    if len(event_type) > 255:
        raise BadRequest("event_type is longer than 255 characters")
    if event_type.count("*") > MAX_STARS:
        raise BadRequest(f"event_type has more than {MAX_STARS} '*'")
    user_id = _user_id(args.get("user_id"))
    query = PageQuery(
        direction=direction,
        marker=marker,
        limit=limit,
        budget=scan_limit,
        start_ms=start,
        end_ms=end,
        event_type=event_type,
        user_id=user_id,
    )
    fmt = args.get("format", "")
    if fmt and fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
    return FeedRequest(query, start_text, end_text, fmt)


def _user_id(text: str | None) -> str:
    """The user_id filter: an exact id, as stored (no patterns)."""
    if text is None:
        return ""
    user_id = text.strip()
    if not user_id:
        raise BadRequest("user_id is empty (leave it out for every user)")
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise BadRequest(f"user_id is longer than {MAX_USER_ID_LENGTH} characters")
    if not user_id.isprintable():
        raise BadRequest("user_id has control characters")
    return user_id


def _limit(text: str | None, page_size: int, max_page_size: int) -> int:
    if text is None:
        return page_size
    # str.isdigit() and int() take any Unicode digit ("²", "١"): ASCII only.
    if not _ASCII_NUMBER.fullmatch(text):
        raise BadRequest(f"limit must be a whole number from 1 to {max_page_size}")
    limit = int(text)
    if not 1 <= limit <= max_page_size:
        raise BadRequest(f"limit must be from 1 to {max_page_size}, got {limit}")
    return limit


def _position(marker: str, direction: str) -> tuple[str, str]:
    marker = marker.strip()
    if direction not in ("", FORWARD, BACKWARD):
        raise BadRequest("direction must be forward or backward")
    if marker == "last":
        if direction == FORWARD:
            raise BadRequest("marker=last goes with direction=backward")
        return LAST, ""
    if not marker:
        if direction:
            raise BadRequest("direction needs a marker")
        return HEAD, ""
    if len(marker) > MAX_MARKER_LENGTH:
        raise BadRequest("marker is too long to be an entry id")
    if marker.startswith(ENTRY_ID_PREFIX):
        marker = marker[len(ENTRY_ID_PREFIX) :]
    return direction or FORWARD, marker


def _instant(name: str, text: str) -> int | None:
    """An ISO 8601 date or date-time as epoch ms; naive means UTC."""
    if not text:
        return None
    # A '+' of "+01:00" arrives as a space when the client did not escape it.
    text = re.sub(r" (\d\d:?\d\d)$", r"+\1", text.strip())
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name} is not an ISO 8601 date: {text[:60]!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def marker_text(message_id: str) -> str:
    """How links write the marker of the entry with ``message_id`` (see module doc)."""
    return ENTRY_ID_PREFIX + message_id if is_canonical_uuid(message_id) else message_id


def _href(url: str, request: FeedRequest, marker: str | None, direction: str | None) -> str:
    """The canonical URL of a page of this feed: marker, limit, direction, filters, format."""
    params = {}
    if marker is not None:
        params["marker"] = marker if marker == "last" else marker_text(marker)
    params["limit"] = str(request.query.limit)
    if direction:
        params["direction"] = direction
    params.update(request.filters())
    if request.format:
        params["format"] = request.format
    return f"{url}?{urlencode(params)}"


def self_href(url: str, request: FeedRequest) -> str:
    """The canonical URL of the requested page: its rel=self, in the feed and the Link header."""
    query = request.query
    if query.direction == HEAD:
        return _href(url, request, None, None)
    if query.direction == LAST:
        return _href(url, request, "last", BACKWARD)
    return _href(url, request, query.marker, query.direction)


def feed_id(url: str, request: FeedRequest) -> str:
    """The atom:id of the feed ``request`` pages through: one per feed and filter (RFC 4287 4.2.6)."""
    filters = request.filters()
    return f"{url}?{urlencode(filters)}" if filters else url


def feed_links(url: str, request: FeedRequest, page: Page, hub: str) -> tuple[Link, ...]:
    """self, current, previous, next, last and hub links of a page (see module doc)."""
    query = request.query

    def at(marker: str | None, direction: str | None) -> str:
        return _href(url, request, marker, direction)

    links = [Link("self", self_href(url, request)), Link("current", at(None, None))]
    ascending = query.direction in (FORWARD, LAST)
    newest = page.last_id if ascending else page.first_id
    oldest = page.first_id if ascending else page.last_id
    # previous: newer entries, from the newest examined (or the marker when none).
    if newest or query.marker:
        links.append(Link("previous", at(newest or query.marker, FORWARD)))
    # next: older entries, unless this page went down to the oldest.
    more_older = query.direction == FORWARD or not page.reached_end
    if query.direction != LAST and more_older and (oldest or query.marker):
        links.append(Link("next", at(oldest or query.marker, BACKWARD)))
    links.append(Link("last", at("last", BACKWARD)))
    links.append(Link("hub", hub))
    return tuple(links)
