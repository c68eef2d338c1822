import hashlib
import hmac
import ipaddress
from datetime import UTC, datetime

import pytest
from lxml import etree

from tests.atom_rules import assert_valid_atom
from yagi_meter.atom import ATOM_NS, entry_bytes
from yagi_meter.errors import CallbackRefused
from yagi_meter.notification import format_timestamp, parse
from yagi_meter.websub.callbacks import check_callback, with_query
from yagi_meter.websub.delivery import RenderedEntry, delivery_document, entry_updated, signature
from yagi_meter.websub.topics import Topic, TopicKind, parse_topic, topics_of

BASE = "http://feeds.example:8080"


def event(tenant="t1"):
    from tests.hub_helpers import message

    _, m = message(tenant)
    return parse(m.body, received_at=datetime.now(UTC), rules=(), max_body_bytes=10**7)


def test_an_event_belongs_to_the_global_type_tenant_and_resource_feeds():
    e = event("tenant a/b")
    assert [t.path() for t in topics_of(e)] == [
        "/events",
        "/event_types/instance.create.end/events",
        "/tenants/tenant%20a%2Fb/events",
        f"/tenants/tenant%20a%2Fb/resources/{e.resource_id}/events",
    ]


@pytest.mark.parametrize(
    "topic",
    [
        Topic(TopicKind.ALL),
        Topic(TopicKind.TENANT, tenant_id="a:b/c d"),
        Topic(TopicKind.RESOURCE, tenant_id="t", resource_id="r@1"),
        Topic(TopicKind.EVENT_TYPE, event_type="compute.instance.create.end"),
    ],
)
def test_topic_urls_parse_back_to_their_topic(topic):
    assert parse_topic(topic.url(BASE), BASE) == topic


def test_other_spellings_of_a_topic_have_the_same_canonical_path():
    assert parse_topic(f"{BASE}/tenants/a%3Ab/events", BASE).path() == "/tenants/a%3Ab/events"
    assert parse_topic(f"{BASE}/tenants/a:b/events", BASE).path() == "/tenants/a%3Ab/events"
    assert parse_topic("HTTP://FEEDS.example:8080/events", BASE) == Topic(TopicKind.ALL)
    paged = f"{BASE}/tenants/t/events?limit=5&marker=urn:uuid:x&direction=forward"
    assert parse_topic(paged, BASE) == Topic(TopicKind.TENANT, tenant_id="t")
    # A JSON page's rel=self names the same feed (deliveries are Atom).
    assert parse_topic(f"{BASE}/events?limit=25&format=json", BASE) == Topic(TopicKind.ALL)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://elsewhere/events", "not a feed of this server"),
        (f"{BASE}/events?event_type=compute.*&limit=5", "no event_type parameters"),
        (f"{BASE}/tenants/t/events?start=2020-01-01", "no start parameters"),
        (f"{BASE}/events#x", "no fragment"),
        (f"{BASE}/tenants//events", "no feed"),
        (f"{BASE}/tenants/t/other", "no feed"),
        (f"{BASE}/hub", "no feed"),
    ],
)
def test_urls_that_name_no_feed_are_refused_with_a_reason(url, reason):
    with pytest.raises(ValueError, match=reason):
        parse_topic(url, BASE)


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha384", "sha512"])
def test_signature_is_the_hmac_of_the_body_named_by_its_algorithm(algorithm):
    expected = hmac.new(b"s3cret", b"body", getattr(hashlib, algorithm)).hexdigest()
    assert signature(algorithm, "s3cret", b"body") == f"{algorithm}={expected}"


def test_verification_parameters_are_appended_to_the_callbacks_own_query():
    assert with_query("http://h/cb?id=1", {"hub.mode": "subscribe"}) == "http://h/cb?id=1&hub.mode=subscribe"
    assert (
        with_query("http://h/cb", {"hub.topic": "http://x/a b"})
        == "http://h/cb?hub.topic=http%3A%2F%2Fx%2Fa+b"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/cb",
        "http://localhost:9/cb",
        "https://10.1.2.3/cb",
        "http://192.168.0.1/cb",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/cb",
        "http://0.0.0.0/cb",
        "http://100.64.0.1/cb",
    ],
)
def test_callbacks_to_non_public_addresses_are_refused(url):
    with pytest.raises(CallbackRefused, match="non-public address"):
        check_callback(url, ())


def test_allowed_networks_let_private_callbacks_through():
    check_callback("http://127.0.0.1:8000/cb", (ipaddress.ip_network("127.0.0.0/8"),))
    with pytest.raises(CallbackRefused):
        check_callback("http://10.0.0.1/cb", (ipaddress.ip_network("127.0.0.0/8"),))


@pytest.mark.parametrize("url", ["ftp://8.8.8.8/cb", "file:///etc/passwd", "8.8.8.8/cb", "http:///cb"])
def test_only_http_callbacks_with_a_host_are_taken(url):
    with pytest.raises(CallbackRefused):
        check_callback(url, ())


def test_public_address_callback_is_allowed():
    check_callback("https://8.8.8.8/cb", ())


# Callbacks that reach a forbidden address through a parser difference or an
# IPv6 form embedding IPv4.  check_callback never connects: these addresses are
# only strings here.
SMUGGLED = [
    "http://127.0.0.1:19998\\@8.8.8.8/x",  # urllib.parse reads 8.8.8.8, urllib3 127.0.0.1
    "http://8.8.8.8@127.0.0.1/x",
    "http://[::127.0.0.1]/x",  # IPv4-compatible
    "http://[::ffff:127.0.0.1]/x",  # IPv4-mapped
    "http://[::ffff:0:127.0.0.1]/x",  # IPv4-translated
    "http://[64:ff9b::7f00:1]/x",  # NAT64
    "http://[64:ff9b:1::7f00:1]/x",  # local-use NAT64
    "http://[2002:7f00:1::]/x",  # 6to4
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x",  # Teredo, client 127.0.0.1
    "http://8.8.8.8 /x",
    "http://8.8.8.8\t/x",
    "http://8.8.8.8/x\r\nHost: 127.0.0.1",
    "http://b\u00fccher.example/x",
    "http://[fe80::1%25eth0]/x",
    "http://8.8.8.8:99999/x",
]


@pytest.mark.parametrize("allowed", [(), (ipaddress.ip_network("10.0.0.0/8"),)], ids=["default", "10/8"])
@pytest.mark.parametrize("url", SMUGGLED)
def test_callbacks_smuggling_a_forbidden_address_are_refused(url, allowed):
    with pytest.raises(CallbackRefused):
        check_callback(url, allowed)


def test_an_embedded_ipv4_address_is_allowed_only_when_public():
    check_callback("http://[64:ff9b::808:808]/x", ())  # NAT64 of 8.8.8.8
    check_callback("http://[2002:808:808::1]/x", ())  # 6to4 of 8.8.8.8


def test_the_checked_address_is_the_one_to_connect_to_with_the_name_kept():
    calls = []

    def resolver(host, port):
        calls.append((host, port))
        return ["127.0.0.9", "127.0.0.10"]

    pinned = check_callback(
        "http://Hooks.Example:8080/cb?a=b", (ipaddress.ip_network("127.0.0.0/8"),), resolver
    )
    assert calls == [("hooks.example", 8080)]
    assert pinned.address == "127.0.0.9"
    assert (pinned.callback.host_header, pinned.callback.target) == ("hooks.example:8080", "/cb?a=b")


def test_every_resolved_address_must_be_allowed():
    with pytest.raises(CallbackRefused, match="127.0.0.1"):
        check_callback("http://hooks.example/cb", (), lambda host, port: ["8.8.8.8", "127.0.0.1"])


def test_a_delivery_is_a_feed_document_of_exactly_its_entries_with_hub_and_self():
    events = [event("t1"), event("t1")]
    entries = [RenderedEntry(i, entry_updated(e), entry_bytes(e, BASE)) for i, e in enumerate(events)]
    topic = f"{BASE}/tenants/t1/events?limit=25"  # as subscribed: the feed's own rel=self
    body = delivery_document(entries, f"{BASE}/tenants/t1/events", topic, "Events of t1", f"{BASE}/hub")
    assert_valid_atom(body)
    feed = etree.fromstring(body)
    ns = {"a": ATOM_NS}
    assert feed.findtext("a:id", namespaces=ns) == f"{BASE}/tenants/t1/events"
    assert [e.findtext("a:id", namespaces=ns) for e in feed.findall("a:entry", ns)] == [
        f"urn:uuid:{e.message_id}" for e in events
    ]
    links = {link.get("rel"): link.get("href") for link in feed.findall("a:link", ns)}
    assert links == {"self": topic, "hub": f"{BASE}/hub"}
    assert feed.findtext("a:updated", namespaces=ns) == format_timestamp(max(e.updated for e in entries))


def test_hub_options_are_checked_together():
    from tests.conftest import make_config
    from yagi_meter.errors import ConfigError

    with pytest.raises(ConfigError, match="lease_seconds_min"):
        make_config(hub_lease_seconds_min="100", hub_lease_seconds_max="10")
    with pytest.raises(ConfigError, match="signature_algorithm"):
        make_config(hub_signature_algorithm="md5")
    config = make_config()
    assert (config.hub.signature_algorithm, config.hub.lease_seconds_default) == ("sha256", 864000)
