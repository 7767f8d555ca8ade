"""What the command modules of the ``cdp-hub`` CLI share.

    command_group(sub, "dlq", "browse and replay ...")   the sub-commands of ``cdp-hub dlq``, created once;
                                                         a second module asking for the group gets the same
    print_json(data)                                     indented JSON on stdout (str() for dates, ids, paths)
    store_for(settings)                                  the Store the settings describe (not started yet)

A command module defines ``register(sub: SubParsers)``; ``sub`` is what ``ArgumentParser.add_subparsers()``
returned. argparse gives that object no public type, so :class:`SubParsers` describes the part of it the
modules use.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from weakref import WeakKeyDictionary

from cdp_hub.config import Settings

if TYPE_CHECKING:
    from cdp_hub.store import Store

__all__ = ["SubParsers", "command_group", "print_json", "store_for"]


class SubParsers(Protocol):
    """The sub-commands of a parser, as returned by ``ArgumentParser.add_subparsers()``."""

    @property
    def choices(self) -> Mapping[str, argparse.ArgumentParser]:
        """The parser of each sub-command, by name."""

    def add_parser(self, name: str, *, help: str | None = ..., description: str | None = ...,
                   ) -> argparse.ArgumentParser: ...


# The groups made by command_group, by parser: a later module adding to ``new`` or ``identity`` finds the
# group the first one made. Weak keys: a parser built and dropped (tests build many) takes its group along.
_GROUPS: WeakKeyDictionary[argparse.ArgumentParser, SubParsers] = WeakKeyDictionary()


def command_group(sub: SubParsers, name: str, help: str, *, metavar: str | None = None,
                  required: bool = True) -> SubParsers:
    """The sub-commands of ``cdp-hub NAME`` (``dest`` is ``NAME_command``), created on first use.

    Modules that add to the same group (``new connector`` and ``new channel``; ``identity dry-run`` and
    ``identity suggest``) each call this; the first call creates the command with its ``help``, ``metavar``
    and ``required``, later calls get that group back. ``required=False``: the bare command prints its help
    and exits with 2 instead of an argparse usage error.
    """
    parser = sub.choices.get(name)
    if parser is None:
        parser = sub.add_parser(name, help=help)
    else:  # an earlier module made the command
        group = _GROUPS.get(parser) or _group_made_elsewhere(parser)
        if group is not None:
            return group
    group = _GROUPS[parser] = parser.add_subparsers(dest=f"{name}_command", metavar=metavar, required=required)
    return group


def _group_made_elsewhere(parser: argparse.ArgumentParser) -> SubParsers | None:
    """The sub-commands of a command that code outside :func:`command_group` made with plain argparse.

    argparse keeps them in its private list of actions and offers no public way to them; this is the one
    place of the CLI that reads it, and only for a command that exists but whose group this module did not
    make.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def print_json(data: Any, *, ensure_ascii: bool = False) -> None:
    """``data`` as indented JSON on stdout; values JSON has no type for (datetimes, UUIDs, paths) as ``str()``."""
    print(json.dumps(data, ensure_ascii=ensure_ascii, indent=2, default=str))


def store_for(settings: Settings, *, pool_size: int = 10) -> Store:
    """The PostgreSQL (or embedded) store of ``settings``, to use as ``async with store_for(settings) as s``."""
    from cdp_hub.store import Store

    return Store(settings.postgres_dsn, dialect=settings.dialect, pool_size=pool_size, data_dir=settings.data_dir)
