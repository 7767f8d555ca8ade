"""``cdp-hub new connector NAME`` and ``cdp-hub new channel NAME``: plugin packages whose tests pass as generated.

    cdp-hub new connector acme_shop [--dir D] [--force]
    cdp-hub new channel acme_sms [--kind sms] [--address-kind phone] [--dir D] [--force]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cdp_hub.cli.helpers import SubParsers, command_group
from cdp_hub.config import Settings
from cdp_hub.scaffold import CHANNEL_KINDS, scaffold

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    new = command_group(sub, "new", "scaffold a plugin package", metavar="WHAT")
    p = new.add_parser("connector", help="a connector plugin package whose conformance tests pass")
    p.add_argument("name", help="connector type name: lower-case letters, digits, _ (e.g. acme_shop)")
    p.add_argument("--dir", type=Path, default=Path("."), help="where to create the package folder")
    p.add_argument("--force", action="store_true", help="write into an existing folder")
    p.set_defaults(handler=cmd_new_connector)

    p = new.add_parser("channel", help="a channel plugin package whose conformance tests pass")
    p.add_argument("name", help="channel type name: lower-case letters, digits, _ (e.g. acme_sms)")
    p.add_argument("--kind", choices=CHANNEL_KINDS, default="sms")
    p.add_argument("--address-kind", help="identity kind of the recipient (default from --kind)")
    p.add_argument("--dir", type=Path, default=Path("."), help="where to create the package folder")
    p.add_argument("--force", action="store_true", help="write into an existing folder")
    p.set_defaults(handler=cmd_new_channel)


def cmd_new_connector(args: argparse.Namespace, settings: Settings) -> int:
    root = scaffold("connector", args.name, args.dir, force=args.force)
    print(f"created {root}\n  cd {root} && pip install -e '.[dev]' && pytest")
    return 0


def cmd_new_channel(args: argparse.Namespace, settings: Settings) -> int:
    root = scaffold("channel", args.name, args.dir, force=args.force, channel_kind=args.kind,
                    address_kind=args.address_kind)
    print(f"created {root}", file=sys.stderr)
    print(f"next: cd {root} && pip install -e '.[test]' && pytest")
    return 0
