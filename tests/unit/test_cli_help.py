"""`yagi-meter --help` and every subcommand's help are complete."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from yagi_meter.cli import _parser


def subcommands(
    parser: argparse.ArgumentParser, path: str = "yagi-meter"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from subcommands(child, f"{path} {name}")


def test_every_subcommand_and_option_has_help() -> None:
    seen = []
    for path, parser in subcommands(_parser()):
        seen.append(path)
        assert parser.description, f"{path} has no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {choice.dest for choice in action._choices_actions if choice.help}
                assert helped == set(action.choices), f"{path}: a subcommand without help"
            else:
                assert action.help, f"{path}: {action.option_strings or action.dest} has no help"
    assert {
        "yagi-meter quarantine delete",
        "yagi-meter subscriptions list",
        "yagi-meter subscriptions remove",
        "yagi-meter forward dead-letters retry",
    } <= set(seen)


def test_forward_help_says_it_runs_the_daemon_without_an_action() -> None:
    [(_, forward)] = [(p, c) for p, c in subcommands(_parser()) if p == "yagi-meter forward"]
    assert "without an action: run the forwarder daemon" in forward.format_help()
    assert "[ACTION ...]" in forward.format_usage()
