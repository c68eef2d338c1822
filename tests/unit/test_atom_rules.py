"""The Atom checker (tests/atom_rules.py) rejects each violation it is there for.

Each case starts from a document the renderer makes, which passes, and breaks
one rule; a checker that stopped seeing a rule fails here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lxml import etree

from tests.atom_rules import A, assert_valid_atom, service_violations, violations
from yagi_meter import atom
from yagi_meter.notification import Event

BASE = "http://yagi.example"
WHEN = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def event(message_id: str = "0c3a5e7e-5b8a-4a1e-9f4e-1a2b3c4d5e01") -> Event:
    return Event(
        message_id=message_id,
        event_type="compute.instance.create.end",
        publisher_id="nova-compute:host1",
        priority="INFO",
        timestamp=WHEN,
        timestamp_raw="2026-11-24 10:00:00",
        service="nova",
        tenant_id="t1",
        user_id="u1",
        resource_id="r1",
        initiator_project_id=None,
        initiator_user_id=None,
        notification_json='{"event_type":"compute.instance.create.end","payload":{"x":1}}',
        seq=1,
        ingested_at=WHEN,
    )


def feed(*events: Event) -> bytes:
    meta = atom.FeedMeta(
        feed_id=f"{BASE}/events",
        title="all events",
        updated=WHEN,
        links=(atom.Link("self", f"{BASE}/events?limit=25"), atom.Link("hub", f"{BASE}/hub")),
    )
    return atom.feed_document(meta, [atom.entry_bytes(e, BASE) for e in events])


def entry() -> bytes:
    return atom.entry_document(event(), BASE)


def test_what_the_renderer_makes_passes():
    assert_valid_atom(feed(event(), event("req-42")))
    assert_valid_atom(entry())


def edited(document: bytes, edit) -> bytes:
    root = etree.fromstring(document)
    edit(root)
    return etree.tostring(root)


def first(root, path):
    return root.find(path.replace("a:", A))


def set_text(path, text):
    return lambda root: setattr(first(root, path), "text", text)


def remove(path):
    def edit(root):
        element = first(root, path)
        element.getparent().remove(element)

    return edit


def add_link(rel, href=f"{BASE}/x"):
    return lambda root: root.insert(0, etree.Element(A + "link", rel=rel, href=href))


def raw_json_content(root):
    content = first(root, "a:entry/a:content") if root.tag == A + "feed" else first(root, "a:content")
    content.text = '{"payload": {"x": 1}}'


CASES = {
    "schema: no id": (feed(event()), remove("a:id"), "schema"),
    "raw JSON content": (feed(event()), raw_json_content, "is not Base64"),
    "raw JSON in an entry document": (entry(), raw_json_content, "is not Base64"),
    "Base64 content, no summary": (feed(event()), remove("a:entry/a:summary"), "no summary"),
    "content src, no summary": (
        feed(event()),
        lambda root: (
            first(root, "a:entry/a:content").set("src", f"{BASE}/n.json"),
            setattr(first(root, "a:entry/a:content"), "text", None),
            remove("a:entry/a:summary")(root),
        ),
        "content with src and no summary",
    ),
    "text/plain content with markup": (
        entry(),
        lambda root: (
            first(root, "a:content").set("type", "text/plain"),
            setattr(first(root, "a:content"), "text", "a"),
            first(root, "a:content").append(etree.Element("b")),
        ),
        "has child elements",
    ),
    "id not an IRI": (feed(event()), set_text("a:id", "events page 1"), "not an absolute IRI"),
    "relative id": (feed(event()), set_text("a:id", "/events"), "not an absolute IRI"),
    "urn:uuid with a message id": (entry(), set_text("a:id", "urn:uuid:req-42"), "canonical UUID"),
    "urn:uuid upper case": (
        entry(),
        set_text("a:id", "urn:uuid:0C3A5E7E-5B8A-4A1E-9F4E-1A2B3C4D5E01"),
        "canonical UUID",
    ),
    "updated without zone": (feed(event()), set_text("a:updated", "2026-11-24T10:00:00"), "with a zone"),
    "published with a space": (
        entry(),
        set_text("a:published", "2026-11-24 10:00:00Z"),
        "schema",  # xsd:dateTime catches this one; a missing zone it lets through
    ),
    "published without zone": (entry(), set_text("a:published", "2026-11-24T10:00:00.5"), "with a zone"),
    "no self link": (
        feed(event()),
        lambda root: first(root, "a:link[@rel='self']").set("rel", "via"),
        "0 self",
    ),
    "two self links": (feed(event()), add_link("self"), "2 self links"),
    "two next links": (feed(event()), lambda root: (add_link("next")(root), add_link("next")(root)), "next"),
    "no author anywhere": (
        feed(event()),
        lambda root: (remove("a:author")(root), remove("a:entry/a:author")(root)),
        "no author",
    ),
    "entry document without author": (entry(), remove("a:author"), "no author"),
    "two alternates of one type": (
        entry(),
        lambda root: root.append(
            etree.Element(A + "link", rel="alternate", href=f"{BASE}/y", type="text/html")
        ),
        "more than one alternate",
    ),
    "no content and no alternate": (
        entry(),
        lambda root: (
            remove("a:content")(root),
            remove("a:link[@rel='alternate']")(root),
        ),
        "no alternate link",
    ),
    "href with a space": (
        entry(),
        lambda root: first(root, "a:link").set("href", "http://x/a b"),
        "IRI reference",
    ),
    "bad rel": (entry(), lambda root: first(root, "a:link").set("rel", "Self Link"), "registered name"),
    "relative category scheme": (
        entry(),
        lambda root: first(root, "a:category").set("scheme", "yagi-meter"),
        "category scheme",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_violation_is_rejected(name):
    document, edit, expected = CASES[name]
    broken = edited(document, edit)
    problems = violations(broken)
    assert any(expected in p for p in problems), problems
    with pytest.raises(AssertionError):
        assert_valid_atom(broken)


def test_xml_and_text_content_need_no_base64():
    def xml_content(root):
        content = first(root, "a:content")
        content.set("type", "application/xml")
        content.text = "<x/>"
        remove("a:summary")(root)

    assert violations(edited(entry(), xml_content)) == []


# -- service documents -------------------------------------------------------

SERVICE = b"""<?xml version="1.0" encoding="utf-8"?>
<service xmlns="http://www.w3.org/2007/app" xmlns:atom="http://www.w3.org/2005/Atom">
  <workspace><atom:title type="text">yagi-meter</atom:title>
    <collection href="http://yagi.example/events"><atom:title>all events</atom:title><accept/></collection>
  </workspace>
</service>"""


def test_a_good_service_document_passes():
    assert service_violations(SERVICE) == []


@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        (SERVICE.replace(b"2007/app", b"2007/apps"), "not app:service"),
        (SERVICE.replace(b'<atom:title type="text">yagi-meter</atom:title>', b""), "workspace 1 has 0"),
        (SERVICE.replace(b' href="http://yagi.example/events"', b""), "href None"),
        (SERVICE.replace(b"<atom:title>all events</atom:title>", b""), "no single atom:title"),
        (SERVICE.replace(b"<accept/>", b"<accept><x/></accept>"), "has child elements"),
        (SERVICE.replace(b"<workspace>", b"<collection/><workspace>"), "service holds"),
        (SERVICE.replace(b'events"><atom:title>', b'events"><feed/><atom:title>'), "holds {http"),
    ],
)
def test_each_service_rule_rejects_its_violation(broken, complaint):
    problems = service_violations(broken)
    assert any(complaint in p for p in problems), problems
