"""Helpers for the feed tests: events from the real samples, re-owned per tenant."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

from lxml import etree

from tests.atom_rules import assert_valid_atom  # noqa: F401 (the one checker, re-exported)
from tests.conftest import as_sent, load_sample, sample_paths
from yagi_meter.ingest.ingestor import Message

SAMPLE_TENANT = "6f70656e737461636b20342065766572"
SAMPLE_INSTANCE = "178b0921-8f85-4257-88b6-2e743b5a975c"
ATOM_NS = "http://www.w3.org/2005/Atom"


def _tenant_samples() -> list[Path]:
    return [p for p in sample_paths() if SAMPLE_TENANT in p.read_text() and SAMPLE_INSTANCE in p.read_text()]


TENANT_SAMPLES = _tenant_samples()


def tenant_message(
    tenant_id: str,
    number: int = 0,
    resource_id: str = SAMPLE_INSTANCE,
    timestamp: str = "2017-07-06 16:58:55.301284",
    message_id: str | None = None,
) -> tuple[str, Message]:
    """(message_id, Message): the number-th tenant sample, owned by ``tenant_id``/``resource_id``."""
    path = TENANT_SAMPLES[number % len(TENANT_SAMPLES)]
    text = path.read_text().replace(SAMPLE_TENANT, tenant_id).replace(SAMPLE_INSTANCE, resource_id)
    message_id = message_id or str(uuid.uuid4())
    body = as_sent(json.loads(text), message_id=message_id, timestamp=timestamp)
    return message_id, Message(json.dumps(body).encode(), f"test:{path.name}")


def all_sample_messages() -> Iterator[Message]:
    for path in sample_paths():
        yield Message(json.dumps(as_sent(load_sample(path))).encode(), f"test:{path.name}")


def atom_ids(document: bytes) -> list[str]:
    """The message_ids of a feed's entries, in document order."""
    root = etree.fromstring(document)
    return [
        e.text.removeprefix("urn:uuid:") for e in root.iter(f"{{{ATOM_NS}}}id") if e.getparent() is not root
    ]


def links(document: bytes) -> dict[str, str]:
    root = etree.fromstring(document)
    return {link.get("rel"): link.get("href") for link in root.findall(f"{{{ATOM_NS}}}link")}
