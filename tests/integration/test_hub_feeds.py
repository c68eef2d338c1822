"""The hub inside the feed server: discovery from a feed, and the feeds' auth deciding topics."""

from __future__ import annotations

import threading

import pytest
import requests.utils
from lxml import etree

from feeds.app import create_app
from tests.conftest import TEST_REDIS_URL, make_config
from tests.feeds_support import ATOM_NS, assert_valid_atom, atom_ids, links, tenant_message
from tests.hub_helpers import ingest, wait_until
from tests.integration.conftest import TOKENS
from tests.servers.subscriber import Subscriber
from yagi_meter import atom
from yagi_meter.ingest.ingestor import Ingestor
from yagi_meter.store import open_store
from yagi_meter.websub.push import PushWorker

pytestmark = pytest.mark.integration


@pytest.fixture
def served(key_prefix):
    config = make_config(
        redis_url=TEST_REDIS_URL,
        redis_key_prefix=key_prefix,
        auth_mode="token",
        auth_tokens=TOKENS,
        hub_allowed_callback_networks="127.0.0.0/8",
        hub_poll_interval_ms="10",
    )
    store = open_store(config)
    worker = PushWorker(config, store)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    with Subscriber() as subscriber:
        yield config, store, create_app(config, store).test_client(), subscriber
    worker.stop()
    thread.join(10)


def discover(client, path, token):
    """The hub and topic a feed advertises in its Link header (WebSub 4)."""
    response = client.get(path, headers={"X-Auth-Token": token})
    assert response.status_code == 200, response.text
    links = {link["rel"]: link["url"] for link in requests.utils.parse_header_links(response.headers["Link"])}
    return links["hub"], links["self"]


def subscribe(client, callback, topic, token=None):
    headers = {"X-Auth-Token": token} if token else {}
    data = {"hub.mode": "subscribe", "hub.callback": callback, "hub.topic": topic}
    return client.post("/hub", data=data, headers=headers)


def test_a_tenant_subscribes_to_its_feed_as_discovered_and_receives_its_events(served):
    config, store, client, subscriber = served
    hub, topic = discover(client, "/tenants/alpha/events?limit=5", "alpha-token")
    assert hub == f"{config.base_url}/hub"
    assert subscribe(client, subscriber.url("/alpha"), topic, "alpha-token").status_code == 202
    subscriptions = store.subscriptions
    assert wait_until(lambda: len(subscriptions.ids()) == 1)
    [alpha] = ingest(store, config, 1, "alpha")
    ingest(store, config, 1, "beta")
    assert subscriber.wait_for(lambda: subscriber.posts)
    assert f"urn:uuid:{alpha}".encode() in subscriber.posts[0].body
    assert not subscriber.wait_for(lambda: len(subscriber.posts) > 1, timeout=0.5)


def test_a_topic_of_tenant_a_cannot_be_subscribed_with_a_tenant_b_token(served):
    config, store, client, subscriber = served
    alpha_feed = f"{config.base_url}/tenants/alpha/events"
    assert subscribe(client, subscriber.url("/by-beta"), alpha_feed, "beta-token").status_code == 202
    assert (
        subscribe(
            client, subscriber.url("/all-by-beta"), f"{config.base_url}/events", "beta-token"
        ).status_code
        == 202
    )
    assert subscribe(client, subscriber.url("/anonymous"), alpha_feed).status_code == 202
    assert subscriber.wait_for(lambda: len(subscriber.denials) == 3)
    reasons = {d["path"]: d["hub.reason"] for d in subscriber.denials}
    assert reasons["/by-beta"] == "not your tenant"
    assert reasons["/all-by-beta"] == "this feed is for administrators"
    assert "X-Auth-Token" in reasons["/anonymous"]
    assert not subscriber.verifications
    assert store.subscriptions.ids() == []
    ingest(store, config, 2, "alpha")
    assert not subscriber.wait_for(lambda: subscriber.attempts, timeout=0.5)


def test_an_administrator_may_follow_the_global_feed(served):
    config, store, client, subscriber = served
    assert (
        subscribe(client, subscriber.url("/admin"), f"{config.base_url}/events", "admin-token").status_code
        == 202
    )
    assert wait_until(lambda: len(store.subscriptions.ids()) == 1)
    ingest(store, config, 1, "beta")
    assert subscriber.wait_for(lambda: subscriber.posts)


def test_metrics_count_subscriptions_and_failed_deliveries(served):
    config, store, client, subscriber = served
    topic = f"{config.base_url}/tenants/alpha/events"
    assert subscribe(client, subscriber.url("/m"), topic, "alpha-token").status_code == 202
    assert wait_until(lambda: len(store.subscriptions.ids()) == 1)
    subscriber.status = 500
    ingest(store, config, 1, "alpha")
    assert wait_until(lambda: "yagi_push_failed_deliveries_total 0.0" not in client.get("/metrics").text)
    text = client.get("/metrics").text
    assert "yagi_push_subscriptions 1.0" in text
    assert "yagi_push_subscribers_due 1.0" in text


def test_only_a_reader_of_the_topic_may_unsubscribe_from_it(served):
    config, store, client, subscriber = served
    topic = f"{config.base_url}/tenants/alpha/events"
    assert subscribe(client, subscriber.url("/alpha"), topic, "alpha-token").status_code == 202
    subscriptions = store.subscriptions
    assert wait_until(lambda: len(subscriptions.ids()) == 1)
    for token in (None, "guess", "beta-token"):
        headers = {"X-Auth-Token": token} if token else {}
        data = {"hub.mode": "unsubscribe", "hub.callback": subscriber.url("/alpha"), "hub.topic": topic}
        response = client.post("/hub", data=data, headers=headers)
        assert response.status_code == 403, (token, response.text)
        assert "unsubscribe refused" in response.text
    assert not subscriber.wait_for(lambda: len(subscriber.verifications) > 1, timeout=0.5)
    assert len(subscriptions.ids()) == 1
    data = {"hub.mode": "unsubscribe", "hub.callback": subscriber.url("/alpha"), "hub.topic": topic}
    assert client.post("/hub", data=data, headers={"X-Auth-Token": "alpha-token"}).status_code == 202
    assert wait_until(lambda: subscriptions.ids() == [])


def test_deliveries_name_the_topic_as_subscribed_and_the_feed_id_as_the_feed_has_it(served):
    config, store, client, subscriber = served
    _, canonical = discover(client, "/tenants/alpha/events?limit=5", "alpha-token")
    # The Link header's self is the document's self: one canonical URL, parameters in one order.
    feed = client.get("/tenants/alpha/events?limit=5", headers={"X-Auth-Token": "alpha-token"})
    assert canonical == links(feed.data)["self"] == f"{config.base_url}/tenants/alpha/events?limit=5"
    bare = f"{config.base_url}/tenants/alpha/events"
    for path, topic in (("/canonical", canonical), ("/bare", bare)):
        assert subscribe(client, subscriber.url(path), topic, "alpha-token").status_code == 202
    subscriptions = store.subscriptions
    assert wait_until(lambda: len(subscriptions.ids()) == 2)
    message_id, message = tenant_message("alpha", message_id="req-7f1e-not-a-uuid")
    Ingestor(store, config).ingest([message])
    assert subscriber.wait_for(lambda: subscriber.posts_to("/canonical") and subscriber.posts_to("/bare"))
    for path, topic in (("/canonical", canonical), ("/bare", bare)):
        [post] = subscriber.posts_to(path)
        assert_valid_atom(post.body)
        assert links(post.body)["self"] == topic
        assert f'<{topic}>; rel="self"' in post.headers["Link"]
        assert etree.fromstring(post.body).findtext(f"{{{ATOM_NS}}}id") == bare == atom_feed_id(feed.data)
        assert atom_ids(post.body) == [atom.entry_uuid(message_id)]


def atom_feed_id(document: bytes) -> str:
    return etree.fromstring(document).findtext(f"{{{ATOM_NS}}}id")
