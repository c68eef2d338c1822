"""The ``yagi-meter`` command: one subcommand per daemon or operator task."""

from __future__ import annotations

import argparse
import codecs
import configparser
import ctypes
import dataclasses
import json
import logging
import logging.config
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from yagi_meter import __version__
from yagi_meter import config as config_module
from yagi_meter import status as status_module
from yagi_meter.config import Config
from yagi_meter.errors import (
    RET_CONFIG,
    RET_CONNECT,
    RET_ERROR,
    RET_OK,
    AccessRefused,
    ConfigError,
    StoreError,
)
from yagi_meter.ingest import Ingestor, Message, Summary
from yagi_meter.store import Store, open_store
from yagi_meter.store.connection import ping, socket_url, warn_if_evicting

log = logging.getLogger("yagi_meter")

PR_SET_PDEATHSIG = 1  # prctl(2)

# The daemons `run` starts, in start order; each is `yagi-meter <name>`.
DAEMONS = ("listen", "serve", "push", "forward")
# Daemons started only when configured.
WANTED = {"forward": lambda config: bool(config.forward.url)}


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
        return args.func(args, config)
    except ConfigError as e:
        print(f"yagi-meter: configuration error: {e}", file=sys.stderr)
        return RET_CONFIG
    except StoreError as e:
        print(f"yagi-meter: Redis error: {e}", file=sys.stderr)
        return RET_CONNECT
    except AccessRefused as e:
        print(f"yagi-meter: configuration error: [amqp] url: {e}", file=sys.stderr)
        return RET_CONFIG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yagi-meter", description=__doc__)
    parser.add_argument(
        "-c", "--config", help="configuration file (else $YAGI_CONFIG, ./yagi.conf, /etc/yagi/yagi.conf)"
    )
    parser.add_argument("--version", action="version", version=f"yagi-meter {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND")

    listen = commands.add_parser("listen", help="consume the configured queues, persist, ack")
    listen.set_defaults(func=cmd_listen)

    serve = commands.add_parser("serve", help="the feed server (development server; production: gunicorn)")
    serve.set_defaults(func=cmd_serve)

    push = commands.add_parser("push", help="deliver WebSub content to subscribers")
    push.set_defaults(func=cmd_push)

    run = commands.add_parser("run", help="every daemon in one process group")
    run.set_defaults(func=cmd_run)

    replay = commands.add_parser("replay", help="ingest notifications from JSON / JSON-lines files")
    replay.add_argument("files", nargs="+", metavar="FILE")
    replay.set_defaults(func=cmd_replay)

    forward = commands.add_parser("forward", help="post events to the AtomPub archive")
    forward.set_defaults(func=cmd_forward)
    forward_actions = forward.add_subparsers(metavar="ACTION")
    dead = forward_actions.add_parser("dead-letters", help="events the archive refused (4xx)")
    dead_actions = dead.add_subparsers(metavar="ACTION", required=True)
    dead_list = dead_actions.add_parser("list", help="show dead letters with the archive's answer")
    dead_list.add_argument("--limit", type=int, default=100)
    dead_list.add_argument("--json", action="store_true", help="one JSON object per line")
    dead_list.set_defaults(func=cmd_dead_letters_list)
    dead_retry = dead_actions.add_parser("retry", help="put dead letters back in the forward outbox")
    dead_retry.add_argument("ids", nargs="*", metavar="ID", help="dead letters to retry (default: all)")
    dead_retry.set_defaults(func=cmd_dead_letters_retry)

    status = commands.add_parser("status", help="counts, queue depths, backlogs, last errors")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(func=cmd_status)

    quarantine = commands.add_parser("quarantine", help="messages that could not become events")
    actions = quarantine.add_subparsers(metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="show quarantined messages with their reasons")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line, body included")
    listing.set_defaults(func=cmd_quarantine_list)
    requeue = actions.add_parser("requeue", help="ingest quarantined messages again")
    requeue.add_argument("ids", nargs="*", metavar="ID", help="entries to requeue (default: all)")
    requeue.set_defaults(func=cmd_quarantine_requeue)

    sample = commands.add_parser(
        "sample-config", help="print yagi.conf.sample: every option, with its default"
    )
    sample.set_defaults(func=cmd_sample_config, needs_config=False)

    check = commands.add_parser(
        "check-redis", help="exit 0 when the configured Redis answers (or is 'embedded'), 3 when it does not"
    )
    check.set_defaults(func=cmd_check_redis)
    return parser


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
    logging.getLogger("pika").setLevel(logging.WARNING)
    # pika logs every passive declare of a missing queue; we handle those.
    logging.getLogger("pika.channel").setLevel(logging.ERROR)


def _start(name: str, config: Config) -> Store:
    """Log the one start-up line and open the store (fails loudly if unreachable)."""
    log.info("yagi-meter %s %s starting: %s", name, __version__, config.describe())
    store = open_store(config)
    ping(store.client)
    warn_if_evicting(store.client)
    return store


# -- listen ----------------------------------------------------------------


def cmd_listen(args: argparse.Namespace, config: Config) -> int:
    from yagi_meter.listener import Listener

    store = _start("listen", config)
    listener = Listener(config, Ingestor(store, config))
    listener.install_signal_handlers()
    listener.run()
    return RET_OK


# -- push ------------------------------------------------------------------


def cmd_push(args: argparse.Namespace, config: Config) -> int:
    from yagi_meter.push import PushWorker

    store = _start("push", config)
    worker = PushWorker(config, store)
    worker.install_signal_handlers()
    worker.run()
    return RET_OK


# -- serve -----------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    """Werkzeug's threaded server on [feeds] host:port; gunicorn runs feeds.wsgi:app in production."""
    from werkzeug.serving import run_simple

    from feeds.app import create_app

    store = _start("serve", config)
    app = create_app(config, store)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(RET_OK))
    log.info(
        "serving feeds on http://%s:%d (public URL %s)", config.feeds.host, config.feeds.port, config.base_url
    )
    run_simple(config.feeds.host, config.feeds.port, app, threaded=True)
    return RET_OK


# -- forward ---------------------------------------------------------------


def cmd_forward(args: argparse.Namespace, config: Config) -> int:
    from yagi_meter.forward import Forwarder

    if not config.forward.url:
        raise ConfigError("[forward] url: empty, so forwarding is off")
    store = _start("forward", config)
    # One Python process posts on one core: the others are forwarders of their
    # own (the outbox's leases keep them from posting the same event).
    env = {**_child_env(args, store), "YAGI_FORWARD_PROCESSES": "1"}
    helpers = [_spawn("forward", env, die_with_parent=True) for _ in range(config.forward.processes - 1)]
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


# -- run -------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    """Start every daemon as a child, restart one that dies, stop all on SIGTERM."""
    store = _start("run", config)
    env = _child_env(args, store)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    names = [name for name in DAEMONS if WANTED.get(name, lambda _: True)(config)]
    children = {name: _spawn(name, env) for name in names}
    while not stopping:
        time.sleep(0.5)
        for name, child in children.items():
            if child.poll() is not None and not stopping:
                log.error("%s exited with %s; restarting it", name, child.returncode)
                children[name] = _spawn(name, env)
    for child in children.values():
        child.send_signal(signal.SIGTERM)
    for name, child in children.items():
        child.wait()
        log.info("%s stopped (exit %s)", name, child.returncode)
    return RET_OK


def _spawn(name: str, env: dict[str, str], die_with_parent: bool = False) -> subprocess.Popen:
    preexec = _die_with_parent if die_with_parent and sys.platform == "linux" else None
    return subprocess.Popen([sys.executable, "-m", "yagi_meter", name], env=env, preexec_fn=preexec)


def _die_with_parent() -> None:
    """In a child, before exec: SIGTERM when the parent dies, so none outlives a kill -9."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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
                    }
                )
            )
        else:
            preview = entry.body[:120].decode("utf-8", errors="replace").replace("\n", " ")
            print(
                f"{entry.id}  {entry.at:%Y-%m-%d %H:%M:%S}  {entry.source}  {entry.reason}\n"
                f"    {len(entry.body)} bytes: {preview}"
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
            # One entry at a time: each is removed in the same write that stores it.
            total.add(ingestor.ingest([Message(entry.body, entry.source)], requeued=[entry.id]))
    print(
        f"requeued {len(found)}: stored {total.stored}, duplicates {total.duplicates}, "
        f"conflicts {total.conflicts}, still quarantined {total.quarantined}"
    )
    for missing in sorted(wanted - found):
        print(f"yagi-meter: no quarantined message {missing}", file=sys.stderr)
    return RET_ERROR if wanted - found else RET_OK


def _entry_seq(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)
