"""The ``cdp-hub`` command line.

    cdp_hub/cli/__init__.py   main(): the parser, logging (cdp_hub/logs.py), running a handler, errors to exit codes
    cdp_hub/cli/helpers.py    what the command modules share: command_group(), print_json(), store_for()
    cdp_hub/cli/core.py       schema, plugins, migrate, run, serve, dlq, demo

The other sub-commands live with the code they drive: a module that defines ``register(sub)`` and is named
in :data:`COMMAND_MODULES` adds its commands. A handler is ``handler(args, settings) -> int`` (sync or async).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cdp_hub.config import Settings, load_settings
from cdp_hub.errors import CdpHubError
from cdp_hub.logs import LOG_FORMATS, configure_logging
from cdp_hub.redact import collect_secrets, redact, register_secrets

__all__ = ["COMMAND_MODULES", "main"]

COMMAND_MODULES = (
    "cdp_hub.cli.core",          # schema, plugins, migrate, run, serve, dlq, demo
    "cdp_hub.cli.config",        # config show, config check
    "cdp_hub.triggers.cli",      # scenarios validate, list, simulate
    "cdp_hub.connector.cli",     # connectors list/spec/check/state, sync, ingest-file
    "cdp_hub.scaffold.cli",      # new connector, new channel
    "cdp_hub.resolver.cli",      # identity, profiles, import
    "cdp_hub.resolver.fuzzy.cli",  # identity suggest, identity suggestions
    "cdp_hub.segments.cli",      # segments, triggers run-daily
    "cdp_hub.delivery.cli",      # templates
    "cdp_hub.delivery.recommend_cli",  # recommend refresh/show
    "cdp_hub.jobs.cli",          # jobs list/run/history
    "cdp_hub.campaigns.cli",     # campaigns validate/list/preview/launch/pause/resume/cancel/status
    "cdp_hub.reports.cli",       # report scenarios (table, --json, --csv, --html)
)

Handler = Callable[[argparse.Namespace, Settings], Any]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdp-hub", description="Customer Data Platform integration hub")
    parser.add_argument("--config", "-c", help="TOML config file (default: $CDP_HUB_CONFIG or ./cdp-hub.toml)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING (default; or log_level in the config), ERROR")
    parser.add_argument("--log-format", choices=LOG_FORMATS,
                        help="text (default; or log_format in the config) or json: one JSON object per line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that part of the CLI is not there; the rest works
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        settings = load_settings(args.config)
        register_secrets(collect_secrets(settings))  # before anything can log or fail with one in its text
        configure_logging(args.log_level or settings.log_level, args.log_format or settings.log_format)
        result = handler(args, settings)
        if inspect.isawaitable(result):
            result = asyncio.run(result)  # type: ignore[arg-type]
        return int(result or 0)
    except CdpHubError as exc:
        print(f"cdp-hub: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:  # a missing file, a refused connection: say which, no traceback
        print(f"cdp-hub: error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
