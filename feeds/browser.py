"""The feed as a web page: the same XSLT the feed references, applied here.

Feeds carry ``<?xml-stylesheet href=".../static/atom.xsl"?>``; browsers that
still run XSLT render that themselves.  Current Chromium no longer does, so a
request that prefers text/html gets the transform's result from the server.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from lxml import etree


@cache
def _transform() -> etree.XSLT:
    source = resources.files("feeds").joinpath("static/atom.xsl").read_bytes()
    return etree.XSLT(etree.fromstring(source))


def to_html(atom_document: bytes) -> bytes:
    """An Atom feed or entry document as an HTML page."""
    result = _transform()(etree.fromstring(atom_document))
    return etree.tostring(result, method="html", encoding="utf-8", doctype="<!DOCTYPE html>")
