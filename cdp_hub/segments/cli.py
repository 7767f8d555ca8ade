"""``cdp-hub segments ...`` and ``cdp-hub triggers run-daily``.

    segments list                     the segments a deployment has (built-ins + segments_dir)
    segments validate [FILES]         check segment YAML against the JSON Schema (and the model's rules)
    segments schema                   print the segment JSON Schema
    segments sql ID                   the SQL a recompute runs, with its parameters
    segments recompute [ID ...]       recompute in SQL, emit segment.entered/exited, update membership
    segments members ID [--limit N]   current members
    triggers run-daily                the birthday scan, now (idempotent: a second run sends nothing)
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from cdp_hub.cli.helpers import (
    ISO_TIME,
    Args,
    command,
    group,
    iso_datetime,
    json_option,
    print_json,
    print_table,
)
from cdp_hub.cli.progress import progress_reporter
from cdp_hub.config import Settings

__all__ = ["commands"]


commands: list[click.Command] = []
segments = group(commands, "segments", "segments (YAML): list, validate, recompute, members")
triggers = group(commands, "triggers", "date-based triggers")
AS_OF_HELP = "evaluate at this time, ISO 8601 (default: now)"


def _segments(settings: Settings, paths: list[Path] | None = None) -> list[Any]:
    from cdp_hub.segments.model import load_segments

    if paths:
        return load_segments(paths, builtin=False)
    return load_segments([settings.segments_dir] if settings.segments_dir else [])


@command(segments, "list", help="the segments of this deployment and how each is kept")
@json_option("print the segments as JSON")
def cmd_list(args: Args, settings: Settings) -> int:
    found = _segments(settings)
    if args.json:
        print_json([{"id": seg.id, "realtime": seg.trait_only, "description": seg.description} for seg in found])
        return 0
    table = [(seg.id, "real time + batch" if seg.trait_only else "batch", seg.description) for seg in found]
    print_table(("segment", "kept", "description"), table, plain=lambda t: f"{t[0]:<24} {t[1]:<18} {t[2]}")
    return 0


@command(segments, "validate", help="validate segment files PATHS against the JSON Schema")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@json_option("print the valid segments as JSON")
def cmd_validate(args: Args, settings: Settings) -> int:
    valid = _segments(settings, list(args.paths))
    if args.json:
        print_json([{"id": seg.id, "realtime": seg.trait_only} for seg in valid])
        return 0
    for seg in valid:
        print(f"ok  {seg.id}: {'trait-only (real time)' if seg.trait_only else 'with aggregates (batch)'}")
    return 0


@command(segments, "schema", help="print the segment JSON Schema (always JSON)")
@json_option("the schema is JSON anyway; accepted for symmetry")
def cmd_schema(args: Args, settings: Settings) -> int:
    from cdp_hub.segments.model import segment_json_schema

    print(json.dumps(segment_json_schema(), indent=2, ensure_ascii=False))
    return 0


@command(segments, "sql", help="print the SQL (and parameters) a recompute of segment ID runs")
@click.argument("segment_id", metavar="ID")
@click.option("--as-of", callback=iso_datetime, metavar=ISO_TIME, help=AS_OF_HELP)
@json_option("print the SQL and its parameters as JSON")
def cmd_sql(args: Args, settings: Settings) -> int:
    from datetime import UTC

    from cdp_hub.errors import ConfigurationError
    from cdp_hub.store.segments import compile_segment

    by_id = {s.id: s for s in _segments(settings)}
    if args.segment_id not in by_id:
        raise ConfigurationError(f"no segment {args.segment_id!r} (known: {', '.join(sorted(by_id))})")
    as_of = args.as_of or datetime.now(UTC)
    sql, params = compile_segment(by_id[args.segment_id], as_of).members_sql()
    if args.json:
        print_json({"sql": sql, "params": list(params)})
        return 0
    print(sql + ";")
    for i, value in enumerate(params, 1):
        print(f"-- ${i} = {value!r}")
    return 0


@command(segments, "recompute", help="recompute segments ID... (default: every segment) in SQL; emit "
                                    "segment.entered/exited")
@click.argument("segment_ids", nargs=-1, metavar="[ID]...")
@click.option("--as-of", callback=iso_datetime, metavar=ISO_TIME, help=AS_OF_HELP)
@click.option("--allow-memory-bus", is_flag=True,
              help="with bus = 'memory', update membership although no running stage sees the events")
@click.option("--quiet", is_flag=True, help="no progress on stderr")
@json_option("print each segment's result as JSON")
async def cmd_recompute(args: Args, settings: Settings) -> int:
    from cdp_hub.errors import ConfigurationError
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.build import segment_engine

    if settings.bus == "memory" and not args.allow_memory_bus:
        # The membership would change while its segment.entered/exited events reach no running stage.
        raise ConfigurationError(
            "bus = 'memory': the segment.entered/exited events of a recompute would reach no running stage; "
            "set bus = 'kafka' (CDP_HUB_BUS=kafka), or pass --allow-memory-bus to update membership anyway")
    async with Hub(settings) as hub:
        engine = segment_engine(hub)
        ids = list(args.segment_ids) or sorted(engine.segments)
        for sid in ids:
            engine.segment(sid)  # unknown ids fail before any work
        results = []
        with progress_reporter("segments recompute", unit="segments", enabled=not args.quiet) as report:
            for done, sid in enumerate(ids):
                report(done, len(ids))
                r = await engine.recompute(sid, as_of=args.as_of)
                results.append(r)
                if not args.json:
                    print(f"{r.segment_id:<24} +{r.entered} -{r.exited} = {r.members} members"
                          f"{' (resumed an unfinished run)' if r.resumed else ''}"
                          f"{f'; {r.skipped} without identities: no event' if r.skipped else ''}", flush=True)
            report(len(ids), len(ids))
    if args.json:
        print_json([{"segment": r.segment_id, "entered": r.entered, "exited": r.exited, "members": r.members,
                     "resumed": r.resumed, "skipped": r.skipped} for r in results])
    return 0


@command(segments, "members", help="members of segment ID (profile ids, one a line)")
@click.argument("segment_id", metavar="ID")
@click.option("--limit", type=int, default=100, show_default=True, help="at most this many")
@json_option("print the members and the total as JSON")
async def cmd_members(args: Args, settings: Settings) -> int:
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.build import segment_engine

    async with Hub(settings) as hub:
        engine = segment_engine(hub)
        engine.segment(args.segment_id)
        members = await engine.members(args.segment_id, limit=args.limit)
        total = await engine.repository.count_members(args.segment_id)
        if args.json:
            print_json({"segment": args.segment_id, "total": total, "members": [str(p) for p in members]})
            return 0
        for pid in members:
            print(pid)
        print(f"{args.segment_id}: {total} members ({len(members)} shown)", file=sys.stderr)
    return 0


@command(triggers, "run-daily", help="scan for today's birthdays and emit profile.birthday (idempotent)")
@click.option("--if-due", is_flag=True,
              help="only when the last scan is older than the interval (for cron next to `cdp-hub run`)")
@json_option("print the scan's result as JSON")
async def cmd_run_daily(args: Args, settings: Settings) -> int:
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.build import birthday_scheduler
    from cdp_hub.pipeline.embedded import downstream, settled_publish

    # On the in-process bus the stages run here, and the scan records a birthday as emitted only once its
    # event is stored (else the record of it would outlive the event).
    async with Hub(settings) as hub, downstream(hub) as settle:
        scheduler = birthday_scheduler(hub, publish=settled_publish(hub, settle))
        result = await (scheduler.run_if_due() if args.if_due else scheduler.run())
        if args.json:
            print_json(None if result is None else {"at": result.at.isoformat(), "found": result.found,
                                                    "published": result.published, "skipped": result.skipped})
        elif result is None:
            print("birthday scan: not due (ran less than the interval ago)")
        else:
            print(f"birthday scan at {result.at.isoformat()}: {result.found} birthdays, "
                  f"{result.published} events published, {result.skipped} skipped")
    return 0
