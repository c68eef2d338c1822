"""The feed as a web page: the same XSLT the feed references, applied here.

Feeds carry ``<?xml-stylesheet href=".../static/atom.xsl"?>``; browsers that
still run XSLT render that themselves.  Current Chromium no longer does, so a
request that prefers text/html gets the transform's result from the server.
The notification in ``atom:content`` is Base64 (RFC 4287 4.1.3.3); for the
page it is decoded and indented first, so a person reads JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
from functools import cache
from importlib import resources

from lxml import etree

from yagi_meter.atom import ATOM_NS, CONTENT_TYPE

_CONTENT = f"{{{ATOM_NS}}}content"


@cache
def _transform() -> etree.XSLT:
    source = resources.files("feeds").joinpath("static/atom.xsl").read_bytes()
    return etree.XSLT(etree.fromstring(source))


def to_html(atom_document: bytes) -> bytes:
    """An Atom feed or entry document as an HTML page."""
    root = etree.fromstring(atom_document)
    for content in root.iter(_CONTENT):
        if content.get("type") == CONTENT_TYPE and content.text:
            content.text = readable_json(content.text)
    result = _transform()(root)
    return etree.tostring(result, method="html", encoding="utf-8", doctype="<!DOCTYPE html>")


def readable_json(base64_text: str) -> str:
    """Base64 JSON as indented JSON; as it was when it is not that."""
    try:
        value = json.loads(base64.b64decode(base64_text, validate=True))
    except (binascii.Error, ValueError):
        return base64_text
    return json.dumps(value, indent=2, ensure_ascii=False)
