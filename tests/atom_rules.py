"""Is a document valid Atom?  The RFC 4287 Appendix B RELAX NG schema, and the
normative rules of RFC 4287's text that the schema does not express.

Every test that checks a document the project produces (feed pages, entry
documents, WebSub deliveries, AtomPub posts) calls ``assert_valid_atom``;
``tests/unit/test_atom_rules.py`` proves that each rule rejects its violation.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid

from lxml import etree

from tests.conftest import ROOT

ATOM_NS = "http://www.w3.org/2005/Atom"
A = f"{{{ATOM_NS}}}"
SCHEMA = etree.RelaxNG(etree.parse(str(ROOT / "tests" / "schemas" / "atom.rng")))

# RFC 3339 date-time, upper-case T and Z, a zone required (RFC 4287 3.3).
_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
# An absolute IRI (RFC 3987): a scheme, a colon, and no character an IRI cannot hold.
_ABSOLUTE_IRI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"{}|\\^`\x00-\x1f\x7f]*")
_IRI_REFERENCE = re.compile(r"[^\s<>\"{}|\\^`\x00-\x1f\x7f]*")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")
# Link relations of RFC 4287, RFC 5005 and WebSub that may appear at most once on a feed.
_AT_MOST_ONCE = ("self", "current", "next", "previous", "first", "last", "hub")


def violations(document: bytes) -> list[str]:
    """Every way ``document`` breaks RFC 4287 (schema first), as readable lines; [] when none."""
    root = etree.fromstring(document)
    if not SCHEMA.validate(root):
        return [f"schema: {error.message} (line {error.line})" for error in SCHEMA.error_log]
    problems: list[str] = []
    if root.tag == A + "feed":
        problems += _feed_rules(root)
        feed_has_author = root.find(A + "author") is not None
        for number, entry in enumerate(root.findall(A + "entry"), 1):
            problems += [f"entry {number}: {p}" for p in _entry_rules(entry, feed_has_author)]
    else:
        problems += _entry_rules(root, feed_has_author=False)
    problems += _common_rules(root)
    return problems


def assert_valid_atom(document: bytes) -> None:
    """Fail with every violation when ``document`` is not valid Atom (schema and text)."""
    problems = violations(document)
    assert not problems, "not valid Atom:\n" + "\n".join(problems)


def _feed_rules(feed: etree._Element) -> list[str]:
    problems = []
    links = feed.findall(A + "link")
    selfs = [link for link in links if link.get("rel") == "self"]
    if len(selfs) != 1:
        problems.append(f"feed has {len(selfs)} self links, not exactly one")
    for rel in _AT_MOST_ONCE[1:]:
        if sum(1 for link in links if link.get("rel") == rel) > 1:
            problems.append(f"feed has more than one {rel} link")
    problems += _alternates(feed)
    return problems


def _entry_rules(entry: etree._Element, feed_has_author: bool) -> list[str]:
    problems = []
    source = entry.find(A + "source")
    if (
        entry.find(A + "author") is None
        and not feed_has_author
        and (source is None or source.find(A + "author") is None)
    ):
        problems.append("entry has no author, nor has its feed or source (4.1.1, 4.1.2)")
    content = entry.find(A + "content")
    has_summary = entry.find(A + "summary") is not None
    if content is None:
        if not any(link.get("rel", "alternate") == "alternate" for link in entry.findall(A + "link")):
            problems.append("entry without content has no alternate link (4.1.2)")
    else:
        kind = content.get("type", "text")
        if content.get("src") is not None:
            if not has_summary:
                problems.append("content with src and no summary (4.1.2)")
        elif _is_base64_type(kind):
            text = content.text or ""
            if len(content) or not _BASE64.fullmatch(text) or not _decodes(text):
                problems.append(f"content of type {kind} is not Base64 (4.1.3.3)")
            if not has_summary:
                problems.append(f"content of type {kind} (Base64) and no summary (4.1.2)")
        elif kind in ("text", "html") or kind.lower().startswith("text/"):
            if len(content):
                problems.append(f"content of type {kind} has child elements (4.1.3.3)")
    problems += _alternates(entry)
    return problems


def _is_base64_type(kind: str) -> bool:
    """A media type that is neither text/* nor XML (RFC 4287 4.1.3.3 item 5)."""
    if kind in ("text", "html", "xhtml"):
        return False
    media = kind.split(";")[0].strip().lower()
    return not (media.startswith("text/") or media.endswith("+xml") or media.endswith("/xml"))


def _decodes(text: str) -> bool:
    try:
        base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _alternates(element: etree._Element) -> list[str]:
    """At most one alternate link per type and hreflang (4.1.1, 4.1.2)."""
    seen = set()
    for link in element.findall(A + "link"):
        if link.get("rel", "alternate") == "alternate":
            key = (link.get("type"), link.get("hreflang"))
            if key in seen:
                return [f"more than one alternate link of type {key[0]} and hreflang {key[1]}"]
            seen.add(key)
    return []


def _common_rules(root: etree._Element) -> list[str]:
    problems = []
    for element in root.iter(A + "id"):
        problems += _id_problems((element.text or "").strip())
    for name in ("updated", "published"):
        for element in root.iter(A + name):
            if not _DATE.fullmatch(element.text or ""):
                problems.append(f"{name} {element.text!r} is not an RFC 3339 date-time with a zone (3.3)")
    for link in root.iter(A + "link"):
        href = link.get("href", "")
        if not _IRI_REFERENCE.fullmatch(href):
            problems.append(f"link href {href!r} is not an IRI reference (4.2.7.1)")
        rel = link.get("rel", "alternate")
        if ":" not in rel and not re.fullmatch(r"[a-z0-9.-]+", rel):
            problems.append(f"link rel {rel!r} is neither a registered name nor an IRI (4.2.7.2)")
    for category in root.iter(A + "category"):
        scheme = category.get("scheme")
        if scheme is not None and not _ABSOLUTE_IRI.fullmatch(scheme):
            problems.append(f"category scheme {scheme!r} is not an IRI (4.2.2.2)")
    return problems


def _id_problems(text: str) -> list[str]:
    """atom:id is an absolute IRI (4.2.6); a urn:uuid one holds a canonical UUID (RFC 4122 3)."""
    if not _ABSOLUTE_IRI.fullmatch(text):
        return [f"id {text!r} is not an absolute IRI (4.2.6)"]
    if text.lower().startswith("urn:uuid:"):
        value = text[len("urn:uuid:") :]
        try:
            canonical = str(uuid.UUID(value)) == value
        except ValueError:
            canonical = False
        if not canonical:
            return [f"id {text!r} does not hold a canonical UUID (RFC 4122)"]
    return []


# -- AtomPub service documents (RFC 5023 section 8) ---------------------------

APP_NS = "http://www.w3.org/2007/app"
P = f"{{{APP_NS}}}"


def service_violations(document: bytes) -> list[str]:
    """Every way ``document`` breaks RFC 5023 section 8 (its Appendix B schema's rules
    for service, workspace, collection, accept and categories), as readable lines."""
    root = etree.fromstring(document)
    if root.tag != P + "service":
        return [f"root is {root.tag}, not app:service in {APP_NS} (8.3.1)"]
    problems: list[str] = []
    workspaces = root.findall(P + "workspace")
    if not workspaces:
        problems.append("service has no app:workspace (8.3.1)")
    for child in root:
        if child.tag.startswith(P) and child.tag != P + "workspace":
            problems.append(f"service holds {child.tag}, which RFC 5023 does not put there (8.3.1)")
    for number, workspace in enumerate(workspaces, 1):
        titles = workspace.findall(A + "title")
        if len(titles) != 1 or not (titles[0].text or "").strip():
            problems.append(f"workspace {number} has {len(titles)} atom:title, not exactly one (8.3.2.1)")
        for collection in workspace.findall(P + "collection"):
            href = collection.get("href")
            if href is None or not _IRI_REFERENCE.fullmatch(href):
                problems.append(f"collection href {href!r} is not an IRI reference (8.3.3)")
            if len(collection.findall(A + "title")) != 1:
                problems.append(f"collection {href} has no single atom:title (8.3.3)")
            for accept in collection.findall(P + "accept"):
                if len(accept):
                    problems.append(f"app:accept of {href} has child elements (8.3.4)")
            for child in collection:
                known = (P + "accept", P + "categories", A + "title")
                if child.tag.startswith(P) and child.tag not in known:
                    problems.append(f"collection {href} holds {child.tag} (8.3.3)")
    return problems


def assert_valid_service(document: bytes) -> None:
    problems = service_violations(document)
    assert not problems, "not a valid AtomPub service document:\n" + "\n".join(problems)
