"""The shared pieces of the command line: declaring commands, groups several modules add to, JSON output."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click
import pytest

from cdp_hub.cli import build_cli, parse
from cdp_hub.cli.helpers import Args, Call, attach, command, group, print_json
from cdp_hub.config import Settings


def _connector(args: Args, settings: Settings) -> int:
    return 0


def _channel(args: Args, settings: Settings) -> int:
    return 0


def _parse(root: click.Group, argv: list[str]) -> Call:
    call = root.main(argv, standalone_mode=False)
    assert isinstance(call, Call)
    return call


def test_groups_of_the_same_name_from_two_modules_are_merged() -> None:
    first: list[click.Command] = []
    command(group(first, "new", "scaffold"), "connector", help="a connector")(_connector)
    second: list[click.Command] = []
    command(group(second, "new", "another help text is ignored"), "channel", help="a channel")(_channel)
    root = click.Group("x")
    attach(root, first)
    attach(root, second)
    merged = root.commands["new"]
    assert isinstance(merged, click.Group) and merged.help == "scaffold"
    assert _parse(root, ["new", "channel"]).handler is _channel
    assert _parse(root, ["new", "connector"]).handler is _connector
    with pytest.raises(click.UsageError):  # a bare `x new` is a usage error (exit 2), after its help
        root.main(["new"], standalone_mode=False)
    # The modules' own groups are left as declared: the CLI can be built again and again.
    assert set(first[0].commands) == {"connector"}  # type: ignore[attr-defined]


def test_each_build_has_its_own_groups() -> None:
    assert build_cli().commands["identity"] is not build_cli().commands["identity"]


def test_a_command_declared_twice_is_refused() -> None:
    one: list[click.Command] = []
    command(one, "same", help="one")(_connector)
    other: list[click.Command] = []
    command(other, "same", help="other")(_channel)
    root = click.Group("x")
    attach(root, one)
    with pytest.raises(RuntimeError, match="declared twice"):
        attach(root, other)


def test_a_bare_group_prints_its_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from cdp_hub.cli import main

    assert main(["identity"]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_the_identity_group_has_the_commands_of_both_modules() -> None:
    from cdp_hub.resolver import cli as resolver_cli
    from cdp_hub.resolver.fuzzy import cli as fuzzy_cli

    handlers = {"dry-run": resolver_cli.cmd_dry_run, "conflicts": resolver_cli.cmd_conflicts,
                "suggest": fuzzy_cli.cmd_suggest, "suggestions": fuzzy_cli.cmd_suggestions}
    for name, handler in handlers.items():
        call = parse(["identity", name, *(["rules.toml"] if name == "dry-run" else [])])
        assert isinstance(call, Call) and call.handler is handler


def test_exactly_one_of_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from cdp_hub.cli import main

    assert main(["profiles", "show"]) == 2
    assert main(["profiles", "show", "--email", "a@example.com", "--phone", "+79161234567"]) == 2
    assert "give exactly one of --email | --phone | --kind | --id" in capsys.readouterr().err


def test_print_json_writes_what_json_cannot_type_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    print_json({"name": "Анна", "at": datetime(2026, 1, 2, tzinfo=UTC)})
    out = capsys.readouterr().out
    assert "Анна" in out and json.loads(out) == {"name": "Анна", "at": "2026-01-02 00:00:00+00:00"}
    print_json({"name": "Анна"}, ensure_ascii=True)
    assert "\\u0410" in capsys.readouterr().out
