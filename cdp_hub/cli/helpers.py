"""What the command modules of the ``cdp-hub`` CLI share: how a command is declared, and its output helpers.

A command module declares its commands with click and exposes them as ``commands`` (a list the CLI attaches
to the ``cdp-hub`` group, :func:`attach`):

    commands: list[click.Command] = []
    dlq = group(commands, "dlq", "browse and replay the dead-letter queue")

    @command(dlq, "list", help="dead letters, newest first")
    @click.option("--limit", type=int, default=50, show_default=True, help="at most this many")
    @json_option()
    async def cmd_dlq_list(args: Args, settings: Settings) -> int: ...

Parsing ``cdp-hub dlq list --limit 5`` runs no code of the command: it makes a :class:`Call` (the handler,
its options as ``args``, the global options); ``cdp_hub.cli.main`` loads the settings, configures logging
and runs the handler (sync or async), and turns its errors into the documented exit codes. Tests can parse
a command line with ``cdp_hub.cli.parse`` and run the handler with settings of their own.

Every leaf command also accepts the global options (``--config``, ``--log-level``, ``--log-format``), so
``cdp-hub run --log-level INFO`` works as ``cdp-hub --log-level INFO run`` does; the one after the
sub-command wins.

Two modules may add to one group (``new connector`` and ``new channel``; ``identity dry-run`` and
``identity suggest``): each declares a group of that name and :func:`attach` merges them.

    print_json(data)          indented JSON on stdout (str() for dates, ids, paths)
    print_table(cols, rows, plain=...)   a rich table on a terminal, plain lines when piped
    store_for(settings)       the Store the settings describe (not started yet)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cdp_hub.config import Settings
from cdp_hub.logs import LOG_FORMATS, LOG_LEVELS

if TYPE_CHECKING:
    from cdp_hub.store import Store

__all__ = [
    "GLOBAL_OPTION_NAMES",
    "ISO_TIME",
    "Args",
    "Call",
    "Handler",
    "HandlerCommand",
    "attach",
    "command",
    "global_options",
    "group",
    "iso_datetime",
    "json_option",
    "print_json",
    "print_table",
    "store_for",
]

Args = SimpleNamespace
"""The parsed options and arguments of a command, by name (``args.limit``, ``args.json``)."""

Handler = Callable[[Any, Settings], Any]
"""``handler(args, settings) -> int`` or an awaitable of it: what a command does."""

GLOBAL_OPTION_NAMES = ("config", "log_level", "log_format")

F = TypeVar("F", bound=Callable[..., Any])


def global_options() -> list[click.Option]:
    """The options every command accepts, before or after its name (fresh objects: click owns each one)."""
    return [
        click.Option(["--config", "-c"], metavar="FILE",
                     help="TOML config file (default: $CDP_HUB_CONFIG or ./cdp-hub.toml)"),
        click.Option(["--log-level"], type=click.Choice(LOG_LEVELS, case_sensitive=False),
                     help="log level (default: WARNING, or log_level in the config)"),
        click.Option(["--log-format"], type=click.Choice(LOG_FORMATS),
                     help="text (default; or log_format in the config) or json: one JSON object per line"),
    ]


@dataclass(frozen=True)
class Call:
    """A parsed command line: the handler to run, its arguments, and the global options in force."""

    handler: Handler
    args: Args
    config: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    uses_settings: bool = True
    """False for a command that must work with a broken configuration (``completion``)."""


class HandlerCommand(click.Command):
    """A leaf command whose invocation is a :class:`Call` of ``handler`` (run later by ``main``).

    ``defaults`` are fixed arguments of this command (``serve`` is ``run`` without stages);
    ``one_of`` lists groups of options of which exactly one must be given, ``at_most_one_of`` groups of which
    at most one may be (``--json | --csv | --html``); a usage error otherwise.
    """

    def __init__(self, name: str, handler: Handler, *, defaults: dict[str, Any] | None = None,
                 one_of: Sequence[Sequence[str]] = (), at_most_one_of: Sequence[Sequence[str]] = (),
                 uses_settings: bool = True, **attrs: Any) -> None:
        attrs.setdefault("context_settings", {}).setdefault("max_content_width", 110)
        super().__init__(name, callback=self._call, **attrs)
        self.handler = handler
        self.defaults = dict(defaults or {})
        self.one_of = [tuple(names) for names in one_of]
        self.at_most_one_of = [tuple(names) for names in at_most_one_of]
        self.uses_settings = uses_settings

    def _call(self, **options: Any) -> Call:
        ctx = click.get_current_context()
        outer = ctx.find_root().params
        chosen = {name: options.pop(name, None) for name in GLOBAL_OPTION_NAMES}
        for names in self.one_of:
            given = [n for n in names if options.get(n) not in (None, False, ())]
            if len(given) != 1:
                flags = " | ".join(self._flag(n) for n in names)
                raise click.UsageError(f"give exactly one of {flags}", ctx)
        for names in self.at_most_one_of:
            given = [n for n in names if options.get(n) not in (None, False, ())]
            if len(given) > 1:
                flags = " | ".join(self._flag(n) for n in names)
                raise click.UsageError(f"give at most one of {flags}", ctx)
        in_force = {name: chosen[name] if chosen[name] is not None else outer.get(name)
                    for name in GLOBAL_OPTION_NAMES}
        return Call(self.handler, Args(**{**self.defaults, **options}), uses_settings=self.uses_settings,
                    **in_force)

    def _flag(self, name: str) -> str:
        for param in self.params:
            if param.name == name and isinstance(param, click.Option):
                return param.opts[0]
        return name


def command(parent: click.Group | list[click.Command], name: str, *, help: str,
            defaults: dict[str, Any] | None = None, one_of: Sequence[Sequence[str]] = (),
            at_most_one_of: Sequence[Sequence[str]] = (), uses_settings: bool = True,
            **attrs: Any) -> Callable[[F], F]:
    """Declare ``handler`` (the decorated function, below its ``click.option`` decorators) as the command
    ``name`` of ``parent`` (a group, or a module's list of top-level commands). The function itself is
    returned unchanged: it stays callable as ``handler(args, settings)``."""

    def declare(handler: F) -> F:
        # The options decorated below this command, and only those: taken off the function, so a second
        # command of the same handler stacked above (``run`` over ``serve``) starts with its own list.
        own = list(reversed(handler.__dict__.pop("__click_params__", [])))  # click stacks them bottom-up
        cmd = HandlerCommand(name, handler, defaults=defaults, one_of=one_of, at_most_one_of=at_most_one_of,
                             uses_settings=uses_settings, params=[*own, *global_options()], help=help, **attrs)
        if isinstance(parent, click.Group):
            parent.add_command(cmd)
        else:
            parent.append(cmd)
        return handler

    return declare


def group(parent: click.Group | list[click.Command], name: str, help: str) -> click.Group:
    """The command group ``cdp-hub NAME`` (or a sub-group of ``parent``); bare, it prints its help and exits
    with 2 (a usage error)."""
    made = click.Group(name, help=help, no_args_is_help=True, context_settings={"max_content_width": 110})
    if isinstance(parent, click.Group):
        parent.add_command(made)
    else:
        parent.append(made)
    return made


def attach(parent: click.Group, commands: Iterable[click.Command]) -> None:
    """Add ``commands`` to ``parent``. A group whose name ``parent`` already has is merged into it (its
    commands join the existing ones; the first group's help stays); the modules' own group objects are never
    changed, so the CLI can be built any number of times."""
    for cmd in commands:
        name = cmd.name or ""
        existing = parent.commands.get(name)
        if isinstance(cmd, click.Group):
            if existing is None:
                existing = click.Group(name, help=cmd.help, no_args_is_help=True,
                                       context_settings=dict(cmd.context_settings))
                parent.add_command(existing)
            if not isinstance(existing, click.Group):
                raise RuntimeError(f"cdp-hub {name}: a command and a group of the same name")
            attach(existing, cmd.commands.values())
        elif existing is None or existing is cmd:
            parent.add_command(cmd)
        else:
            raise RuntimeError(f"cdp-hub {name}: declared twice")


def json_option(help: str = "print the result as JSON") -> Callable[[F], F]:
    """``--json``: machine-readable output (``args.json``)."""
    return click.option("--json", "json", is_flag=True, help=help)


def iso_datetime(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """An option's value as an ISO 8601 date or time (``2026-11-30``, ``2026-11-30T10:00:00+03:00``); use as
    ``click.option(..., callback=iso_datetime, metavar=ISO_TIME)``."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time (e.g. 2026-11-30T10:00:00+00:00)",
                                 ctx, param) from None


ISO_TIME = "ISO-TIME"


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                plain: Callable[[Sequence[Any]], str]) -> None:
    """``rows`` as a rich table on a terminal; piped or redirected, each row as ``plain(row)``: the stable
    one-line-per-row text scripts and ``grep`` rely on (``--json`` for programs)."""
    if not _is_terminal(sys.stdout):
        for row in rows:
            print(plain(row))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(*columns, header_style="bold")
    for row in rows:
        table.add_row(*(Text("" if value is None else str(value)) for value in row))  # Text: no markup
    Console().print(table)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


def print_json(data: Any, *, ensure_ascii: bool = False) -> None:
    """``data`` as indented JSON on stdout; values JSON has no type for (datetimes, UUIDs, paths) as ``str()``."""
    print(json.dumps(data, ensure_ascii=ensure_ascii, indent=2, default=str))


def store_for(settings: Settings, *, pool_size: int = 10) -> Store:
    """The PostgreSQL (or embedded) store of ``settings``, to use as ``async with store_for(settings) as s``."""
    from cdp_hub.store import Store

    return Store.for_settings(settings, pool_size=pool_size)

