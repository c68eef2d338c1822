"""Every Redis key yagi-meter uses, built in this one place, each with its one owner.

With several partitions (partitions.py) the event family below (owners
events.py and outbox.py: ``seq`` to ``duplicates``, the outboxes) exists once
per partition, as ``<prefix>{<tag>}:<name>``; every other key is
``<prefix>{g}:<name>``, with ``layout`` (the partition count, written once).
With one partition every name is ``<prefix><name>``, as in earlier versions.

The owner of a key family is the only module that writes it, with the Lua it
runs (scripts.py).  A script that must change another owner's keys in the
same atomic step does it only through that owner's Lua library
(``_outbox.lua``, ``_quarantine.lua``).  Every script gets all its keys in
KEYS: no key name is built inside Lua.  ``claim.lua`` leases entries of any
due zset; the module passing the key owns it.  Nothing outside
``yagi_meter.store`` sees a key name (docs/architecture.md).

Owner events.py (ingest.lua writes; retention_head reads and retention.lua removes):

| key | type | holds |
| --- | --- | --- |
| ``seq`` | string | last ingest sequence number (INCR) |
| ``epoch`` | string | random id made by ingest.lua whenever ``seq`` does not exist: a lost ``seq`` |
|           |        | (Redis lost its data) gives a new epoch; caches and ETags include it (epoch.py) |
| ``events`` | stream | an entry per event, id ``<seq>-0``: ``t`` ingest ms, ``e`` type, |
|            |        | ``m`` message_id, ``d`` body (codec.py), ``u`` user_id ("" for none; |
|            |        | absent from entries written before it), ``n`` notification ms (ditto: |
|            |        | then ``by_time`` has it): what page.lua filters on; with partitions ``o``, |
|            |        | the merge order of the merged feeds (partitions.batch_order, pages.py), |
|            |        | growing with the seq (ingest.lua)                                  |
| ``ids`` | hash | message_id -> ``"<seq> <digest>"`` (dedup, lookup by entry id) |
| ``by_time`` | zset | member seq, score notification time in ms, of events stored before the |
|             |      | stream's ``n`` field held it (read by page.lua, emptied by retention) |
| ``tenant:<t>`` | zset | member and score seq: one tenant's events |
| ``resource:<t>:<r>`` | zset | member and score seq: one resource's events |
| ``type:<event_type>`` | zset | member and score seq: one event type's events |
| ``audit:verdicts`` | zset | member and score seq: the audit's verdict events (the ``/audit`` feed; |
|                    |      | an index like ``type:``, trimmed by retention) |
| ``indexes`` | set | no longer written: versions before 2026-12-04 listed every index zset |
|             |     | in it, and nothing ever read it (an upgraded store may UNLINK it) |
| ``catalog:tenants`` | zset | every tenant that ever had an event, all scored 0 (listed by lex order) |
| ``catalog:tenants:stats`` | hash | tenant -> ``"<events ever stored> <newest notification time ms>"`` |
| ``catalog:types`` | zset | every event type ever stored, scored 0 |
| ``catalog:types:stats`` | hash | event type -> ``"<events> <newest ms>"`` |
| ``catalog:resources:<t>`` | zset | one tenant's resources, scored 0 (a key pair per tenant: partitionable) |
| ``catalog:resources:<t>:stats`` | hash | resource -> ``"<events> <newest ms>"`` |
| ``catalog:tenant_types:<t>`` | zset | the event types of one tenant's events, scored 0 |
| ``catalog:tenant_types:<t>:stats`` | hash | event type -> ``"<events> <newest ms>"`` |
| ``conflicts`` | string | conflicting copies stored: later bodies of a known message_id, kept |
|               |        | as events of their own (notification.conflict_copy) |
| ``duplicates`` | string | count of redelivered or replayed events already stored |
| ``copied`` | hash | ``yagi-meter copy``: a source partition's epoch (``-<n>`` before it has one) |
|            |      | -> the last of its seqs copied here (copy.py; a source that lost its data |
|            |      | has a new epoch, so its copy starts again, every event known a duplicate) |

Owner outbox.py (claim.lua; _outbox.lua, included by ingest.lua and fanout.lua):

| key | type | holds |
| --- | --- | --- |
| ``outbox:<name>`` | zset | member ``MEMBER_FORMAT % seq``, score ms when next due (``push``, |
|                   |      | ``forward``): work to do |
| ``outbox:<name>:seqs`` | zset | the same members scored by seq: oldest pending, retention floor |
| ``outbox:<name>:attempts`` | hash | member -> failed attempts so far |

Owner quarantine.py (_quarantine.lua, included by quarantine.lua):

| key | type | holds |
| --- | --- | --- |
| ``quarantine`` | stream | messages that could not become events: ``reason``, ``source``, ``at`` ms, |
|                |        | ``body`` (its first 4 KiB when ``truncated`` is 1), ``sha256``, ``size`` |
| ``quarantine:count`` | string | messages ever quarantined |
| ``quarantine:digests`` | hash | sha256 of a quarantined raw message -> entry id (a repeat is not added) |
| ``quarantine:repeats`` | string | rejected messages already in the quarantine (counted as duplicates) |

Owner dictionaries.py (read by clients, never by scripts):

| key | type | holds |
| --- | --- | --- |
| ``dict:last`` | string | last dictionary id given out (INCR) |
| ``dict:<id>`` | string | one zstd dictionary's bytes, written once, never changed or deleted |
|               |        | (bodies name the one they need: codec.py, store/dictionaries.py) |
| ``dict:info`` | hash | dictionary id -> JSON: size, created_ms, samples, sha256, held-out ratios |
| ``dict:current`` | string | id of the dictionary new bodies are compressed with (none: zlib) |
| ``dict:training`` | string | lock (EX 600) while a listener trains the first dictionary |

Owners error_log.py, dead_letters.py, archived.py (one stream each):

| key | type | holds |
| --- | --- | --- |
| ``errors`` | stream | last run-time errors of every component, capped (``yagi-meter status``) |
| ``dead_letters`` | stream | forwards the archive refused for good, with its response |
| ``forwarded`` | stream | recent forwards the archive accepted, with its Location (capped) |

Owner subscriptions.py (request.lua, claim.lua, fanout.lua, settle.lua):

| key | type | holds |
| --- | --- | --- |
| ``hub:sub:<id>`` | hash | one verified WebSub subscription: topic, callback, secret, expires (ms), |
|                  |      | attempts, first_failure (ms), failures, dropped |
| ``hub:topic:<topic>`` | set | ids of the subscriptions to one topic URL |
| ``hub:leases`` | zset | subscription id, score ms its lease ends |
| ``hub:queue:<id>`` | zset | member and score seq: entries still to deliver to one subscription |
| ``hub:due`` | zset | subscription id, score ms its next delivery is due (claimed as an outbox) |
| ``hub:intent:<id>`` | hash | the latest un-verified (un)subscription request for that id |
| ``hub:intents`` | zset | subscription id, score ms its intent is due for verification or denial |
| ``hub:pending:client:<addr>`` | zset | ids of the intents one client address has waiting, score ms |
| ``hub:pending:topic:<topic>`` | zset | ids of the intents waiting for one topic, score ms |
| ``hub:failures`` | string | failed deliveries ever |
| ``hub:dropped`` | string | entries dropped after max attempts or age |
Owner audit.py (lifecycle.lua only reads the event keys):

| key | type | holds |
| --- | --- | --- |
| ``audit:cursors`` | hash | event type (``<type>\x1f<partition>`` past partition 0) -> last seq of that |
|                   |      | partition's ``type:`` index the audit has read |
| ``audit:due`` | zset | member exists seq, score ms its grace period ends (``[audit] max_due`` + a batch) |
| ``audit:alive:<rule>`` | zset | member ``["<t>","<r>"]``, score ms it was deleted (2^52 while alive); |
|                        |      | resources deleted before the oldest unchecked audit period are removed |
| ``audit:launched:<rule>`` | hash | the same members -> ms launched (from the create, else an exists) |
| ``audit:seen:<rule>:<ms>`` | set | members with an exists for the audit period starting at ms |
|                            |     | (deleted once that period is checked) |
| ``audit:checked`` | hash | rule -> ms up to which audit periods are checked for missing exists |
| ``audit:counts:<ms>`` | hash | ``<rule>|<outcome>|<reason>`` -> verdicts stored, period starting at ms |
| ``audit:count_periods`` | zset | the ms of each ``audit:counts:`` hash (``[audit] keep_periods`` kept) |

Readers besides the owners: pages.py (page.lua) reads the event keys for
feeds; catalog.py reads the ``catalog:`` keys (and ZCARDs the indexes) for
the discovery lists; stats.py reads counts of every family for ``/metrics`` and ``status``;
events.py reads ``outbox:<name>:seqs`` for the retention floor; audit.py reads
``type:<event_type>`` and ``audit:verdicts`` (lifecycle.lua: ``resource:`` and ``events``).
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import quote

from yagi_meter.store.partitions import GLOBAL_TAG, partition_tag

OUTBOXES = ("push", "forward")


@lru_cache(maxsize=65536)  # the same tenants, resources and types come again and again
def _part(value: str) -> str:
    # Tenant and resource ids are free text: quote so "a:b" + "c" != "a" + "b:c".
    return quote(value, safe="-_.@")


class Keys:
    """Key names under one prefix (``[redis] key_prefix``), for one partition.

    With one partition (``tag`` None) every name is the prefix and the name,
    as in every earlier version.  With more (partitions.py), the event
    family (events, ids, index zsets, catalog, outboxes, ``seq``, ``epoch``, ...)
    is named ``<prefix>{<tag>}:<name>``, one hash tag per partition, and
    everything else ``<prefix>{g}:<name>``: the hub, the quarantine, the
    logs, the dictionaries, the audit's state and the ``layout`` key.
    """

    def __init__(self, prefix: str, tag: str | None = None) -> None:
        self.base = prefix
        self.tag = tag
        # Names outside the event family (the {g} slot when partitioned).
        self.prefix = prefix if tag is None else f"{prefix}{{{GLOBAL_TAG}}}:"
        # Names of the event family of this partition.
        self.part = prefix if tag is None else f"{prefix}{{{tag}}}:"
        part = self.part
        self.seq = part + "seq"
        self.events = part + "events"
        self.ids = part + "ids"
        self.by_time = part + "by_time"
        self.conflicts = part + "conflicts"
        self.duplicates = part + "duplicates"
        self.epoch = part + "epoch"
        self.layout = self.prefix + "layout"
        self.copied = self.prefix + "copied"
        self.quarantine = self.prefix + "quarantine"
        self.quarantine_count = self.prefix + "quarantine:count"
        self.quarantine_digests = self.prefix + "quarantine:digests"
        self.quarantine_repeats = self.prefix + "quarantine:repeats"
        self.errors = self.prefix + "errors"
        self.dead_letters = self.prefix + "dead_letters"
        self.forwarded = self.prefix + "forwarded"
        self.dict_last = self.prefix + "dict:last"
        self.dict_info = self.prefix + "dict:info"
        self.dict_current = self.prefix + "dict:current"
        self.dict_training = self.prefix + "dict:training"

    @classmethod
    def partitions(cls, prefix: str, count: int) -> list[Keys]:
        """The keys of each of ``count`` partitions; one partition keeps the unpartitioned names."""
        if count == 1:
            return [cls(prefix)]
        return [cls(prefix, partition_tag(i, count)) for i in range(count)]

    def dictionary(self, dict_id: int) -> str:
        return f"{self.prefix}dict:{int(dict_id)}"

    def tenant(self, tenant_id: str) -> str:
        return f"{self.part}tenant:{_part(tenant_id)}"

    def resource(self, tenant_id: str, resource_id: str) -> str:
        return f"{self.part}resource:{_part(tenant_id)}:{_part(resource_id)}"

    def event_type(self, event_type: str) -> str:
        return f"{self.part}type:{_part(event_type)}"

    # -- catalog (written by ingest.lua, read by catalog.py) -------------------

    @property
    def catalog_tenants(self) -> str:
        return self.part + "catalog:tenants"

    @property
    def catalog_types(self) -> str:
        return self.part + "catalog:types"

    def catalog_resources(self, tenant_id: str) -> str:
        return f"{self.part}catalog:resources:{_part(tenant_id)}"

    def catalog_tenant_types(self, tenant_id: str) -> str:
        return f"{self.part}catalog:tenant_types:{_part(tenant_id)}"

    @staticmethod
    def stats(catalog: str) -> str:
        """The counts hash of a ``catalog:`` zset."""
        return catalog + ":stats"

    def owner_indexes(self, tenants: tuple[str, ...] | list[str], resource_id: str | None) -> list[str]:
        """The tenant and resource index keys of an event of ``tenants`` and ``resource_id``."""
        index_keys = []
        for tenant_id in tenants:  # the owner, and a billed project
            index_keys.append(self.tenant(tenant_id))
            if resource_id:
                index_keys.append(self.resource(tenant_id, resource_id))
        return index_keys

    def outbox(self, name: str) -> str:
        """The due zset of an outbox; its ``:seqs`` and ``:attempts`` keys are named below
        only, and passed to every script that writes them (outbox.OutboxKeys)."""
        if name not in OUTBOXES:
            raise ValueError(f"no outbox {name!r}")
        return f"{self.part}outbox:{name}"

    def outbox_seqs(self, name: str) -> str:
        return self.outbox(name) + ":seqs"

    def outbox_attempts(self, name: str) -> str:
        return self.outbox(name) + ":attempts"

    # -- audit (store/audit.py) ----------------------------------------------

    @property
    def audit_verdicts(self) -> str:
        return self.part + "audit:verdicts"

    @property
    def audit_cursors(self) -> str:
        return self.prefix + "audit:cursors"

    @property
    def audit_due(self) -> str:
        return self.prefix + "audit:due"

    @property
    def audit_checked(self) -> str:
        return self.prefix + "audit:checked"

    @property
    def audit_count_periods(self) -> str:
        return self.prefix + "audit:count_periods"

    @property
    def audit_state_pattern(self) -> str:
        """Every audit key (a SCAN pattern; the prefix is escaped)."""
        escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in self.prefix)
        return escaped + "audit:*"

    def audit_alive(self, rule: str) -> str:
        return f"{self.prefix}audit:alive:{_part(rule)}"

    def audit_launched(self, rule: str) -> str:
        return f"{self.prefix}audit:launched:{_part(rule)}"

    def audit_seen(self, rule: str, period_ms: int) -> str:
        return f"{self.prefix}audit:seen:{_part(rule)}:{period_ms}"

    def audit_counts(self, period_ms: int) -> str:
        return f"{self.prefix}audit:counts:{period_ms}"

    # -- WebSub hub (store/subscriptions.py) ---------------------------------

    @property
    def hub_leases(self) -> str:
        return self.prefix + "hub:leases"

    @property
    def hub_due(self) -> str:
        return self.prefix + "hub:due"

    @property
    def hub_intents(self) -> str:
        return self.prefix + "hub:intents"

    @property
    def hub_failures(self) -> str:
        return self.prefix + "hub:failures"

    @property
    def hub_dropped(self) -> str:
        return self.prefix + "hub:dropped"

    def hub_subscription(self, subscription_id: str) -> str:
        return f"{self.prefix}hub:sub:{subscription_id}"

    def hub_topic(self, topic: str) -> str:
        return f"{self.prefix}hub:topic:{_part(topic)}"

    def hub_queue(self, subscription_id: str) -> str:
        """A subscription's delivery queue (passed in KEYS to fanout.lua and settle.lua)."""
        return f"{self.prefix}hub:queue:{subscription_id}"

    def hub_intent(self, subscription_id: str) -> str:
        return f"{self.prefix}hub:intent:{subscription_id}"

    def hub_pending_client(self, address: str) -> str:
        return f"{self.prefix}hub:pending:client:{_part(address)}"

    def hub_pending_topic(self, topic: str) -> str:
        return f"{self.prefix}hub:pending:topic:{_part(topic)}"
