"""``cdp-hub new connector NAME`` and ``cdp-hub new channel NAME``: plugin packages whose tests pass as generated.

    cdp-hub new connector acme_shop [--dir D] [--force]
    cdp-hub new channel acme_sms [--kind sms] [--address-kind phone] [--dir D] [--force]
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cdp_hub.cli.helpers import Args, command, group, json_option, print_json
from cdp_hub.config import Settings
from cdp_hub.scaffold import CHANNEL_KINDS, scaffold

__all__ = ["commands"]


PATH = click.Path(path_type=Path)

commands: list[click.Command] = []
new = group(commands, "new", "scaffold a plugin package")


@command(new, "connector", help="a connector plugin package NAME (lower-case letters, digits, _; e.g. acme_shop) "
                                "whose conformance tests pass")
@click.argument("name")
@click.option("--dir", type=PATH, default=Path("."), help="where to create the package folder (default: here)")
@click.option("--force", is_flag=True, help="write into an existing folder")
@json_option("print the created folder as JSON")
def cmd_new_connector(args: Args, settings: Settings) -> int:
    root = scaffold("connector", args.name, args.dir, force=args.force)
    if args.json:
        print_json({"created": str(root)})
        return 0
    print(f"created {root}\n  cd {root} && pip install -e '.[dev]' && pytest")
    return 0


@command(new, "channel", help="a channel plugin package NAME (lower-case letters, digits, _; e.g. acme_sms) "
                              "whose conformance tests pass")
@click.argument("name")
@click.option("--kind", type=click.Choice(CHANNEL_KINDS), default="sms", show_default=True,
              help="what the channel sends")
@click.option("--address-kind", help="identity kind of the recipient (default from --kind)")
@click.option("--dir", type=PATH, default=Path("."), help="where to create the package folder (default: here)")
@click.option("--force", is_flag=True, help="write into an existing folder")
@json_option("print the created folder as JSON")
def cmd_new_channel(args: Args, settings: Settings) -> int:
    root = scaffold("channel", args.name, args.dir, force=args.force, channel_kind=args.kind,
                    address_kind=args.address_kind)
    if args.json:
        print_json({"created": str(root)})
        return 0
    print(f"created {root}", file=sys.stderr)
    print(f"next: cd {root} && pip install -e '.[test]' && pytest")
    return 0
