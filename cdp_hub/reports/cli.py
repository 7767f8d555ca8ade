"""Report commands of the ``cdp-hub`` CLI (the command line only; the work is in :mod:`cdp_hub.reports`).

    cdp-hub report scenarios [--since 30d] [--until NOW] [--window 7d] [--scenario ID ...]
                             [--json | --csv | --html FILE [--title TEXT]]

The default output is a table; ``--json`` and ``--csv`` print the same rows; ``--html FILE`` writes the static
report with its charts (needs the ``reports`` extra: matplotlib). docs/reports.md shows each.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from cdp_hub.cli.helpers import Args, command, group, json_option, print_json, store_for
from cdp_hub.config import Settings

__all__ = ["commands"]

commands: list[click.Command] = []
report = group(commands, "report", "business reports: what scenarios and campaigns sent and earned")


@command(report, "scenarios", help="per scenario, campaign, variant and channel: funnel, conversion, revenue, "
                                   "uplift over control", at_most_one_of=[("json", "csv", "html")])
@click.option("--since", default="30d", show_default=True,
              help="start: a duration back from now (30d) or an ISO date")
@click.option("--until", default=None, help="end (default: now): a duration back from now or an ISO date")
@click.option("--window", default=None, help="attribution window (default: attribution_window, 7d)")
@click.option("--scenario", multiple=True, help="only this scenario (campaign:<id> for a campaign); repeatable")
@json_option("the rows as JSON")
@click.option("--csv", is_flag=True, help="the rows as CSV")
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="write the HTML report with charts to FILE")
@click.option("--title", default="Scenario report", show_default=True, help="the HTML report's title")
async def cmd_scenarios(args: Args, settings: Settings) -> int:
    from cdp_hub.durations import parse_duration
    from cdp_hub.reports.scenarios import parse_since, scenario_report

    now = datetime.now(UTC)
    since = parse_since(args.since, now)
    until = parse_since(args.until, now) if args.until else now
    window = parse_duration(args.window or settings.attribution_window)
    async with store_for(settings) as store:
        report = await scenario_report(store, since=since, until=until, window=window,
                                       conversion_events=settings.conversion_events, scenarios=list(args.scenario))
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
