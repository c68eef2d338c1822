"""Tenant and resource ids holding "/" are reachable percent-encoded, through the test client
and through a real gunicorn, and the feed's own links reach them."""

from __future__ import annotations

import signal
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import ROOT
from tests.feeds_support import atom_ids, links, tenant_message
from tests.integration.test_feeds_servers import environment, free_port, wait_healthy

pytestmark = pytest.mark.integration


@pytest.fixture
def slashed(ingestor) -> dict[str, str]:
    ids = {}
    for name, tenant, resource in (
        ("a/b", "a/b", "vm-1"),
        ("a", "a", "vm-2"),
        ("object", "t/x", "acct/cont/obj"),
        ("resources", "x/resources/y", "vm-3"),
        ("café", "café/1", "vm-4"),
    ):
        message_id, message = tenant_message(tenant, 0, resource_id=resource)
        assert ingestor.ingest([message]).stored == 1
        ids[name] = message_id
    return ids


def test_an_encoded_slash_names_one_tenant_or_resource_in_the_test_client(client, slashed) -> None:
    feed = client.get("/tenants/a%2Fb/events")
    assert feed.status_code == 200 and atom_ids(feed.data) == [slashed["a/b"]]
    assert atom_ids(client.get("/tenants/a/events").data) == [slashed["a"]]
    assert client.get("/tenants/a/b/events").status_code == 404  # an unencoded "/" is no tenant
    resource = client.get("/tenants/t%2Fx/resources/acct%2Fcont%2Fobj/events")
    assert resource.status_code == 200 and atom_ids(resource.data) == [slashed["object"]]
    accented = client.get("/tenants/caf%C3%A9%2F1/events")
    assert accented.status_code == 200 and atom_ids(accented.data) == [slashed["café"]]
    tricky = client.get("/tenants/x%2Fresources%2Fy/events")
    assert tricky.status_code == 200 and atom_ids(tricky.data) == [slashed["resources"]]
    # The feed's own links lead back to it.
    for rel in ("self", "current", "last"):
        href = links(feed.data)[rel]
        assert "/tenants/a%2Fb/events" in href
        parts = urlsplit(href)
        assert atom_ids(client.get(parts.path + "?" + parts.query).data) == [slashed["a/b"]]


@pytest.mark.slow
def test_an_encoded_slash_names_one_tenant_or_resource_through_gunicorn(key_prefix, slashed) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "conf/gunicorn.conf.py", "feeds.wsgi:app"],
        cwd=ROOT,
        env=environment(key_prefix, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        feed = requests.get(url + "/tenants/a%2Fb/events", timeout=5)
        assert feed.status_code == 200 and atom_ids(feed.content) == [slashed["a/b"]]
        assert requests.get(url + "/tenants/a/b/events", timeout=5).status_code == 404
        resource = requests.get(url + "/tenants/t%2Fx/resources/acct%2Fcont%2Fobj/events", timeout=5)
        assert resource.status_code == 200 and atom_ids(resource.content) == [slashed["object"]]
        accented = requests.get(url + "/tenants/caf%C3%A9%2F1/events", timeout=5)
        assert accented.status_code == 200 and atom_ids(accented.content) == [slashed["café"]]
        self_href = links(feed.content)["self"]
        parts = urlsplit(self_href)
        again = requests.get(url + parts.path + "?" + parts.query, timeout=5)
        assert atom_ids(again.content) == [slashed["a/b"]]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
