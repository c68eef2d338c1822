"""The AtomPub boundary against the real archive server: statuses, keep-alive, our own errors."""

import threading

import pytest

from tests.integration.forwarding import free_port
from tests.servers.atomhopper import AtomHopper
from yagi_meter.errors import ArchiveError
from yagi_meter.forward.atompub import AtomPubClient, BasicAuth

pytestmark = pytest.mark.integration


@pytest.fixture
def archive():
    with AtomHopper() as server:
        yield server


ENTRY = b"""<?xml version='1.0' encoding='utf-8'?>
<entry xmlns="http://www.w3.org/2005/Atom"><id>urn:uuid:%d</id><title>t</title></entry>"""


def test_post_answers_201_with_location_then_409(archive):
    client = AtomPubClient()
    created = client.post(archive.url(), ENTRY % 1)
    assert (created.status, created.location) == (201, archive.url() + "/entries/urn%3Auuid%3A1")
    assert created.body == ""  # a success's body is not kept
    conflict = client.post(archive.url(), ENTRY % 1)
    assert (conflict.status, conflict.body) == (409, "<error>Conflict: entry already exists</error>")
    client.close()


def test_one_thread_keeps_one_connection_alive(archive):
    client = AtomPubClient()
    for number in range(20):
        assert client.post(archive.url(), ENTRY % number).status == 201
    assert len(archive.connections) == 1
    threads = [
        threading.Thread(target=client.post, args=(archive.url(), ENTRY % (100 + n))) for n in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(archive.connections) == 4  # a session per thread
    client.close()


def test_basic_auth_is_sent_and_a_401_is_tried_again_once(archive):
    seen = []
    archive.authorize = lambda headers: seen.append(headers.get("Authorization")) or False
    posted = AtomPubClient(BasicAuth("yagi", "pw")).post(archive.url(), ENTRY % 1)
    assert posted.status == 401
    assert seen == ["Basic eWFnaTpwdw=="] * 2


def test_refused_connection_and_timeout_become_archive_errors(archive):
    with pytest.raises(ArchiveError, match="Connection refused"):
        AtomPubClient(timeout=1).post(f"http://127.0.0.1:{free_port()}/feed", ENTRY % 1)
    archive.delay = 0.5
    with pytest.raises(ArchiveError, match="no answer .* within 0.2s"):
        AtomPubClient(timeout=0.2).post(archive.url(), ENTRY % 2)


def test_proxy_from_the_environment_is_used(archive, monkeypatch):
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", archive.url(""))  # the archive plays the proxy
    posted = AtomPubClient().post("http://archive.invalid/feed", ENTRY % 7)
    assert posted.status == 201
    assert archive.ids("http://archive.invalid/feed") == {"urn:uuid:7"}


def test_without_a_location_the_stored_entrys_self_link_is_kept(archive):
    archive.send_location = False
    entry = ENTRY.replace(b"<title>", b'<link rel="self" href="http://archive/entries/9"/><title>')
    assert AtomPubClient().post(archive.url(), entry % 9).location == "http://archive/entries/9"
    assert AtomPubClient().post(archive.url(), ENTRY % 10).location == "urn:uuid:10"
