"""WebSub topics: the feed URLs an event appears in, and parsing a topic URL back.

Every feed URL is a topic.  Topics are compared by their canonical path (path
parts unquoted, then quoted again the one way ``path()`` does), so two
spellings of the same feed URL (paging parameters included) are the same
topic, and a change of ``[feeds] base_url`` does not orphan subscriptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from yagi_meter.notification import Event


class TopicKind(StrEnum):
    """Which feed a topic is."""

    ALL = "all"
    TENANT = "tenant"
    RESOURCE = "resource"
    EVENT_TYPE = "event_type"


# Query parameters that only page through a feed, or choose its representation
# (deliveries are Atom whatever was asked): a feed's rel=self may carry them, and
# the topic is the same feed.  Filters (event_type, start, end, user_id) are not.
PAGING = frozenset({"limit", "marker", "direction", "format"})


def _q(part: str) -> str:
    return quote(part, safe="")


@dataclass(frozen=True)
class Topic:
    """One feed: every event, one tenant's, one resource's or one event type's."""

    kind: TopicKind
    tenant_id: str | None = None
    resource_id: str | None = None
    event_type: str | None = None

    def path(self) -> str:
        """The canonical path of the feed, e.g. ``/tenants/t1/events``."""
        if self.kind == TopicKind.TENANT:
            return f"/tenants/{_q(self.tenant_id or '')}/events"
        if self.kind == TopicKind.RESOURCE:
            return f"/tenants/{_q(self.tenant_id or '')}/resources/{_q(self.resource_id or '')}/events"
        if self.kind == TopicKind.EVENT_TYPE:
            return f"/event_types/{_q(self.event_type or '')}/events"
        return "/events"

    def url(self, base_url: str) -> str:
        return base_url.rstrip("/") + self.path()

    @property
    def admin_only(self) -> bool:
        """The global and per-event-type feeds are for administrators (README, "Who may read what")."""
        return self.kind in (TopicKind.ALL, TopicKind.EVENT_TYPE)


def topics_of(event: Event) -> list[Topic]:
    """Every feed ``event`` is an entry of."""
    topics = [Topic(TopicKind.ALL), Topic(TopicKind.EVENT_TYPE, event_type=event.event_type)]
    for tenant_id in event.tenants:  # the owner, and a billed project
        topics.append(Topic(TopicKind.TENANT, tenant_id=tenant_id))
        if event.resource_id:
            topics.append(Topic(TopicKind.RESOURCE, tenant_id=tenant_id, resource_id=event.resource_id))
    return topics


def parse_topic(url: str, base_url: str) -> Topic:
    """The feed a topic URL names; ValueError with the reason when it names none."""
    base = urlsplit(base_url.rstrip("/"))
    parts = urlsplit(url)
    if (parts.scheme.lower(), parts.netloc.lower()) != (base.scheme.lower(), base.netloc.lower()):
        raise ValueError(f"not a feed of this server ({base_url})")
    filters = sorted({name for name, _ in parse_qsl(parts.query, keep_blank_values=True)} - PAGING)
    if filters or parts.fragment:
        raise ValueError(f"topics are whole feeds: no {', '.join(filters) or 'fragment'} parameters")
    path = parts.path
    if not path.startswith(base.path + "/"):
        raise ValueError(f"not a feed of this server ({base_url})")
    segments = [unquote(s) for s in path[len(base.path) + 1 :].split("/")]
    if any(not s for s in segments):
        raise ValueError("no feed at this path")
    match segments:
        case ["events"]:
            return Topic(TopicKind.ALL)
        case ["tenants", tenant, "events"]:
            return Topic(TopicKind.TENANT, tenant_id=tenant)
        case ["tenants", tenant, "resources", resource, "events"]:
            return Topic(TopicKind.RESOURCE, tenant_id=tenant, resource_id=resource)
        case ["event_types", event_type, "events"]:
            return Topic(TopicKind.EVENT_TYPE, event_type=event_type)
    raise ValueError("no feed at this path")
