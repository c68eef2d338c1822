"""The WebSub hub end to end: real subscriber servers on 127.0.0.1, real Redis, the push worker."""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
from urllib.parse import parse_qs

import pytest
import redis
from flask import Flask
from lxml import etree

from feeds.hub import init_hub
from tests.conftest import TEST_REDIS_URL, make_config
from tests.hub_helpers import BASE, SAMPLE_TENANT, ingest, subscribe, tenant_topic, wait_until
from tests.servers.subscriber import Subscriber
from yagi_meter import status
from yagi_meter.atom import ATOM_NS
from yagi_meter.store import open_store
from yagi_meter.store.keys import Keys
from yagi_meter.store.subscriptions import subscription_id
from yagi_meter.websub.push import PushWorker

pytestmark = pytest.mark.integration
NS = {"a": ATOM_NS}

HUB_SETTINGS = {
    "hub_allowed_callback_networks": "127.0.0.0/8",
    "hub_lease_seconds_min": "1",
    "hub_retry_min_seconds": "0.05",
    "hub_retry_max_seconds": "0.2",
    "hub_timeout_seconds": "2",
    "hub_poll_interval_ms": "10",
}


def hub_config(key_prefix, **settings):
    return make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix, **{**HUB_SETTINGS, **settings})


class Hub:
    """The hub endpoint (a minimal Flask app), a running push worker, the store."""

    def __init__(self, config, topic_allowed=None):
        self.config = config
        self.store = open_store(config)
        self.subscriptions = self.store.subscriptions
        # For looking at Redis directly: the keys stay the store's own business.
        self.redis = redis.Redis.from_url(TEST_REDIS_URL)
        self.keys = Keys(config.redis.key_prefix)
        app = Flask(__name__)
        init_hub(app, config, self.store, topic_allowed)
        self.client = app.test_client()
        self.worker = PushWorker(config, self.store)
        self._thread = threading.Thread(target=self.worker.run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.worker.stop()
        self._thread.join(10)

    def subscribe(self, subscriber, path, topic, **extra):
        response = subscribe(self.client, subscriber.url(path), topic, **extra)
        assert response.status_code == 202, response.text
        sid = subscription_id(topic.removeprefix(BASE), subscriber.url(path))
        assert wait_until(lambda: self.subscriptions.get(sid) is not None), "never verified"
        return sid

    def ingest(self, count=1, tenant=SAMPLE_TENANT):
        return ingest(self.store, self.config, count, tenant)


@pytest.fixture
def hub(key_prefix):
    running = Hub(hub_config(key_prefix)).start()
    yield running
    running.stop()


@pytest.fixture
def subscriber():
    with Subscriber() as server:
        yield server


def entry_ids(posts):
    return [
        e.findtext("a:id", namespaces=NS)
        for p in posts
        for e in etree.fromstring(p.body).findall("a:entry", NS)
    ]


def test_verified_subscriber_receives_new_entries_signed_with_its_secret(hub, subscriber):
    topic = tenant_topic()
    hub.subscribe(subscriber, "/cb", topic, secret="s3cret", lease_seconds="3600")
    [check] = subscriber.verifications
    assert check["hub.mode"] == "subscribe" and check["hub.topic"] == topic
    assert check["hub.lease_seconds"] == "3600" and check["hub.challenge"]

    ids = hub.ingest(3)
    assert subscriber.wait_for(lambda: len(entry_ids(subscriber.posts)) >= 3)
    assert entry_ids(subscriber.posts) == [f"urn:uuid:{i}" for i in ids]
    post = subscriber.posts[0]
    expected = hmac.new(b"s3cret", post.body, hashlib.sha256).hexdigest()
    assert post.headers["X-Hub-Signature"] == f"sha256={expected}"
    assert post.headers["Content-Type"] == "application/atom+xml"
    assert f'<{BASE}/hub>; rel="hub"' in post.headers["Link"]
    assert f'<{topic}>; rel="self"' in post.headers["Link"]
    feed = etree.fromstring(post.body)
    assert feed.tag == f"{{{ATOM_NS}}}feed"
    assert feed.find("a:link[@rel='self']", NS).get("href") == topic


def test_entries_go_only_to_subscribers_of_their_topics(hub, subscriber):
    hub.subscribe(subscriber, "/a", tenant_topic("tenant-a"))
    hub.subscribe(subscriber, "/all", f"{BASE}/events")
    hub.subscribe(subscriber, "/type", f"{BASE}/event_types/instance.create.end/events")
    a = hub.ingest(1, "tenant-a")
    b = hub.ingest(2, "tenant-b")
    assert subscriber.wait_for(lambda: len(entry_ids(subscriber.posts_to("/type"))) == 3)
    assert subscriber.wait_for(lambda: len(entry_ids(subscriber.posts_to("/all"))) == 3)
    # Each subscription has its own delivery queue: /a's post may come after the others'.
    assert subscriber.wait_for(lambda: entry_ids(subscriber.posts_to("/a")))
    assert entry_ids(subscriber.posts_to("/a")) == [f"urn:uuid:{a[0]}"]
    assert sorted(entry_ids(subscriber.posts_to("/all"))) == sorted(f"urn:uuid:{i}" for i in a + b)


def test_no_signature_without_a_secret_and_configurable_algorithm(key_prefix, subscriber):
    hub = Hub(hub_config(key_prefix, hub_signature_algorithm="sha512")).start()
    try:
        hub.subscribe(subscriber, "/plain", tenant_topic())
        hub.subscribe(subscriber, "/signed", tenant_topic(), secret="k")
        hub.ingest(1)
        assert subscriber.wait_for(lambda: subscriber.posts_to("/plain") and subscriber.posts_to("/signed"))
        assert "X-Hub-Signature" not in subscriber.posts_to("/plain")[0].headers
        signed = subscriber.posts_to("/signed")[0]
        assert signed.headers["X-Hub-Signature"] == (
            "sha512=" + hmac.new(b"k", signed.body, hashlib.sha512).hexdigest()
        )
    finally:
        hub.stop()


def test_failed_verification_stores_no_subscription(hub, subscriber):
    subscriber.refuse_verification = True
    assert subscribe(hub.client, subscriber.url("/cb"), tenant_topic()).status_code == 202
    assert subscriber.wait_for(lambda: subscriber.verifications)
    assert wait_until(lambda: not hub.redis.exists(hub.keys.hub_intents))
    assert hub.subscriptions.ids() == []


def test_unsubscribe_stops_delivery(hub, subscriber):
    hub.subscribe(subscriber, "/cb", tenant_topic())
    hub.ingest(1)
    assert subscriber.wait_for(lambda: len(subscriber.posts) == 1)
    assert subscribe(hub.client, subscriber.url("/cb"), tenant_topic(), mode="unsubscribe").status_code == 202
    assert wait_until(lambda: hub.subscriptions.ids() == [])
    assert subscriber.verifications[-1]["hub.mode"] == "unsubscribe"
    hub.ingest(2)
    assert not subscriber.wait_for(lambda: len(subscriber.posts) > 1, timeout=1)


def test_expired_lease_is_removed_and_never_delivered_to(hub, subscriber):
    hub.subscribe(subscriber, "/cb", tenant_topic(), lease_seconds="1")
    assert subscriber.verifications[0]["hub.lease_seconds"] == "1"
    assert wait_until(lambda: hub.subscriptions.ids() == [], timeout=8)
    hub.ingest(2)
    assert not subscriber.wait_for(lambda: subscriber.attempts, timeout=1)


def test_resubscription_renews_the_lease(hub, subscriber):
    sid = hub.subscribe(subscriber, "/cb", tenant_topic(), lease_seconds="2")
    first = hub.subscriptions.get(sid).expires_ms
    subscribe(hub.client, subscriber.url("/cb"), tenant_topic(), lease_seconds="3600", secret="new")
    assert wait_until(lambda: hub.subscriptions.get(sid).expires_ms > first + 3_000_000)
    assert hub.subscriptions.get(sid).secret == "new"
    assert hub.subscriptions.ids() == [sid]


def test_lease_is_bounded_by_configuration(key_prefix, subscriber):
    hub = Hub(hub_config(key_prefix, hub_lease_seconds_min="60", hub_lease_seconds_max="600")).start()
    try:
        hub.subscribe(subscriber, "/long", tenant_topic(), lease_seconds="999999")
        hub.subscribe(subscriber, "/short", tenant_topic(), lease_seconds="5")
        hub.subscribe(subscriber, "/default", tenant_topic())
        leases = {v["path"]: v["hub.lease_seconds"] for v in subscriber.verifications}
        assert leases == {"/long": "600", "/short": "60", "/default": "600"}
    finally:
        hub.stop()


def test_subscriber_down_then_up_gets_everything_it_missed_once(hub, subscriber):
    hub.subscribe(subscriber, "/cb", tenant_topic())
    before = hub.ingest(2)
    assert subscriber.wait_for(lambda: len(entry_ids(subscriber.posts)) == 2)
    subscriber.down()
    missed = hub.ingest(5)
    sid = subscription_id(tenant_topic().removeprefix(BASE), subscriber.url("/cb"))
    assert wait_until(lambda: (hub.subscriptions.get(sid).attempts or 0) >= 2)
    subscriber.up()
    after = hub.ingest(2)
    assert subscriber.wait_for(lambda: len(entry_ids(subscriber.posts)) >= 9)
    assert not subscriber.wait_for(lambda: len(entry_ids(subscriber.posts)) > 9, timeout=0.5)
    assert entry_ids(subscriber.posts) == [f"urn:uuid:{i}" for i in before + missed + after]
    assert hub.subscriptions.get(sid).attempts == 0
    assert status.hub_report(hub.store)["push_failed_deliveries"] >= 2


def test_a_slow_subscriber_does_not_hold_up_others(key_prefix):
    hub = Hub(hub_config(key_prefix, hub_timeout_seconds="10")).start()
    with Subscriber() as slow, Subscriber() as fast:
        slow.delay = 3
        hub.subscribe(slow, "/slow", tenant_topic())
        hub.subscribe(fast, "/fast", tenant_topic())
        hub.ingest(1)
        assert fast.wait_for(lambda: fast.posts, timeout=2.5)
        # The slow POST may begin a little after the fast one: it is under way, not answered.
        assert slow.wait_for(lambda: slow.attempts == 1, timeout=1)
        assert not slow.posts  # still answering
        assert slow.wait_for(lambda: slow.posts, timeout=5)
        assert slow.attempts == 1
    hub.stop()


def test_batch_that_keeps_failing_is_dropped_and_reported(key_prefix, subscriber):
    hub = Hub(hub_config(key_prefix, hub_max_delivery_attempts="3")).start()
    try:
        sid = hub.subscribe(subscriber, "/cb", tenant_topic())
        subscriber.status = 500
        hub.ingest(2)
        assert wait_until(lambda: status.hub_report(hub.store)["push_dropped"] == 2)
        report = status.hub_report(hub.store)
        assert report["push_failed_deliveries"] == 3
        assert report["push_delivery_backlog"] == 0
        assert subscriber.attempts == 3
        errors = hub.store.errors.recent(5)
        assert errors[0].component == "push" and "after 3 attempts" in errors[0].text
        # The subscription lives on until its lease ends, and gets what comes next.
        subscriber.status = 200
        later = hub.ingest(1)
        assert subscriber.wait_for(lambda: entry_ids(subscriber.posts) == [f"urn:uuid:{later[0]}"])
        assert hub.subscriptions.get(sid).dropped == 2
    finally:
        hub.stop()


def test_status_lists_subscribers_behind_with_their_failures(hub, subscriber):
    hub.subscribe(subscriber, "/cb", tenant_topic())
    subscriber.down()
    hub.ingest(3)
    assert wait_until(lambda: status.hub_report(hub.store)["push_failed_deliveries"] >= 1)
    report = status.collect(hub.store, hub.config)
    assert report["push_subscriptions"] == 1
    assert report["push_subscribers_behind"] == 1
    [lagging] = report["push_lagging"]
    assert lagging["callback"] == subscriber.url("/cb") and lagging["backlog"] == 3
    assert "subscriber http://127.0.0.1" in status.render(report)


def test_410_gone_ends_the_subscription(hub, subscriber):
    sid = hub.subscribe(subscriber, "/cb", tenant_topic())
    subscriber.status = 410
    hub.ingest(1)
    assert wait_until(lambda: hub.subscriptions.get(sid) is None)


def test_unknown_topic_is_accepted_then_denied(hub, subscriber):
    response = subscribe(hub.client, subscriber.url("/cb"), f"{BASE}/nothing/here")
    assert response.status_code == 202
    assert subscriber.wait_for(lambda: subscriber.denials)
    [denial] = subscriber.denials
    assert denial["hub.topic"] == f"{BASE}/nothing/here" and "unknown topic" in denial["hub.reason"]
    assert not subscriber.verifications and hub.subscriptions.ids() == []


def test_topic_the_requester_may_not_read_is_denied(key_prefix, subscriber):
    def only_tenant_a(topic_url, request):
        return ("tenant-a" in topic_url, "tenant-b may not read this feed")

    hub = Hub(hub_config(key_prefix), topic_allowed=only_tenant_a).start()
    try:
        assert subscribe(hub.client, subscriber.url("/b"), tenant_topic("tenant-b")).status_code == 202
        assert subscriber.wait_for(lambda: subscriber.denials)
        assert subscriber.denials[0]["hub.reason"] == "tenant-b may not read this feed"
        hub.subscribe(subscriber, "/a", tenant_topic("tenant-a"))
        assert hub.subscriptions.ids() == [subscription_id("/tenants/tenant-a/events", subscriber.url("/a"))]
    finally:
        hub.stop()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({}, "hub.mode must be"),
        ({"hub.mode": "subscribe", "hub.topic": f"{BASE}/events"}, "hub.callback is required"),
        ({"hub.mode": "subscribe", "hub.callback": "http://127.0.0.1/cb"}, "hub.topic is required"),
        ({"hub.callback": "ftp://127.0.0.1/cb"}, "http or https"),
        ({"hub.callback": "http://no-such-host.invalid/cb"}, "does not resolve"),
        ({"hub.lease_seconds": "soon"}, "positive integer"),
        ({"hub.lease_seconds": "0"}, "positive integer"),
        ({"hub.secret": "x" * 200}, "less than 200 bytes"),
        ({"hub.mode": "publish", "hub.url": "http://elsewhere/feed"}, "not a feed of this server"),
    ],
)
def test_malformed_requests_get_400_with_the_reason(hub, data, reason):
    form = {"hub.mode": "subscribe", "hub.callback": "http://127.0.0.1/cb", "hub.topic": f"{BASE}/events"}
    form.update(data)
    if not data:
        form.pop("hub.mode")
    if "hub.mode" in data and "hub.topic" not in data and data["hub.mode"] == "subscribe":
        form.pop("hub.topic")
    if "hub.mode" in data and "hub.callback" not in data and data["hub.mode"] == "subscribe":
        form.pop("hub.callback")
    response = hub.client.post("/hub", data=form)
    assert response.status_code == 400
    assert reason in response.text


def test_publish_of_our_own_topic_is_accepted(hub):
    response = hub.client.post("/hub", data={"hub.mode": "publish", "hub.url": tenant_topic()})
    assert response.status_code == 202


def test_private_callbacks_are_refused_unless_allowed(key_prefix, subscriber):
    config = make_config(redis_url=TEST_REDIS_URL, redis_key_prefix=key_prefix)
    app = Flask(__name__)
    init_hub(app, config, open_store(config))
    for callback in (subscriber.url("/cb"), "http://10.0.0.7/cb", "http://[::1]:8000/cb"):
        response = subscribe(app.test_client(), callback, f"{config.base_url}/events")
        assert response.status_code == 400
        assert "non-public address" in response.text


def test_callback_is_checked_again_at_delivery(key_prefix, subscriber):
    allowed = Hub(hub_config(key_prefix)).start()
    sid = allowed.subscribe(subscriber, "/cb", tenant_topic())
    allowed.stop()
    # The same Redis, now served by a worker that no longer allows 127.0.0.0/8.
    refusing = Hub(hub_config(key_prefix, hub_allowed_callback_networks="")).start()
    try:
        refusing.ingest(1)
        assert wait_until(lambda: refusing.subscriptions.get(sid).attempts >= 1)
        assert subscriber.attempts == 0
    finally:
        refusing.stop()


def test_external_hub_is_pinged_once_per_updated_topic(key_prefix):
    with Subscriber() as external:
        config = hub_config(key_prefix, hub_external_url=external.url("/hub"))
        hub = Hub(config)
        ids = hub.ingest(3, "tenant-x")  # one write: one fan-out batch
        hub.start()
        try:
            assert external.wait_for(lambda: len(external.posts) >= 4)
            assert not external.wait_for(lambda: len(external.posts) > 4, timeout=0.5)
            pings = [parse_qs(p.body.decode()) for p in external.posts]
            assert all(p["hub.mode"] == ["publish"] for p in pings)
            event = hub.store.events.get(ids[0])
            assert sorted(p["hub.url"][0] for p in pings) == sorted(
                [
                    f"{BASE}/events",
                    f"{BASE}/event_types/instance.create.end/events",
                    f"{BASE}/tenants/tenant-x/events",
                    f"{BASE}/tenants/tenant-x/resources/{event.resource_id}/events",
                ]
            )
            assert hub.redis.zcard(hub.keys.outbox("push")) == 0
        finally:
            hub.stop()


def test_failed_pings_to_the_external_hub_are_retried(key_prefix):
    with Subscriber() as external:
        external.status = 503
        hub = Hub(hub_config(key_prefix, hub_external_url=external.url("/hub"))).start()
        try:
            hub.ingest(1)
            assert external.wait_for(lambda: external.attempts >= 8)  # 4 topics, twice
            external.status = 202
            assert external.wait_for(lambda: len(external.posts) == 4)
            assert wait_until(lambda: hub.redis.zcard(hub.keys.outbox("push")) == 0)
        finally:
            hub.stop()


def test_with_an_external_hub_subscribers_are_sent_there(key_prefix):
    config = hub_config(key_prefix, hub_external_url="https://hub.example/")
    app = Flask(__name__)
    init_hub(app, config, open_store(config))
    response = subscribe(app.test_client(), "http://127.0.0.1/cb", tenant_topic())
    assert response.status_code == 307
    assert response.headers["Location"] == "https://hub.example/"


def test_a_subscriber_slower_than_the_timeout_is_retried(key_prefix, subscriber):
    hub = Hub(hub_config(key_prefix, hub_timeout_seconds="0.3")).start()
    try:
        sid = hub.subscribe(subscriber, "/cb", tenant_topic())
        subscriber.delay = 1
        [message_id] = hub.ingest(1)
        assert wait_until(lambda: hub.subscriptions.get(sid).attempts >= 1)
        subscriber.delay = 0
        assert wait_until(lambda: hub.subscriptions.backlog(sid) == 0)
        assert f"urn:uuid:{message_id}" in entry_ids(subscriber.posts)
    finally:
        hub.stop()


class Caller:
    def __init__(self, tenant_id=None, admin=False):
        self.tenant_id, self.admin = tenant_id, admin

    def may_read_tenant(self, tenant_id):
        return self.admin or tenant_id == self.tenant_id


def token_table(token):
    from werkzeug.exceptions import Unauthorized

    callers = {"a-token": Caller("tenant-a"), "b-token": Caller("tenant-b"), "admin": Caller(admin=True)}
    if token not in callers:
        raise Unauthorized("invalid X-Auth-Token")
    return callers[token]


def test_readers_of_lets_a_token_follow_exactly_the_feeds_it_may_read(key_prefix, subscriber):
    from feeds.hub import readers_of

    config = hub_config(key_prefix)
    hub = Hub(config, topic_allowed=readers_of(config.base_url, token_table)).start()
    try:

        def ask(path, topic, token):
            data = {"hub.mode": "subscribe", "hub.callback": subscriber.url(path), "hub.topic": topic}
            assert hub.client.post("/hub", data=data, headers={"X-Auth-Token": token}).status_code == 202

        ask("/a-by-b", tenant_topic("tenant-a"), "b-token")
        ask("/all-by-a", f"{BASE}/events", "a-token")
        ask("/nobody", tenant_topic("tenant-a"), "stolen")
        assert subscriber.wait_for(lambda: len(subscriber.denials) == 3)
        reasons = {d["path"]: d["hub.reason"] for d in subscriber.denials}
        assert reasons == {
            "/a-by-b": "not your tenant",
            "/all-by-a": "this feed is for administrators",
            "/nobody": "invalid X-Auth-Token",
        }
        ask("/a-by-a", tenant_topic("tenant-a"), "a-token")
        ask("/all-by-admin", f"{BASE}/events", "admin")
        assert wait_until(lambda: len(hub.subscriptions.ids()) == 2)
        assert {v["path"] for v in subscriber.verifications} == {"/a-by-a", "/all-by-admin"}
    finally:
        hub.stop()


def test_a_huge_answer_is_not_read_whole_and_the_next_delivery_still_works(hub, subscriber):
    hub.subscribe(subscriber, "/cb", tenant_topic())
    subscriber.reply_body = b"x" * 5_000_000
    first = hub.ingest(1)
    assert subscriber.wait_for(lambda: len(subscriber.posts) == 1)
    subscriber.reply_body = b"ok"
    second = hub.ingest(1)
    assert subscriber.wait_for(lambda: len(subscriber.posts) == 2)
    assert entry_ids(subscriber.posts) == [f"urn:uuid:{i}" for i in first + second]


def test_long_urls_and_large_bodies_are_refused_with_the_reason(hub):
    long_callback = "http://127.0.0.1/cb?" + "x" * 2048
    response = subscribe(hub.client, long_callback, tenant_topic())
    assert response.status_code == 400 and "hub.callback must be at most 2048 bytes" in response.text
    response = subscribe(hub.client, "http://127.0.0.1/cb", tenant_topic() + "?" + "y" * 2048)
    assert response.status_code == 400 and "hub.topic must be at most 2048 bytes" in response.text
    form = {"hub.mode": "subscribe", "hub.callback": "http://127.0.0.1/cb", "hub.topic": tenant_topic()}
    response = hub.client.post("/hub", data={**form, "padding": "z" * 1_000_000})
    assert response.status_code == 413
    assert hub.redis.zcard(hub.keys.hub_intents) == 0


def test_a_client_with_too_many_pending_requests_gets_429_others_do_not(key_prefix):
    tarpit = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    hub = Hub(hub_config(key_prefix, hub_max_pending_per_client="3")).start()
    try:
        port = tarpit.getsockname()[1]

        def ask(path, address):
            callback = f"http://127.0.0.1:{port}{path}"
            return hub.client.post(
                "/hub",
                data={"hub.mode": "subscribe", "hub.callback": callback, "hub.topic": tenant_topic()},
                environ_base={"REMOTE_ADDR": address},
            )

        assert [ask(f"/a{i}", "127.0.0.5").status_code for i in range(4)] == [202, 202, 202, 429]
        refused = ask("/a9", "127.0.0.5")
        assert "waiting for verification" in refused.text and refused.headers["Retry-After"] == "60"
        assert ask("/a0", "127.0.0.5").status_code == 202  # a replacement does not count twice
        assert ask("/b0", "127.0.0.6").status_code == 202
    finally:
        tarpit.close()
        hub.stop()


def test_requests_to_be_denied_do_not_use_up_the_quota_of_the_topic(key_prefix):
    def token_ok(topic_url, request):
        return request.headers.get("X-Auth-Token") == "ok", "bad token"

    tarpit = socket.create_server(("127.0.0.1", 0))  # holds the denials: accepts, never answers
    hub = Hub(hub_config(key_prefix, hub_max_pending_per_topic="2"), topic_allowed=token_ok).start()
    try:
        port = tarpit.getsockname()[1]

        def ask(path, address, token="none"):
            data = {"hub.mode": "subscribe", "hub.callback": f"http://127.0.0.1:{port}{path}"}
            data["hub.topic"] = tenant_topic()
            headers = {"X-Auth-Token": token}
            return hub.client.post("/hub", data=data, headers=headers, environ_base={"REMOTE_ADDR": address})

        assert [ask(f"/x{i}", f"127.0.2.{i}").status_code for i in range(4)] == [202, 202, 429, 429]
        assert [ask(f"/ok{i}", f"127.0.3.{i}", "ok").status_code for i in range(3)] == [202, 202, 429]
    finally:
        tarpit.close()
        hub.stop()
