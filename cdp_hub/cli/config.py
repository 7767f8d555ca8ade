"""``cdp-hub config``: what the hub would run with, fit to show (secrets as ``***``, DSNs without passwords).

    cdp-hub config show [--json]     the effective settings: the TOML file, the environment and the defaults
"""

from __future__ import annotations

import argparse
import json

from cdp_hub.cli.helpers import SubParsers, command_group, print_json
from cdp_hub.config import Settings
from cdp_hub.redact import public_view

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    group = command_group(sub, "config", "show and check the configuration")
    show = group.add_parser("show", help="the effective settings, secrets as *** and DSNs without passwords")
    show.add_argument("--json", action="store_true", help="print the settings as JSON")
    show.set_defaults(handler=cmd_config_show)


def cmd_config_show(args: argparse.Namespace, settings: Settings) -> int:
    view = public_view(settings)
    if args.json:
        print_json(view)
        return 0
    for key, value in view.items():
        print(f"{key} = {json.dumps(value, ensure_ascii=False, default=str)}")
    return 0
