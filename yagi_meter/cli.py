"""The ``yagi-meter`` command: one subcommand per daemon or operator task."""

from __future__ import annotations

import argparse
import configparser
import logging
import logging.config
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from yagi_meter import __version__, daemon, operations, supervisor
from yagi_meter import config as config_module
from yagi_meter import copy as copy_module
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
        lambda args, config: daemon.listen(config),
        "consume the configured RabbitMQ queues, store each batch, then ack it",
    )
    _command(
        commands,
        "retention",
        lambda args, config: daemon.retention(config),
        "remove events older than [redis] retention_days, in small steps, until stopped",
    )
    _command(
        commands,
        "serve",
        lambda args, config: daemon.serve(config),
        "the feed server and WebSub hub on [feeds] host:port (development server; "
        "in production run gunicorn -c conf/gunicorn.conf.py feeds.wsgi:app)",
    )
    _command(
        commands,
        "push",
        lambda args, config: daemon.push(config),
        "verify WebSub subscriptions and deliver new entries to subscribers",
    )
    _command(
        commands,
        "run",
        lambda args, config: supervisor.run(config, args.config),
        "every daemon (listen, retention, serve, push, forward when [forward] url is set, audit when "
        "[audit] enabled) as a child "
        "process, for one machine; a child that dies is restarted with backoff",
    )
    replay = _command(
        commands,
        "replay",
        lambda args, config: operations.replay(config, args.files),
        "store notifications from files through the listener's path (backfill, demo); "
        "a message already stored is counted as a duplicate",
    )
    replay.add_argument(
        "files", nargs="+", metavar="FILE", help="a JSON object, a JSON array of them, or JSON lines"
    )

    copy = _command(
        commands,
        "copy",
        lambda args, config: copy_module.copy(config, args.from_config),
        "copy every event of another store (another Redis, prefix or partition count) into the "
        "configured one, in the source's order, keeping ingest times; a copy run again goes on "
        "where it stopped",
    )
    copy.add_argument(
        "--from-config",
        required=True,
        metavar="PATH",
        help="a configuration file whose [redis] section names the source store (read only; "
        "the environment is not read for it)",
    )

    forward = _command(
        commands,
        "forward",
        lambda args, config: daemon.forward(config, args.config),
        "without an action: run the forwarder daemon, which posts events to the AtomPub archive "
        "at [forward] url (it starts [forward] processes - 1 helper processes itself)",
    )
    forward.usage = "%(prog)s [-h] [ACTION ...]"  # the action is optional
    forward_actions = forward.add_subparsers(metavar="ACTION", title="actions")
    dead_actions = _group(forward_actions, "dead-letters", "events the archive refused for good (4xx)")
    dead_list = _command(
        dead_actions,
        "list",
        lambda args, config: operations.dead_letters_list(config, args.limit, args.json),
        "show dead letters with the archive's answer",
    )
    _limit(dead_list, "dead letters")
    dead_list.add_argument("--json", action="store_true", help="one JSON object per line, the answer whole")
    dead_retry = _command(
        dead_actions,
        "retry",
        lambda args, config: operations.dead_letters_retry(config, args.ids),
        "put dead letters back in the forward outbox",
    )
    dead_retry.add_argument("ids", nargs="*", metavar="ID", help="dead letters to retry (default: all)")

    audit = _command(
        commands,
        "audit",
        lambda args, config: daemon.audit(config),
        "without an action: run the audit daemon, which judges archived exists events against "
        "their resource's lifecycle and reports resources with no exists ([audit])",
    )
    audit.usage = "%(prog)s [-h] [ACTION ...]"  # the action is optional
    audit_actions = audit.add_subparsers(metavar="ACTION", title="actions")
    check = _command(
        audit_actions,
        "check",
        lambda args, config: operations.audit_check(config, args.since, args.reset, args.json),
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
        lambda args, config: operations.status(config, args.json),
        "counts, RabbitMQ queue depths, outbox backlogs, dead letters, last errors",
    )
    status.add_argument("--json", action="store_true", help="one JSON object on one line")

    actions = _group(
        commands, "quarantine", "messages that could not become events, kept whole with the reason"
    )
    listing = _command(
        actions,
        "list",
        lambda args, config: operations.quarantine_list(config, args.limit, args.json),
        "show quarantined messages with their reasons, oldest first",
    )
    _limit(listing, "messages")
    listing.add_argument("--json", action="store_true", help="one JSON object per line, body included")
    requeue = _command(
        actions,
        "requeue",
        lambda args, config: operations.quarantine_requeue(config, args.ids),
        "store quarantined messages again (after a fix); one still bad is quarantined anew",
    )
    requeue.add_argument("ids", nargs="*", metavar="ID", help="entries to requeue (default: all)")
    delete = _command(
        actions,
        "delete",
        lambda args, config: operations.quarantine_delete(config, args.ids, args.all),
        "delete quarantined messages for good",
    )
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", default=[], metavar="ID", help="entries to delete")
    which.add_argument("--all", action="store_true", help="delete every quarantined message")

    sub_actions = _group(commands, "subscriptions", "verified WebSub subscriptions of the hub")
    sub_list = _command(
        sub_actions,
        "list",
        lambda args, config: operations.subscriptions_list(config, args.json),
        "show subscriptions: id, lease end, queued entries, topic, callback",
    )
    sub_list.add_argument("--json", action="store_true", help="one JSON object per line")
    sub_remove = _command(
        sub_actions,
        "remove",
        lambda args, config: operations.subscriptions_remove(config, args.ids),
        "remove subscriptions and their queued entries (the subscriber may subscribe again)",
    )
    sub_remove.add_argument("ids", nargs="+", metavar="ID", help="subscription ids, as `list` shows them")
    dict_actions = _group(commands, "dictionary", "zstd dictionaries event bodies are compressed with")
    dict_train = _command(
        dict_actions,
        "train",
        lambda args, config: operations.dictionary_train(config, args.samples, args.force),
        "train a dictionary on the store's recent events (across event types), store it and "
        "make it current; old events keep theirs",
    )
    dict_train.add_argument(
        "--samples",
        type=int,
        default=None,
        metavar="N",
        help="recent events to train on (default: [redis] dictionary_samples)",
    )
    dict_train.add_argument(
        "--force",
        action="store_true",
        help="store it even when it compresses no smaller than the current one",
    )
    _command(
        dict_actions,
        "list",
        lambda args, config: operations.dictionary_list(config),
        "every stored dictionary: id, size, created, current",
    )
    sample = _command(
        commands,
        "sample-config",
        lambda args, config: _print(config_module.render_sample()),
        "print yagi.conf.sample: every option, with its default",
    )
    sample.set_defaults(needs_config=False)
    _command(
        commands,
        "check-redis",
        lambda args, config: operations.check_redis(config),
        "exit 0 when the configured Redis answers (or is 'embedded'), 3 when it does not",
    )
    return parser


# What a subcommand runs: the parsed arguments and the configuration (None for
# sample-config, which needs none) in, the exit code out.
Command = Callable[[argparse.Namespace, Any], int]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _command(commands: Commands, name: str, func: Command, text: str) -> argparse.ArgumentParser:
    """A subcommand whose short help and description are the same text."""
    command = commands.add_parser(name, help=text, description=text)
    command.set_defaults(func=func)
    return command


def _group(commands: Commands, name: str, text: str) -> Commands:
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


def _print(text: str) -> int:
    sys.stdout.write(text)
    return RET_OK
