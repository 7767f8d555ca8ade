"""Report commands of the ``cdp-hub`` CLI (argparse wiring only; the work is in :mod:`cdp_hub.reports`).

    cdp-hub report scenarios [--since 30d] [--until NOW] [--window 7d] [--scenario ID ...]
                             [--json | --csv | --html FILE [--title TEXT]]

The default output is a table; ``--json`` and ``--csv`` print the same rows; ``--html FILE`` writes the static
report with its charts (needs the ``reports`` extra: matplotlib). docs/reports.md shows each.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from cdp_hub.cli.helpers import SubParsers, command_group, print_json, store_for
from cdp_hub.config import Settings

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    r = command_group(sub, "report", "business reports: what scenarios and campaigns sent and earned")
    s = r.add_parser("scenarios", help="per scenario, campaign, variant and channel: funnel, conversion, revenue, "
                     "uplift over control")
    s.add_argument("--since", default="30d", help="start: a duration back from now (30d) or an ISO date")
    s.add_argument("--until", default=None, help="end (default: now): a duration back from now or an ISO date")
    s.add_argument("--window", default=None, help="attribution window (default: attribution_window, 7d)")
    s.add_argument("--scenario", action="append", default=[], help="only this scenario (campaign:<id> for a "
                   "campaign); repeatable")
    out = s.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="the rows as JSON")
    out.add_argument("--csv", action="store_true", help="the rows as CSV")
    out.add_argument("--html", type=Path, metavar="FILE", help="write the HTML report with charts to FILE")
    s.add_argument("--title", default="Scenario report", help="the HTML report's title")
    s.set_defaults(handler=cmd_scenarios)


async def cmd_scenarios(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.durations import parse_duration
    from cdp_hub.reports.scenarios import parse_since, scenario_report

    now = datetime.now(UTC)
    since = parse_since(args.since, now)
    until = parse_since(args.until, now) if args.until else now
    window = parse_duration(args.window or settings.attribution_window)
    async with store_for(settings) as store:
        report = await scenario_report(store, since=since, until=until, window=window,
                                       conversion_events=settings.conversion_events, scenarios=args.scenario)
    if args.html is not None:
        from cdp_hub.reports.html import write_html

        write_html(report, args.html, title=args.title)
        print(f"wrote {args.html} ({len(report.scenarios)} scenarios)")
    elif args.json:
        print_json(report.as_json())
    elif args.csv:
        print(report.as_csv(), end="")
    else:
        print(report.as_table())
    return 0
