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

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from cdp_hub.cli.helpers import SubParsers, command_group
from cdp_hub.config import Settings

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    s = command_group(sub, "segments", "segments (YAML): list, validate, recompute, members")
    ls = s.add_parser("list", help="the segments of this deployment and how each is kept")
    ls.set_defaults(handler=cmd_list)
    v = s.add_parser("validate", help="validate segment files against the JSON Schema")
    v.add_argument("paths", nargs="*", type=Path)
    v.set_defaults(handler=cmd_validate)
    sc = s.add_parser("schema", help="print the segment JSON Schema")
    sc.set_defaults(handler=cmd_schema)
    q = s.add_parser("sql", help="print the SQL (and parameters) a recompute of ID runs")
    q.add_argument("segment_id", metavar="ID")
    q.add_argument("--as-of", type=datetime.fromisoformat, help="evaluate at this time (default: now)")
    q.set_defaults(handler=cmd_sql)
    r = s.add_parser("recompute", help="recompute segments in SQL; emit segment.entered/exited")
    r.add_argument("segment_ids", nargs="*", metavar="ID", help="default: every segment")
    r.add_argument("--as-of", type=datetime.fromisoformat, help="evaluate at this time (default: now)")
    r.add_argument("--allow-memory-bus", action="store_true",
                   help="with bus = 'memory', update membership although no running stage sees the events")
    r.set_defaults(handler=cmd_recompute)
    m = s.add_parser("members", help="members of a segment")
    m.add_argument("segment_id", metavar="ID")
    m.add_argument("--limit", type=int, default=100)
    m.set_defaults(handler=cmd_members)

    ts = command_group(sub, "triggers", "date-based triggers")
    d = ts.add_parser("run-daily", help="scan for today's birthdays and emit profile.birthday (idempotent)")
    d.add_argument("--if-due", action="store_true",
                   help="only when the last scan is older than the interval (for cron next to `cdp-hub run`)")
    d.set_defaults(handler=cmd_run_daily)


def _segments(settings: Settings, paths: list[Path] | None = None) -> list[Any]:
    from cdp_hub.segments.model import load_segments

    if paths:
        return load_segments(paths, builtin=False)
    return load_segments([settings.segments_dir] if settings.segments_dir else [])


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    for seg in _segments(settings):
        how = "real time + batch" if seg.trait_only else "batch"
        print(f"{seg.id:<24} {how:<18} {seg.description}")
    return 0


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    for seg in _segments(settings, args.paths):
        print(f"ok  {seg.id}: {'trait-only (real time)' if seg.trait_only else 'with aggregates (batch)'}")
    return 0


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.segments.model import segment_json_schema

    print(json.dumps(segment_json_schema(), indent=2, ensure_ascii=False))
    return 0


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC

    from cdp_hub.errors import ConfigurationError
    from cdp_hub.store.segments import compile_segment

    by_id = {s.id: s for s in _segments(settings)}
    if args.segment_id not in by_id:
        raise ConfigurationError(f"no segment {args.segment_id!r} (known: {', '.join(sorted(by_id))})")
    as_of = args.as_of or datetime.now(UTC)
    sql, params = compile_segment(by_id[args.segment_id], as_of).members_sql()
    print(sql + ";")
    for i, value in enumerate(params, 1):
        print(f"-- ${i} = {value!r}")
    return 0


async def cmd_recompute(args: argparse.Namespace, settings: Settings) -> int:
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
        for sid in args.segment_ids or sorted(engine.segments):
            engine.segment(sid)  # unknown ids fail before any work
        for sid in args.segment_ids or sorted(engine.segments):
            r = await engine.recompute(sid, as_of=args.as_of)
            print(f"{r.segment_id:<24} +{r.entered} -{r.exited} = {r.members} members"
                  f"{' (resumed an unfinished run)' if r.resumed else ''}"
                  f"{f'; {r.skipped} without identities: no event' if r.skipped else ''}")
    return 0


async def cmd_members(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.build import segment_engine

    async with Hub(settings) as hub:
        engine = segment_engine(hub)
        engine.segment(args.segment_id)
        members = await engine.members(args.segment_id, limit=args.limit)
        for pid in members:
            print(pid)
        total = await engine.repository.count_members(args.segment_id)
        print(f"{args.segment_id}: {total} members ({len(members)} shown)", file=sys.stderr)
    return 0


async def cmd_run_daily(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.build import birthday_scheduler
    from cdp_hub.pipeline.embedded import downstream, settled_publish

    # On the in-process bus the stages run here, and the scan records a birthday as emitted only once its
    # event is stored (else the record of it would outlive the event).
    async with Hub(settings) as hub, downstream(hub) as settle:
        scheduler = birthday_scheduler(hub, publish=settled_publish(hub, settle))
        result = await (scheduler.run_if_due() if args.if_due else scheduler.run())
        if result is None:
            print("birthday scan: not due (ran less than the interval ago)")
        else:
            print(f"birthday scan at {result.at.isoformat()}: {result.found} birthdays, "
                  f"{result.published} events published, {result.skipped} skipped")
    return 0
