"""``cdp-hub config``: what the hub would run with, and whether it can.

    cdp-hub config show [--json]     the effective settings (file, environment, defaults): secrets as ``***``,
                                     DSNs without passwords
    cdp-hub config check [--json] [--offline]
                                     the settings (already loaded, or the command fails with exit 3 naming the
                                     field), then every channel and connector instance's options (their
                                     plugins' models), the scenarios and their references, the jobs, and (unless
                                     --offline) a connection to the bus, PostgreSQL and Redis

Exit codes of ``config check``: 0 everything is fine; 3 a channel, connector, scenario or job is misconfigured;
4 a backend is unreachable (3 wins when both); 3 also when the settings themselves are invalid (reported
before any check runs, as by every command).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from cdp_hub.cli.helpers import Args, command, group, json_option, print_json
from cdp_hub.config import ChannelInstance, ConnectorInstance, Settings
from cdp_hub.errors import ConfigurationError
from cdp_hub.redact import public_view, redact_url

__all__ = ["EXIT_MISCONFIGURED", "EXIT_UNREACHABLE", "commands"]

EXIT_MISCONFIGURED = 3
EXIT_UNREACHABLE = 4


commands: list[click.Command] = []
config = group(commands, "config", "show and check the configuration")


@command(config, "show", help="the effective settings, secrets as *** and DSNs without passwords")
@json_option("print the settings as JSON")
def cmd_config_show(args: Args, settings: Settings) -> int:
    view = public_view(settings)
    if args.json:
        print_json(view)
        return 0
    for key, value in view.items():
        print(f"{key} = {json.dumps(value, ensure_ascii=False, default=str)}")
    return 0


@command(config, "check", help="validate every channel, connector, scenario and job, and reach the bus, "
                               "PostgreSQL and Redis (exit 0 ok, 3 misconfigured, 4 unreachable)")
@json_option("print the results as JSON")
@click.option("--offline", is_flag=True, help="do not connect to the bus, PostgreSQL or Redis")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="seconds to wait for each backend")
async def cmd_config_check(args: Args, settings: Settings) -> int:
    from cdp_hub.checks import instance_problems, reachability
    from cdp_hub.jobs.kinds import check_options
    from cdp_hub.plugins import get_registry
    from cdp_hub.triggers.cli import check_scenarios

    rows: list[dict[str, Any]] = []

    def row(kind: str, name: str, status: str, detail: str = "") -> None:
        rows.append({"kind": kind, "name": name, "status": status, "detail": detail})

    registry = get_registry()
    for failure in registry.failures:
        row("plugin", failure.name, "invalid", f"failed to load: {failure.error}")
    problems = {(p.kind, p.name): p.reason for p in instance_problems(settings, registry)}
    configured: tuple[tuple[str, Mapping[str, ChannelInstance | ConnectorInstance]], ...] = (
        ("channel", settings.channels), ("connector", settings.connectors))
    for kind, instances in configured:
        for name, instance in sorted(instances.items()):
            if not instance.enabled:
                row(kind, name, "disabled", instance.type)
            elif (kind, name) in problems:
                row(kind, name, "invalid", problems[kind, name])
            else:
                row(kind, name, "ok", instance.type)
    try:
        scenarios = check_scenarios(settings)
        row("scenarios", "", "ok", f"{len(scenarios)} scenario(s)")
    except ConfigurationError as exc:
        row("scenarios", "", "invalid", str(exc))
    for name, job in sorted(settings.jobs.items()):
        try:
            check_options(name, job.kind, job.options, connectors=settings.connectors)
            row("job", name, "ok" if job.enabled else "disabled", f"{job.kind} at {job.cron!r} {job.timezone}")
        except ConfigurationError as exc:
            row("job", name, "invalid", str(exc))
    if not args.offline:
        where = {"bus": settings.bus if settings.bus == "memory" else f"kafka {settings.kafka_bootstrap}",
                 "postgres": redact_url(settings.postgres_dsn), "redis": redact_url(settings.redis_url)}
        for backend, result in (await reachability(settings, timeout=args.timeout)).items():
            row("backend", f"{backend} ({where[backend]})", "ok" if result == "ok" else "unreachable",
                "" if result == "ok" else result)

    code = 0
    if any(r["status"] == "unreachable" for r in rows):
        code = EXIT_UNREACHABLE
    if any(r["status"] == "invalid" for r in rows):
        code = EXIT_MISCONFIGURED
    if args.json:
        print_json({"ok": code == 0, "exit_code": code, "checks": rows})
        return code
    for r in rows:
        label = f"{r['kind']} {r['name']}".strip()
        print(f"{label}: {r['status']}" + (f" ({r['detail']})" if r["detail"] and r["status"] in ("ok", "disabled")
                                           else f": {r['detail']}" if r["detail"] else ""))
    print("configuration ok" if code == 0 else
          "configuration has problems" if code == EXIT_MISCONFIGURED else "a backend is unreachable")
    return code
