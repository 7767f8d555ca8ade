"""The shared pieces of the command line: sub-command groups several modules add to, JSON output."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

import pytest

from cdp_hub.cli import build_parser
from cdp_hub.cli.helpers import command_group, print_json


def test_a_group_is_created_once_and_shared() -> None:
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers(dest="command")
    first = command_group(sub, "new", "scaffold", metavar="WHAT")
    first.add_parser("connector").set_defaults(what="connector")
    second = command_group(sub, "new", "another help text is ignored")
    second.add_parser("channel").set_defaults(what="channel")
    assert first is second
    assert parser.parse_args(["new", "channel"]).what == "channel"
    assert parser.parse_args(["new", "connector"]).new_command == "connector"
    with pytest.raises(SystemExit):  # required by default: a bare `x new` is a usage error
        parser.parse_args(["new"])


def test_groups_belong_to_their_parser() -> None:
    a = argparse.ArgumentParser().add_subparsers()
    b = argparse.ArgumentParser().add_subparsers()
    assert command_group(a, "g", "") is not command_group(b, "g", "")


def test_an_optional_group_leaves_the_command_without_handler(capsys: pytest.CaptureFixture[str]) -> None:
    from cdp_hub.cli import main

    assert main(["identity"]) == 2  # prints the help of the whole CLI, as before
    assert "COMMAND" in capsys.readouterr().out


def test_the_identity_group_has_the_commands_of_both_modules() -> None:
    parser = build_parser()
    for command in ("dry-run", "conflicts", "suggest", "suggestions"):
        assert parser.parse_args(["identity", command, *(["rules.toml"] if command == "dry-run" else [])]
                                 ).identity_command == command


def test_print_json_writes_what_json_cannot_type_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    print_json({"name": "Анна", "at": datetime(2026, 1, 2, tzinfo=UTC)})
    out = capsys.readouterr().out
    assert "Анна" in out and json.loads(out) == {"name": "Анна", "at": "2026-01-02 00:00:00+00:00"}
    print_json({"name": "Анна"}, ensure_ascii=True)
    assert "\\u0410" in capsys.readouterr().out
