"""The operator commands: replay, quarantine, dead letters, subscriptions, status, check-redis.

Each takes the loaded configuration and what the command line gave, prints
its report on standard output (problems with single items on standard
error) and returns the exit code; ``cli`` only parses and dispatches.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from yagi_meter import status as status_module
from yagi_meter.config import Config
from yagi_meter.daemon import start_store
from yagi_meter.errors import RET_ERROR, RET_OK
from yagi_meter.ingest.ingestor import Ingestor, Message, Summary
from yagi_meter.store import open_store

# -- replay ----------------------------------------------------------------


def replay(config: Config, files: Sequence[str]) -> int:
    """Store the notifications in ``files`` through the listener's path."""
    store = start_store("replay", config)
    ingestor = Ingestor(store, config)
    total = Summary()
    count = 0
    for path in files:
        try:
            messages = list(read_messages(Path(path)))
        except OSError as e:
            print(f"yagi-meter: cannot read {path}: {e.strerror}", file=sys.stderr)
            return RET_ERROR
        for start in range(0, len(messages), config.amqp.batch_size):
            total.add(ingestor.ingest(messages[start : start + config.amqp.batch_size]))
        count += len(messages)
    print(
        f"replayed {count} messages from {len(files)} files: stored {total.stored}, "
        f"duplicates {total.duplicates}, conflicts {total.conflicts}, "
        f"quarantined {total.quarantined}"
    )
    return RET_OK


def read_messages(path: Path) -> Iterator[Message]:
    """Message bodies in a file: one JSON object, a JSON array of them, or JSON lines.

    A line that is not JSON is still yielded, so it reaches the quarantine.
    """
    data = path.read_bytes()
    # Editors on Windows start UTF-8 files with a BOM; json.loads(bytes) skips
    # it, the listener's parser (which never sees one on the wire) does not.
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        whole = json.loads(data)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        yield Message(data, f"file:{path}")
        return
    if isinstance(whole, list):
        for number, item in enumerate(whole, 1):
            yield Message(json.dumps(item).encode(), f"file:{path}[{number}]")
        return
    for number, line in enumerate(data.splitlines(), 1):
        if line.strip():
            yield Message(line, f"file:{path}:{number}")


# -- quarantine ------------------------------------------------------------


def quarantine_list(config: Config, limit: int, as_json: bool) -> int:
    """Print quarantined messages with their reasons, oldest first."""
    store = open_store(config)
    for entry in store.quarantine.list(count=limit):
        if as_json:
            print(
                json.dumps(
                    {
                        "id": entry.id,
                        "at": entry.at.isoformat(),
                        "source": entry.source,
                        "reason": entry.reason,
                        "body": entry.body.decode("utf-8", errors="replace"),
                        "size": entry.size,
                        "sha256": entry.sha256,
                        "truncated": entry.truncated,
                    }
                )
            )
        else:
            preview = entry.body[:120].decode("utf-8", errors="replace").replace("\n", " ")
            print(
                f"{entry.id}  {entry.at:%Y-%m-%d %H:%M:%S}  {entry.source}  {entry.reason}\n"
                f"    {entry.size} bytes{' (head kept)' if entry.truncated else ''}: {preview}"
            )
    return RET_OK


def quarantine_requeue(config: Config, ids: Sequence[str]) -> int:
    """Store quarantined messages (all when ``ids`` is empty) again; one still bad is quarantined anew."""
    store = start_store("quarantine requeue", config)
    ingestor = Ingestor(store, config)
    wanted = set(ids)
    found: set[str] = set()
    total = Summary()
    # A message still bad is quarantined anew, after `last`: stop there.
    last = store.quarantine.last_id()
    after = "-"
    while last is not None:
        entries = [
            e
            for e in store.quarantine.list(count=config.amqp.batch_size, after=after)
            if _entry_seq(e.id) <= _entry_seq(last)
        ]
        if not entries:
            break
        after = entries[-1].id
        for entry in entries:
            if wanted and entry.id not in wanted:
                continue
            found.add(entry.id)
            if entry.truncated:
                print(f"yagi-meter: {entry.id} kept only its head (too large): not requeued", file=sys.stderr)
                continue
            # One entry at a time: each is removed in the same write that stores it.
            total.add(ingestor.ingest([Message(entry.body, entry.source)], requeued=[entry.id]))
    print(
        f"requeued {len(found)}: stored {total.stored}, duplicates {total.duplicates}, "
        f"conflicts {total.conflicts}, still quarantined {total.quarantined}"
    )
    for missing in sorted(wanted - found):
        print(f"yagi-meter: no quarantined message {missing}", file=sys.stderr)
    return RET_ERROR if wanted - found else RET_OK


def quarantine_delete(config: Config, ids: Sequence[str], everything: bool) -> int:
    """Delete quarantined messages (every one with ``everything``) for good."""
    store = open_store(config)
    if everything:
        last = store.quarantine.last_id()
        deleted = store.quarantine.delete_through(last) if last is not None else 0
        print(f"deleted {deleted} quarantined messages")
        return RET_OK
    ids = list(dict.fromkeys(ids))
    removed = store.quarantine.delete(ids)
    print(f"deleted {len(removed)} quarantined messages")
    for missing in [entry_id for entry_id in ids if entry_id not in removed]:
        print(f"yagi-meter: no quarantined message {missing}", file=sys.stderr)
    return RET_ERROR if len(removed) < len(ids) else RET_OK


def _entry_seq(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)


# -- subscriptions ---------------------------------------------------------


def subscriptions_list(config: Config, as_json: bool) -> int:
    """Print subscriptions: id, lease end, queued entries, failures, topic, callback."""

    store = open_store(config)
    for row in store.subscriptions.standing():
        expires = datetime.fromtimestamp(row["expires_ms"] / 1000, UTC)
        if as_json:
            print(json.dumps({**row, "expires": expires.isoformat()}))
        else:
            print(
                f"{row['id']}  until {expires:%Y-%m-%d %H:%M:%S}  {row['backlog']} queued  "
                f"{row['failures']} failed  {row['topic']}\n    -> {row['callback']}"
            )
    return RET_OK


def subscriptions_remove(config: Config, ids: Sequence[str]) -> int:
    """Remove subscriptions and their queued entries."""

    store = open_store(config)
    subscriptions = store.subscriptions
    ids = list(dict.fromkeys(ids))
    missing = [sid for sid in ids if not subscriptions.remove(sid)]
    print(f"removed {len(ids) - len(missing)} subscriptions")
    for sid in missing:
        print(f"yagi-meter: no subscription {sid}", file=sys.stderr)
    return RET_ERROR if missing else RET_OK


# -- dead letters ------------------------------------------------------------


def dead_letters_list(config: Config, limit: int, as_json: bool) -> int:
    """Print dead letters with the archive's answer, oldest first."""

    store = open_store(config)
    for letter in store.dead_letters.list(count=limit):
        if as_json:
            print(json.dumps({**dataclasses.asdict(letter), "at": letter.at.isoformat()}))
        else:
            print(
                f"{letter.id}  {letter.at:%Y-%m-%d %H:%M:%S}  HTTP {letter.status}  {letter.event_type}  "
                f"{letter.message_id}  {letter.url}\n    {letter.body[:200]!r}"
            )
    return RET_OK


def dead_letters_retry(config: Config, ids: Sequence[str]) -> int:
    """Put dead letters (all when ``ids`` is empty) back in the forward outbox."""

    store = start_store("forward dead-letters retry", config)
    dead = store.dead_letters
    wanted = set(ids)
    letters, after = [], "-"
    while batch := dead.list(count=1000, after=after):
        letters += [letter for letter in batch if not wanted or letter.id in wanted]
        after = batch[-1].id
    stored = {event.seq for event in store.events.get_many(letter.seq for letter in letters)}
    expired = [letter for letter in letters if letter.seq not in stored]
    for letter in expired:
        print(f"yagi-meter: {letter.id}: event {letter.message_id} is no longer stored", file=sys.stderr)
    retried = [letter for letter in letters if letter.seq in stored]
    for start in range(0, len(retried), 1000):
        dead.redrive(retried[start : start + 1000], store.outbox("forward"))
    print(f"re-driven {len(retried)} dead letters into the forward outbox")
    for missing in sorted(wanted - {letter.id for letter in letters}):
        print(f"yagi-meter: no dead letter {missing}", file=sys.stderr)
    return RET_ERROR if expired or wanted - {letter.id for letter in letters} else RET_OK


# -- status ----------------------------------------------------------------


def status(config: Config, as_json: bool) -> int:
    """Print counts, queue depths, backlogs, dead letters and the last errors."""
    store = open_store(config)
    report = status_module.collect(store, config)
    print(json.dumps(report, sort_keys=True) if as_json else status_module.render(report))
    return RET_OK


# -- check-redis -------------------------------------------------------------


def check_redis(config: Config) -> int:
    """Whether the daemons will have a Redis: ``[redis] url`` answers a PING, or is
    ``embedded`` (which each daemon starts itself; not started here)."""
    if config.redis.url != "embedded":
        open_store(config).ping()
    return RET_OK


def dictionary_train(config: Config, samples: int | None, force: bool) -> int:
    """``dictionary train``: train on recent events, store the dictionary, make it current."""
    from yagi_meter.store.dictionaries import train

    store = open_store(config)
    try:
        result = train(store.events.dictionaries, samples or config.redis.dictionary_samples, force=force)
    except ValueError as e:
        print(f"yagi-meter: no dictionary trained: {e}", file=sys.stderr)
        return RET_ERROR
    name = f"dictionary {result.id}" if result.id else "the new one"
    print(
        f"{name}: {result.size:,} bytes, trained on {result.samples:,} events of "
        f"{result.event_types} event types in {result.seconds:.1f} s; "
        f"{'now current' if result.id else 'not stored'}\n"
        f"held-out {result.held_out:,} events, stored/text: {result.ratio_before:.3f} with "
        f"{result.before}, {result.ratio_after:.3f} with {name}"
    )
    if result.id is None:
        print(
            f"yagi-meter: {result.before} does as well; kept it (--force stores the new one)", file=sys.stderr
        )
    return RET_OK


def dictionary_list(config: Config) -> int:
    """``dictionary list``: every stored dictionary, the current one marked."""
    store = open_store(config)
    for info in store.events.dictionaries.list():
        created = f"{info.created:%Y-%m-%d %H:%M:%S}" if info.created else "-"
        ratios = (
            f"  held-out {info.ratio_before:.3f} -> {info.ratio_after:.3f}"
            if info.ratio_before is not None and info.ratio_after is not None
            else ""
        )
        print(
            f"{info.id}  {info.size:,} bytes  {created}  {info.samples:,} samples{ratios}"
            f"{'  current' if info.current else ''}"
        )
    return RET_OK


# -- audit -----------------------------------------------------------------


def audit_check(config: Config, since_text: str, reset: bool, as_json: bool) -> int:
    """``yagi-meter audit check --since``: judge once, now, and print the counts."""
    from yagi_meter.audit.daemon import Auditor

    try:
        since = datetime.fromisoformat(since_text.strip())
    except ValueError:
        print(f"yagi-meter: --since is not an ISO 8601 date: {since_text!r}", file=sys.stderr)
        return RET_ERROR
    since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    store = start_store("audit check", config)
    report = Auditor(config, store).check(since, reset=reset)
    waiting = store.audit.due_count()
    counts = {
        "read": report.read,
        "judged": report.judged,
        "missing": report.missing,
        "stored": report.stored,
        "periods": report.periods,
        "waiting": waiting,
    }
    if as_json:
        print(json.dumps(counts, sort_keys=True))
    else:
        print(
            f"audit since {since.isoformat()}: read {report.read} index entries, judged {report.judged} "
            f"exists events, {report.missing} missing exists in {report.periods} periods, "
            f"{report.stored} verdicts new; {waiting} exists events still in their grace period"
        )
    return RET_OK
