"""Parse and normalise one notification into an ``Event``.

Accepts the legacy JSON body, the oslo.messaging 2.0 envelope
(``{"oslo.version": "2.0", "oslo.message": "<json>"}``) and versioned payloads
(``nova_object.data``).  Anything that cannot become an event raises
``BadNotification`` whose text is the quarantine reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from yagi_meter.errors import BadNotification
from yagi_meter.ownership import Billing, MappingRule, find_owner

MAX_ID_LENGTH = 255
# Characters XML 1.0 cannot carry; an identifying field holding one cannot be
# indexed or rendered, so the message is quarantined.  Anywhere else in the
# payload they are harmless: the body is stored as ASCII-escaped JSON.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
# msgspec reads and writes JSON several times faster than the json module, but
# it reads only strict JSON (no NaN, Infinity or lone surrogates) and writes
# UTF-8: the json module takes over for those rare messages and for stored
# text that would not be ASCII.
_DECODER = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder(order="sorted")
_ASCII_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
# Keys holding credentials (any case); removed before anything is stored or served.
_SECRET_SUFFIXES = ("auth_token", "auth_token_info", "password", "service_token", "secret")
# A secret key's name as it ends in lower-cased JSON text.
_SECRET_NEEDLES = tuple(suffix + '"' for suffix in _SECRET_SUFFIXES)
_MISSING = object()


@dataclass(frozen=True)
class Event:
    """One stored notification: the original (credentials removed) plus derived fields."""

    message_id: str
    event_type: str
    publisher_id: str
    priority: str
    timestamp: datetime  # aware, UTC
    timestamp_raw: str
    service: str
    tenant_id: str | None
    user_id: str | None
    resource_id: str | None
    initiator_project_id: str | None
    initiator_user_id: str | None
    notification_json: str  # canonical, ASCII-only JSON of the notification
    seq: int | None = None  # ingest sequence, set by the store
    ingested_at: datetime | None = None
    billed_tenant_id: str | None = None  # ownership.Billing
    conflict_of: str | None = None  # a later body of this message_id, kept under its own id (conflict_copy)

    @property
    def notification(self) -> dict[str, Any]:
        return json.loads(self.notification_json)

    @property
    def digest(self) -> str:
        """Short hash of the body, to tell a redelivery from a reused message_id."""
        return hashlib.blake2b(self.notification_json.encode(), digest_size=8).hexdigest()

    def derived(self) -> dict[str, Any]:
        """The derived fields as JSON-ready values (billed_tenant_id only when there is one)."""
        derived = {
            "message_id": self.message_id,
            "event_type": self.event_type,
            "publisher_id": self.publisher_id,
            "priority": self.priority,
            "timestamp": format_timestamp(self.timestamp),
            "timestamp_raw": self.timestamp_raw,
            "service": self.service,
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "resource_id": self.resource_id,
            "initiator_project_id": self.initiator_project_id,
            "initiator_user_id": self.initiator_user_id,
        }
        if self.billed_tenant_id:
            derived["billed_tenant_id"] = self.billed_tenant_id
        if self.conflict_of:
            derived["conflict_of"] = self.conflict_of
        return derived

    @property
    def tenants(self) -> tuple[str, ...]:
        """The tenants whose feeds hold this event: the owner, and the billed project."""
        return tuple(t for t in (self.tenant_id, self.billed_tenant_id) if t)


# uuid5 namespace of the ids given to conflicting bodies (conflict_copy); never change it.
CONFLICT_NAMESPACE = uuid.UUID("5b0c2f5e-8a1d-4f43-9a57-2d6c1e0f7a31")


def conflict_copy(event: Event) -> Event:
    """``event``, whose message_id is already stored with another body, under an id of its own.

    The id is ``uuid5(CONFLICT_NAMESPACE, "<message_id>\\n<digest>")``: the same body
    arriving again gets the same id, so it is deduplicated like any redelivery.
    The notification itself is unchanged (it still names the reused message_id);
    ``conflict_of`` links the copy to the event first stored under that id.
    """
    copy_id = str(uuid.uuid5(CONFLICT_NAMESPACE, f"{event.message_id}\n{event.digest}"))
    return dataclasses.replace(event, message_id=copy_id, conflict_of=event.message_id)


def parse(
    body: bytes,
    *,
    received_at: datetime,
    rules: tuple[MappingRule, ...] = (),
    max_body_bytes: int | None = None,
    billing: Billing | None = None,
) -> Event:
    """Turn a message body into an Event, or raise BadNotification with the reason.

    ``received_at`` stands in for a missing or empty timestamp; ``billing``:
    which projects' metadata may name a billed project, and under which key.
    """
    if max_body_bytes is not None and len(body) > max_body_bytes:
        raise BadNotification(f"body too large: {len(body)} bytes > max_body_bytes {max_body_bytes}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadNotification(f"not UTF-8: {e.reason} at byte {e.start}") from None
    message, strict = _load_object(text, "body")
    if "oslo.message" in message:
        inner = message["oslo.message"]
        if not isinstance(inner, str):
            raise BadNotification("oslo.message is not a JSON string")
        text = inner
        message, strict = _load_object(inner, "oslo.message")
    message = _without_secrets(message, text)
    return _to_event(message, canonical_json(message, strict), received_at, rules, billing)


def _load_object(text: str, what: str) -> tuple[dict[str, Any], bool]:
    """The JSON object in ``text``, and whether it is strict JSON."""
    try:
        value, strict = _DECODER.decode(text), True
    except msgspec.DecodeError:
        try:
            value, strict = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float), False
        except ValueError as e:
            raise BadNotification(f"{what} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise BadNotification(f"{what} is not a JSON object")
    return value, strict


def _no_constant(name: str) -> float:
    # json.loads takes NaN and Infinity, which no JSON reader of ours would.
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: Python makes it inf, which is no JSON
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def canonical_json(message: dict[str, Any], strict: bool = True) -> str:
    """Sorted keys, no spaces, ASCII only: the same text for the same content.

    ``strict``: ``message`` was read from strict JSON.  Otherwise it may hold
    lone surrogates, which only the json module writes (as ``\\u`` escapes).
    """
    if strict:
        text = _ENCODER.encode(message)
        if text.isascii():
            return text.decode()
    return _ASCII_ENCODER.encode(message)


def _to_event(
    message: dict[str, Any],
    notification_json: str,
    received_at: datetime,
    rules: tuple[MappingRule, ...],
    billing: Billing | None = None,
) -> Event:
    message_id = _required_id(message, "message_id")
    event_type = _required_id(message, "event_type")
    publisher_id = _optional_id(message, "publisher_id") or ""
    raw_timestamp = message.get("timestamp")
    raw_timestamp = "" if raw_timestamp is None else str(raw_timestamp)
    timestamp = parse_timestamp(raw_timestamp) if raw_timestamp.strip() else received_at
    owner = find_owner(event_type, publisher_id, message, rules, billing)
    ids = (
        "tenant_id",
        "user_id",
        "resource_id",
        "initiator_project_id",
        "initiator_user_id",
        "billed_tenant_id",
    )
    for field in ids:
        _check_id(field, getattr(owner, field))
    priority = str(message.get("priority") or "INFO").upper()
    _check_id("priority", priority)
    return Event(
        message_id=message_id,
        event_type=event_type,
        publisher_id=publisher_id,
        priority=priority,
        timestamp=timestamp,
        timestamp_raw=raw_timestamp,
        service=owner.service,
        tenant_id=owner.tenant_id,
        user_id=owner.user_id,
        resource_id=owner.resource_id,
        initiator_project_id=owner.initiator_project_id,
        initiator_user_id=owner.initiator_user_id,
        notification_json=notification_json,
        billed_tenant_id=owner.billed_tenant_id,
    )


def _required_id(message: dict[str, Any], field: str) -> str:
    value = _optional_id(message, field)
    if not value:
        raise BadNotification(f"missing {field}")
    return value


def _optional_id(message: dict[str, Any], field: str) -> str | None:
    value = message.get(field)
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise BadNotification(f"{field} is not a string")
    value = str(value).strip()
    _check_id(field, value)
    return value


def _check_id(field: str, value: str | None) -> None:
    if value is None:
        return
    if len(value) > MAX_ID_LENGTH:
        raise BadNotification(f"{field} longer than {MAX_ID_LENGTH} characters")
    if not value.isprintable() and _XML_ILLEGAL.search(value):  # the first test is the faster
        raise BadNotification(f"{field} has characters XML cannot carry: {value!r}")


def parse_timestamp(raw: str) -> datetime:
    """Parse the timestamp forms OpenStack sends; naive means UTC; result is aware UTC."""
    text = raw.strip()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadNotification(f"timestamp is not a date: {raw!r}") from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00
        raise BadNotification(f"timestamp out of range: {raw!r}") from None


def format_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a Z: 2017-07-06T16:58:55.301284Z."""
    # isoformat() is twice as fast as strftime(); in UTC it always ends "+00:00".
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _without_secrets(message: dict[str, Any], text: str) -> dict[str, Any]:
    """``message``, just parsed from ``text``, without credential keys at any depth.

    Every oslo.messaging notification has ``_context_auth_token`` at the top,
    and walking the whole message to find it would cost more than parsing it.
    So find each name in the text that ends like a secret key and drop it
    from the top level; only a name that is not a top-level key (a nested
    key, or a value that merely ends like one) calls for walking the whole
    message.  In ASCII text without ``\\u`` escapes no key can hide its name.
    """
    if not text.isascii() or ("\\" in text and "\\u" in text):  # the first tests are the faster
        return strip_secrets(message)
    lowered = text.lower()
    for needle in _SECRET_NEEDLES:
        end = lowered.find(needle)
        while end != -1:
            name = text[text.rfind('"', 0, end) + 1 : end + len(needle) - 1]
            if message.pop(name, _MISSING) is _MISSING:
                return strip_secrets(message)
            end = lowered.find(needle, end + 1)
    return message


def strip_secrets(value: Any) -> Any:
    """A copy of ``value`` without credential keys (auth tokens, passwords), at any depth."""
    if isinstance(value, dict):
        return {
            key: strip_secrets(item)
            for key, item in value.items()
            if not (isinstance(key, str) and key.lower().endswith(_SECRET_SUFFIXES))
        }
    if isinstance(value, list):
        return [strip_secrets(item) for item in value]
    return value
