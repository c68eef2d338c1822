"""The ``yagi-meter`` command: one subcommand per daemon or operator task."""

from __future__ import annotations

import argparse
import codecs
import configparser
import dataclasses
import importlib
import json
import logging
import logging.config
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from yagi_meter import __version__
from yagi_meter import config as config_module
from yagi_meter import status as status_module
from yagi_meter.config import Config
from yagi_meter.errors import (
    RET_CONFIG,
    RET_CONNECT,
    RET_ERROR,
    RET_OK,
    RET_PIPE,
    AccessRefused,
    ConfigError,
    StoreError,
)
from yagi_meter.ingest.ingestor import Ingestor, Message, Summary
from yagi_meter.store import Store, open_store
from yagi_meter.store.connection import ping, socket_url, warn_if_evicting

log = logging.getLogger("yagi_meter")

# The daemons `run` starts, in start order; each is `yagi-meter <name>`.
DAEMONS = ("listen", "serve", "push", "forward", "audit")
# Daemons started only when configured.
WANTED = {"forward": lambda config: bool(config.forward.url), "audit": lambda config: config.audit.enabled}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return RET_ERROR
    if not getattr(args, "needs_config", True):
        return args.func(args, None)
    try:
        config = config_module.load(args.config)
        _configure_logging(config)
        code = args.func(args, config)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except ConfigError as e:
        print(f"yagi-meter: configuration error: {e}", file=sys.stderr)
        return RET_CONFIG
    except StoreError as e:
        print(f"yagi-meter: Redis error: {e}", file=sys.stderr)
        return RET_CONNECT
    except AccessRefused as e:
        print(f"yagi-meter: configuration error: [amqp] url: {e}", file=sys.stderr)
        return RET_CONFIG
    except BrokenPipeError:
        # The reader went away (`yagi-meter quarantine list | head -1`): stop
        # quietly, with the status of a process killed by SIGPIPE, as other
        # Unix tools do.  Python would otherwise complain again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return RET_PIPE


EPILOG = """\
configuration: -c PATH, else $YAGI_CONFIG, else ./yagi.conf, else /etc/yagi/yagi.conf,
else the built-in defaults; any option can be set as YAGI_<SECTION>_<KEY>
(yagi.conf.sample lists them all).

exit codes: 0 done; 1 failed (the reason is printed); 2 bad configuration (one
line naming the key) or bad command line; 3 Redis unreachable; 141 standard
output closed by its reader (`yagi-meter quarantine list | head -1`).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yagi-meter",
        description="Archive OpenStack notifications in Redis and serve them as Atom feeds.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help="configuration file (else $YAGI_CONFIG, ./yagi.conf, /etc/yagi/yagi.conf)",
    )
    parser.add_argument("--version", action="version", version=f"yagi-meter {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND", title="commands")

    _command(
        commands,
        "listen",
        cmd_listen,
        "consume the configured RabbitMQ queues, store each batch, then ack it",
    )
    _command(
        commands,
        "serve",
        cmd_serve,
        "the feed server and WebSub hub on [feeds] host:port (development server; "
        "in production run gunicorn -c conf/gunicorn.conf.py feeds.wsgi:app)",
    )
    _command(commands, "push", cmd_push, "verify WebSub subscriptions and deliver new entries to subscribers")
    _command(
        commands,
        "run",
        cmd_run,
        "every daemon (listen, serve, push, forward when [forward] url is set, audit when [audit] "
        "enabled) as a child "
        "process, for one machine; a child that dies is restarted with backoff",
    )
    replay = _command(
        commands,
        "replay",
        cmd_replay,
        "store notifications from files through the listener's path (backfill, demo); "
        "a message already stored is counted as a duplicate",
    )
    replay.add_argument(
        "files", nargs="+", metavar="FILE", help="a JSON object, a JSON array of them, or JSON lines"
    )

    forward = _command(
        commands,
        "forward",
        cmd_forward,
        "without an action: run the forwarder daemon, which posts events to the AtomPub archive "
        "at [forward] url (it starts [forward] processes - 1 helper processes itself)",
    )
    forward.usage = "%(prog)s [-h] [ACTION ...]"  # the action is optional
    forward_actions = forward.add_subparsers(metavar="ACTION", title="actions")
    dead_actions = _group(forward_actions, "dead-letters", "events the archive refused for good (4xx)")
    dead_list = _command(
        dead_actions, "list", cmd_dead_letters_list, "show dead letters with the archive's answer"
    )
    _limit(dead_list, "dead letters")
    dead_list.add_argument("--json", action="store_true", help="one JSON object per line, the answer whole")
    dead_retry = _command(
        dead_actions, "retry", cmd_dead_letters_retry, "put dead letters back in the forward outbox"
    )
    dead_retry.add_argument("ids", nargs="*", metavar="ID", help="dead letters to retry (default: all)")

    audit = _command(
        commands,
        "audit",
        cmd_audit,
        "without an action: run the audit daemon, which judges archived exists events against "
        "their resource's lifecycle and reports resources with no exists ([audit])",
    )
    audit.usage = "%(prog)s [-h] [ACTION ...]"  # the action is optional
    audit_actions = audit.add_subparsers(metavar="ACTION", title="actions")
    check = _command(
        audit_actions,
        "check",
        cmd_audit_check,
        "judge once, now: exists events whose grace period is over and audit periods "
        "finished since DATE; prints what it did",
    )
    check.add_argument(
        "--since", required=True, metavar="DATE", help="ISO 8601 date or time (UTC unless it says)"
    )
    check.add_argument(
        "--reset",
        action="store_true",
        help="rebuild the audit's own state from the archive first (verdicts stored are kept)",
    )
    check.add_argument("--json", action="store_true", help="print the counts as one JSON object")

    status = _command(
        commands,
        "status",
        cmd_status,
        "counts, RabbitMQ queue depths, outbox backlogs, dead letters, last errors",
    )
    status.add_argument("--json", action="store_true", help="one JSON object on one line")

    actions = _group(
        commands, "quarantine", "messages that could not become events, kept whole with the reason"
    )
    listing = _command(
        actions, "list", cmd_quarantine_list, "show quarantined messages with their reasons, oldest first"
    )
    _limit(listing, "messages")
    listing.add_argument("--json", action="store_true", help="one JSON object per line, body included")
    requeue = _command(
        actions,
        "requeue",
        cmd_quarantine_requeue,
        "store quarantined messages again (after a fix); one still bad is quarantined anew",
    )
    requeue.add_argument("ids", nargs="*", metavar="ID", help="entries to requeue (default: all)")
    delete = _command(actions, "delete", cmd_quarantine_delete, "delete quarantined messages for good")
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", default=[], metavar="ID", help="entries to delete")
    which.add_argument("--all", action="store_true", help="delete every quarantined message")

    sub_actions = _group(commands, "subscriptions", "verified WebSub subscriptions of the hub")
    sub_list = _command(
        sub_actions,
        "list",
        cmd_subscriptions_list,
        "show subscriptions: id, lease end, queued entries, topic, callback",
    )
    sub_list.add_argument("--json", action="store_true", help="one JSON object per line")
    sub_remove = _command(
        sub_actions,
        "remove",
        cmd_subscriptions_remove,
        "remove subscriptions and their queued entries (the subscriber may subscribe again)",
    )
    sub_remove.add_argument("ids", nargs="+", metavar="ID", help="subscription ids, as `list` shows them")
    sample = _command(
        commands, "sample-config", cmd_sample_config, "print yagi.conf.sample: every option, with its default"
    )
    sample.set_defaults(needs_config=False)
    _command(
        commands,
        "check-redis",
        cmd_check_redis,
        "exit 0 when the configured Redis answers (or is 'embedded'), 3 when it does not",
    )
    return parser


def _command(commands, name: str, func, text: str) -> argparse.ArgumentParser:
    """A subcommand whose short help and description are the same text."""
    command = commands.add_parser(name, help=text, description=text)
    command.set_defaults(func=func)
    return command


def _group(commands, name: str, text: str):
    """A subcommand that only groups actions (one of which is required)."""
    group = commands.add_parser(name, help=text, description=text)
    return group.add_subparsers(metavar="ACTION", title="actions", required=True)


def _limit(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument(
        "--limit",
        type=int,
        default=100,
        metavar="N",
        help=f"show at most N {what}, oldest first (default: 100)",
    )


def _configure_logging(config: Config) -> None:
    if config.logging.config:
        try:
            logging.config.fileConfig(config.logging.config, disable_existing_loggers=False)
        except (OSError, KeyError, ValueError, RuntimeError, configparser.Error) as e:
            # A missing or broken file is a bad configuration value like any other.
            raise ConfigError(f"[logging] config: cannot use {config.logging.config}: {e!r}") from None
        return
    logging.basicConfig(
        level=config.logging.level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    # pika logs every connection failure with a traceback, and every passive
    # declare of a missing queue; yagi_meter.ingest.amqp turns both into errors of its
    # own that are logged (or printed as one line) where they are handled.
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def _start(name: str, config: Config) -> Store:
    """Log the one start-up line and open the store (fails loudly if unreachable)."""
    log.info("yagi-meter %s %s starting: %s", name, __version__, config.describe())
    store = open_store(config)
    ping(store.client)
    warn_if_evicting(store.client)
    return store


# -- listen ----------------------------------------------------------------


def cmd_listen(args: argparse.Namespace, config: Config) -> int:
    from yagi_meter.ingest.listener import Listener

    store = _start("listen", config)
    listener = Listener(config, Ingestor(store, config))
    listener.install_signal_handlers()
    listener.run()
    return RET_OK


# -- push ------------------------------------------------------------------


def cmd_push(args: argparse.Namespace, config: Config) -> int:
    from yagi_meter.websub.push import PushWorker

    store = _start("push", config)
    worker = PushWorker(config, store)
    worker.install_signal_handlers()
    worker.run()
    return RET_OK


# -- serve -----------------------------------------------------------------

# The web app is named by its import string, as gunicorn names ``feeds.wsgi:app``:
# ``feeds`` depends on ``yagi_meter``, never the reverse.
WEB_APP_FACTORY = "feeds.app:create_app"


def _web_app_factory() -> Any:
    module, _, name = WEB_APP_FACTORY.partition(":")
    return getattr(importlib.import_module(module), name)


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    """Werkzeug's threaded server on [feeds] host:port; gunicorn runs feeds.wsgi:app in production."""
    from werkzeug.serving import make_server

    store = _start("serve", config)
    app = _web_app_factory()(config, store)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(RET_OK))
    # Werkzeug says "Port N is in use by another program" and exits 1 when it cannot bind.
    server = make_server(config.feeds.host, config.feeds.port, app, threaded=True)
    log.info(
        "serving feeds on http://%s:%d (public URL %s)", config.feeds.host, config.feeds.port, config.base_url
    )
    server.serve_forever()
    return RET_OK


# -- forward ---------------------------------------------------------------


def cmd_forward(args: argparse.Namespace, config: Config) -> int:
    from yagi_meter.forward.forwarder import Forwarder
    from yagi_meter.supervisor import spawn_daemon

    if not config.forward.url:
        raise ConfigError("[forward] url: empty, so forwarding is off")
    store = _start("forward", config)
    # One Python process posts on one core: the others are forwarders of their
    # own (the outbox's leases keep them from posting the same event).
    env = {**_child_env(args, store), "YAGI_FORWARD_PROCESSES": "1"}
    helpers = [spawn_daemon("forward", env) for _ in range(config.forward.processes - 1)]
    forwarder = Forwarder(config, store)
    forwarder.install_signal_handlers()
    try:
        forwarder.run()
    finally:
        for helper in helpers:
            helper.send_signal(signal.SIGTERM)
        for helper in helpers:
            helper.wait()
    return RET_OK


def cmd_dead_letters_list(args: argparse.Namespace, config: Config) -> int:
    from yagi_meter.store.dead_letters import DeadLetters

    store = open_store(config)
    for letter in DeadLetters(store.client, store.keys).list(count=args.limit):
        if args.json:
            print(json.dumps({**dataclasses.asdict(letter), "at": letter.at.isoformat()}))
        else:
            print(
                f"{letter.id}  {letter.at:%Y-%m-%d %H:%M:%S}  HTTP {letter.status}  {letter.event_type}  "
                f"{letter.message_id}  {letter.url}\n    {letter.body[:200]!r}"
            )
    return RET_OK


def cmd_dead_letters_retry(args: argparse.Namespace, config: Config) -> int:
    from yagi_meter.store.dead_letters import DeadLetters
    from yagi_meter.store.outbox import Outbox

    store = _start("forward dead-letters retry", config)
    dead = DeadLetters(store.client, store.keys)
    wanted = set(args.ids)
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
        dead.redrive(retried[start : start + 1000], Outbox(store.client, store.keys, "forward"))
    print(f"re-driven {len(retried)} dead letters into the forward outbox")
    for missing in sorted(wanted - {letter.id for letter in letters}):
        print(f"yagi-meter: no dead letter {missing}", file=sys.stderr)
    return RET_ERROR if expired or wanted - {letter.id for letter in letters} else RET_OK


# -- audit -----------------------------------------------------------------


def cmd_audit(args: argparse.Namespace, config: Config) -> int:
    from yagi_meter.audit.daemon import Auditor

    store = _start("audit", config)
    auditor = Auditor(config, store)
    auditor.install_signal_handlers()
    auditor.run()
    return RET_OK


def cmd_audit_check(args: argparse.Namespace, config: Config) -> int:
    from yagi_meter.audit.daemon import Auditor

    try:
        since = datetime.fromisoformat(args.since.strip())
    except ValueError:
        print(f"yagi-meter: --since is not an ISO 8601 date: {args.since!r}", file=sys.stderr)
        return RET_ERROR
    since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    store = _start("audit check", config)
    report = Auditor(config, store).check(since, reset=args.reset)
    waiting = _audit_due(store)
    counts = {
        "read": report.read,
        "judged": report.judged,
        "missing": report.missing,
        "stored": report.stored,
        "periods": report.periods,
        "waiting": waiting,
    }
    if args.json:
        print(json.dumps(counts, sort_keys=True))
    else:
        print(
            f"audit since {since.isoformat()}: read {report.read} index entries, judged {report.judged} "
            f"exists events, {report.missing} missing exists in {report.periods} periods, "
            f"{report.stored} verdicts new; {waiting} exists events still in their grace period"
        )
    return RET_OK


def _audit_due(store: Store) -> int:
    from yagi_meter.store.audit import AuditLedger

    return AuditLedger(store.client, store.keys).due_count()


# -- run -------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    """Start every daemon as a child, restart one that dies (with backoff), stop all on SIGTERM."""
    from yagi_meter.supervisor import Supervisor, spawn_daemon

    store = _start("run", config)
    env = _child_env(args, store)
    names = [name for name in DAEMONS if WANTED.get(name, lambda _: True)(config)]
    supervisor = Supervisor(names, lambda name: spawn_daemon(name, env, stderr=subprocess.PIPE))
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    supervisor.run()
    return RET_OK


def _child_env(args: argparse.Namespace, store: Store) -> dict[str, str]:
    """The environment of a child daemon: the same configuration and the same Redis."""
    env = dict(os.environ)
    shared = socket_url(store.client)
    if shared:  # children join the embedded Redis this process started
        env["YAGI_REDIS_URL"] = shared
    if args.config:
        env["YAGI_CONFIG"] = str(Path(args.config).resolve())
    return env


# -- replay ----------------------------------------------------------------


def cmd_replay(args: argparse.Namespace, config: Config) -> int:
    store = _start("replay", config)
    ingestor = Ingestor(store, config)
    total = Summary()
    count = 0
    for path in args.files:
        try:
            messages = list(read_messages(Path(path)))
        except OSError as e:
            print(f"yagi-meter: cannot read {path}: {e.strerror}", file=sys.stderr)
            return RET_ERROR
        for start in range(0, len(messages), config.amqp.batch_size):
            total.add(ingestor.ingest(messages[start : start + config.amqp.batch_size]))
        count += len(messages)
    print(
        f"replayed {count} messages from {len(args.files)} files: stored {total.stored}, "
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


# -- status ----------------------------------------------------------------


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    store = open_store(config)
    report = status_module.collect(store, config)
    print(json.dumps(report, sort_keys=True) if args.json else status_module.render(report))
    return RET_OK


# -- sample-config, check-redis ----------------------------------------------


def cmd_sample_config(args: argparse.Namespace, config: None) -> int:
    """The sample configuration, generated from the option table (as yagi.conf.sample is)."""
    sys.stdout.write(config_module.render_sample())
    return RET_OK


def cmd_check_redis(args: argparse.Namespace, config: Config) -> int:
    """Whether the daemons will have a Redis: ``[redis] url`` answers a PING, or is
    ``embedded`` (which each daemon starts itself; not started here)."""
    if config.redis.url != "embedded":
        ping(open_store(config).client)
    return RET_OK


# -- quarantine ------------------------------------------------------------


def cmd_quarantine_list(args: argparse.Namespace, config: Config) -> int:
    store = open_store(config)
    for entry in store.quarantine.list(count=args.limit):
        if args.json:
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


def cmd_quarantine_requeue(args: argparse.Namespace, config: Config) -> int:
    store = _start("quarantine requeue", config)
    ingestor = Ingestor(store, config)
    wanted = set(args.ids)
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


def cmd_quarantine_delete(args: argparse.Namespace, config: Config) -> int:
    store = open_store(config)
    if args.all:
        last = store.quarantine.last_id()
        deleted = store.quarantine.delete_through(last) if last is not None else 0
        print(f"deleted {deleted} quarantined messages")
        return RET_OK
    ids = list(dict.fromkeys(args.ids))
    deleted = store.quarantine.delete(ids)
    print(f"deleted {len(deleted)} quarantined messages")
    for missing in [entry_id for entry_id in ids if entry_id not in deleted]:
        print(f"yagi-meter: no quarantined message {missing}", file=sys.stderr)
    return RET_ERROR if len(deleted) < len(ids) else RET_OK


def _entry_seq(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)


# -- subscriptions ---------------------------------------------------------


def cmd_subscriptions_list(args: argparse.Namespace, config: Config) -> int:
    from yagi_meter.store.subscriptions import Subscriptions

    store = open_store(config)
    for row in Subscriptions(store.client, store.keys).standing():
        expires = datetime.fromtimestamp(row["expires_ms"] / 1000, UTC)
        if args.json:
            print(json.dumps({**row, "expires": expires.isoformat()}))
        else:
            print(
                f"{row['id']}  until {expires:%Y-%m-%d %H:%M:%S}  {row['backlog']} queued  "
                f"{row['failures']} failed  {row['topic']}\n    -> {row['callback']}"
            )
    return RET_OK


def cmd_subscriptions_remove(args: argparse.Namespace, config: Config) -> int:
    from yagi_meter.store.subscriptions import Subscriptions

    store = open_store(config)
    subscriptions = Subscriptions(store.client, store.keys)
    ids = list(dict.fromkeys(args.ids))
    missing = [sid for sid in ids if not subscriptions.remove(sid)]
    print(f"removed {len(ids) - len(missing)} subscriptions")
    for sid in missing:
        print(f"yagi-meter: no subscription {sid}", file=sys.stderr)
    return RET_ERROR if missing else RET_OK
