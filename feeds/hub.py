"""``POST /hub``: the WebSub hub endpoint (subscribe, unsubscribe, publish).

The endpoint only checks the request and records an intent in Redis; the
push worker (``yagi-meter push``) verifies it with the subscriber, or sends
the denial, afterwards.  Following W3C WebSub 5.1.2, a malformed request or a
callback this hub will not call gets a 4xx with the reason as plain text,
and everything else a 202 that does not depend on validation: a topic that
names no feed, or one the requester may not read, is denied with a GET
``hub.mode=denied`` to the callback (WebSub 5.2), not with a 403.

Nothing a client sends is taken unbounded: the body is read up to
MAX_BODY_BYTES (413 beyond), callback and topic up to MAX_URL_BYTES (400).
When the client's address, the topic or the whole hub already has ``[hub]
max_pending_per_client`` / ``max_pending_per_topic`` / ``max_pending_total``
intents waiting for verification, the answer is a 429 with Retry-After.
Unsubscribing needs the same right as subscribing (read the topic); without
it the answer is a 403 and nothing is queued.

Register it with ``init_hub(app, config, store, topic_allowed)``; the
dependencies travel as blueprint options, so nothing is module-global.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from flask import Blueprint, Flask, Request, current_app, redirect, request
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from feeds.auth import TOKEN_HEADER
from yagi_meter.config import Config, HubSection
from yagi_meter.errors import CallbackRefused
from yagi_meter.store import Store
from yagi_meter.store.subscriptions import HubMode, Intent, Subscriptions
from yagi_meter.websub.callbacks import check_callback
from yagi_meter.websub.topics import parse_topic

# topic_allowed(topic_url, request) -> (allowed, reason when not)
TopicAllowed = Callable[[str, Request], tuple[bool, str]]
MAX_SECRET_BYTES = 199  # WebSub 5.1: "MUST be less than 200 bytes"
# Longest hub.callback and hub.topic taken; longer URLs are refused with a 400.
MAX_URL_BYTES = 2048
# Largest request body read: two URLs, a secret and a few short fields fit well within.
MAX_BODY_BYTES = 16384
# What a refused client is told to wait before asking again (pending intents are
# verified within seconds unless their callbacks are slow).
RETRY_AFTER_SECONDS = 60
EXTENSION = "yagi_meter.hub"

hub = Blueprint("hub", __name__)


@dataclass(frozen=True)
class HubSetup:
    config: Config
    subscriptions: Subscriptions
    topic_allowed: TopicAllowed


def anyone_may_read(topic_url: str, request: Request) -> tuple[bool, str]:
    """The topic check of ``[auth] mode = none``: every feed is readable."""
    return True, ""


class Reader(Protocol):
    """Who asks, as the feeds' auth sees it (feeds.auth.Principal)."""

    admin: bool

    def may_read_tenant(self, tenant_id: str | None) -> bool: ...


def readers_of(base_url: str, authenticate: Callable[[str | None], Reader]) -> TopicAllowed:
    """The topic check for the feeds' auth: a subscriber may follow exactly the
    feeds its token may read (global and event-type feeds: administrators)."""

    def topic_allowed(topic_url: str, request: Request) -> tuple[bool, str]:
        try:
            topic = parse_topic(topic_url, base_url)
        except ValueError as e:
            return False, f"unknown topic: {e}"
        try:
            caller = authenticate(request.headers.get(TOKEN_HEADER))
        except HTTPException as e:
            if e.code is not None and e.code >= 500:
                raise  # Keystone unreachable: a 503 to retry, not a denial for good
            return False, str(e.description or e.name)
        if topic.admin_only:
            return caller.admin, "this feed is for administrators"
        return caller.may_read_tenant(topic.tenant_id), "not your tenant"

    return topic_allowed


def init_hub(app: Flask, config: Config, store: Store, topic_allowed: TopicAllowed | None = None) -> None:
    """Register the hub on ``app``; ``topic_allowed`` says whether the requester may read a topic."""
    app.register_blueprint(hub, hub_config=config, hub_store=store, topic_allowed=topic_allowed)


@hub.record
def _setup(state: BlueprintSetupState) -> None:
    options = state.options
    store = options["hub_store"]
    state.app.extensions[EXTENSION] = HubSetup(
        options["hub_config"],
        store.subscriptions,
        options.get("topic_allowed") or anyone_may_read,
    )


class InvalidRequest(Exception):
    """A hub request this hub cannot take (400); the text is the reason given.

    Not werkzeug's BadRequest: this one never leaves the module, it becomes a plain-text answer.
    """


class NotYours(Exception):
    """An unsubscription from a requester who may not read the topic (403)."""


def _text(body: str, status: int) -> tuple[str, int, dict[str, str]]:
    return body + "\n", status, {"Content-Type": "text/plain; charset=utf-8"}


@hub.post("/hub")
def websub() -> ResponseReturnValue:
    setup: HubSetup = current_app.extensions[EXTENSION]
    # Read no more than a subscription request can need (413 beyond).
    request.max_content_length = MAX_BODY_BYTES
    request.max_form_parts = 32
    form = request.form
    mode = form.get("hub.mode", "")
    try:
        if mode == "publish":
            return _publish(setup, form.get("hub.url") or form.get("hub.topic") or "")
        if mode not in (HubMode.SUBSCRIBE, HubMode.UNSUBSCRIBE):
            raise InvalidRequest("hub.mode must be subscribe, unsubscribe or publish")
        external = setup.config.hub.external_url
        if external:  # WebSub 5.1.2: send the subscriber on to the hub we publish to
            return redirect(external, 307)
        intent = _intent(setup, HubMode(mode), form)
    except InvalidRequest as e:
        return _text(str(e), 400)
    except NotYours as e:
        return _text(str(e), 403)
    hub_config = setup.config.hub
    if not setup.subscriptions.request(
        intent,
        hub_config.max_pending_per_client,
        hub_config.max_pending_per_topic,
        hub_config.max_pending_total,
    ):
        text = (
            "too many requests from your address, to this topic or in all are waiting for verification; "
            f"retry in {RETRY_AFTER_SECONDS}s"
        )
        body, status, headers = _text(text, 429)
        return body, status, {**headers, "Retry-After": str(RETRY_AFTER_SECONDS)}
    return _text(f"{mode} request accepted; verification of intent follows", 202)


def _publish(setup: HubSetup, topic: str) -> ResponseReturnValue:
    # We know our own content; a ping only has to name one of our topics.
    try:
        parse_topic(topic, setup.config.base_url)
    except ValueError as e:
        raise InvalidRequest(f"hub.url: {e}") from None
    return _text("publish accepted", 202)


def _intent(setup: HubSetup, mode: HubMode, form: MultiDict[str, str]) -> Intent:
    hub_config = setup.config.hub
    callback = form.get("hub.callback", "")
    topic = form.get("hub.topic", "")
    if not callback:
        raise InvalidRequest("hub.callback is required")
    if not topic:
        raise InvalidRequest("hub.topic is required")
    for name, value in (("hub.callback", callback), ("hub.topic", topic)):
        if len(value.encode()) > MAX_URL_BYTES:
            raise InvalidRequest(f"{name} must be at most {MAX_URL_BYTES} bytes")
    try:
        check_callback(callback, hub_config.allowed_callback_networks)
    except CallbackRefused as e:
        raise InvalidRequest(f"hub.callback: {e}") from None
    secret = form.get("hub.secret", "")
    if len(secret.encode()) > MAX_SECRET_BYTES:
        raise InvalidRequest("hub.secret must be less than 200 bytes")
    lease = _lease_seconds(form.get("hub.lease_seconds"), hub_config)
    client = request.remote_addr or ""
    try:
        topic_path = parse_topic(topic, setup.config.base_url).path()
    except ValueError as e:
        if mode == HubMode.UNSUBSCRIBE:  # nothing to check: verification, then nothing to remove
            return Intent(HubMode.UNSUBSCRIBE, topic, "", callback, client=client)
        return Intent(HubMode.DENIED, topic, "", callback, reason=f"unknown topic: {e}", client=client)
    allowed, reason = setup.topic_allowed(topic, request)
    if not allowed:
        if mode == HubMode.UNSUBSCRIBE:  # only a reader of the topic may end a subscription to it
            raise NotYours(f"unsubscribe refused: {reason or 'not allowed'}")
        return Intent(
            HubMode.DENIED, topic, topic_path, callback, reason=reason or "not allowed", client=client
        )
    return Intent(mode, topic, topic_path, callback, secret, lease, client=client)


def _lease_seconds(value: str | None, hub_config: HubSection) -> int:
    if value is None or value == "":
        value = str(hub_config.lease_seconds_default)
    try:
        seconds = int(value)
    except ValueError:
        raise InvalidRequest("hub.lease_seconds must be a positive integer") from None
    if seconds <= 0:
        raise InvalidRequest("hub.lease_seconds must be a positive integer")
    return max(hub_config.lease_seconds_min, min(seconds, hub_config.lease_seconds_max))
