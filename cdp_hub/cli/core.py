"""Core sub-commands: schema, plugins, migrate, run, dlq, demo (scenarios: cdp_hub/triggers/cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from cdp_hub.cli.helpers import SubParsers, command_group, print_json, store_for
from cdp_hub.config import Settings
from cdp_hub.errors import ConfigurationError

log = logging.getLogger(__name__)

DEFAULT_SCHEMA_DIR = Path("schemas")


def register(sub: SubParsers) -> None:
    s = command_group(sub, "schema", "export or check the canonical JSON Schemas")
    e = s.add_parser("export", help="write schemas/*.json from the models")
    e.add_argument("--out", type=Path, default=DEFAULT_SCHEMA_DIR)
    e.set_defaults(handler=cmd_schema_export)
    c = s.add_parser("check", help="compare the models with the committed schemas: identical/additive/breaking")
    c.add_argument("--dir", type=Path, default=DEFAULT_SCHEMA_DIR)
    c.set_defaults(handler=cmd_schema_check)

    p = sub.add_parser("plugins", help="list connector and channel plugins and where they came from")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_plugins)

    p = sub.add_parser("migrate", help="apply the database migrations (idempotent)")
    p.set_defaults(handler=cmd_migrate)

    p = sub.add_parser("run", help="run the pipeline stages (all, or --stage NAME ...) and the HTTP server")
    p.add_argument("--stage", action="append", dest="stages", metavar="NAME",
                   help="resolver, triggers, delivery, dlq (repeatable; default: all)")
    p.add_argument("--no-http", action="store_true", help="do not serve HTTP (ingestion, /metrics)")
    p.add_argument("--http-port", type=int, help="override http_port")
    p.add_argument("--mute-triggers", action="store_true",
                   help="profiles and segments update, no scenario fires (replays, backfills); decided muted")
    p.add_argument("--no-scheduler", action="store_true",
                   help="do not run the [jobs] schedule in this process (default: run it when jobs are configured)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("serve", help="serve HTTP only (ingestion, admin, /metrics), no stages")
    p.add_argument("--http-port", type=int, help="override http_port")
    p.set_defaults(handler=cmd_run, stages=[], no_http=False, no_scheduler=True, mute_triggers=False)

    s = command_group(sub, "dlq", "browse and replay the dead-letter queue")
    ls = s.add_parser("list", help="dead letters, newest first")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--type", dest="failure_type")
    ls.add_argument("--source")
    ls.add_argument("--all", action="store_true", help="include replayed ones")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_dlq_list)
    rp = s.add_parser("replay", help="put dead letters back into the flow (fixed, or as they were)")
    rp.add_argument("ids", nargs="*", help="dlq ids (default: every one matching the filters)")
    rp.add_argument("--type", dest="failure_type")
    rp.add_argument("--source")
    rp.add_argument("--fixes", type=Path,
                    help="JSON Lines of {\"dlq_id\": ..., \"payload\": {...}}: corrected records")
    rp.add_argument("--again", action="store_true", help="also replay ones replayed before")
    rp.add_argument("--dry-run", action="store_true")
    rp.add_argument("--fire-triggers", action="store_true",
                    help="let scenarios fire for the replayed events (default: muted, profiles update only)")
    rp.set_defaults(handler=cmd_dlq_replay)
    pg = s.add_parser("purge", help="delete archived dead letters older than a given age")
    pg.add_argument("--older-than", required=True, help="a duration: e.g. 30d, 12h, 1d12h, P30D")
    pg.add_argument("--replayed-only", action="store_true", help="only ones already replayed")
    pg.set_defaults(handler=cmd_dlq_purge)

    p = sub.add_parser("demo", help="run the whole pipeline on generated retail data (embedded, no servers)")
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--data-dir", type=Path, help="keep the embedded database here (default: a temp dir)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=cmd_demo)


# -- schema ------------------------------------------------------------------------------------------


def cmd_schema_export(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.catalogue import write_schemas

    for path in write_schemas(args.out):
        print(path)
    return 0


def cmd_schema_check(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.catalogue import exported_schemas
    from cdp_hub.schema.export import compare_schemas, dumps

    worst = 0
    for name, current in exported_schemas().items():
        path = args.dir / name
        if not path.exists():
            print(f"{name}: missing (run `cdp-hub schema export`)")
            worst = max(worst, 1)
            continue
        committed = json.loads(path.read_text(encoding="utf-8"))
        if path.read_bytes() == dumps(current):
            print(f"{name}: identical")
            continue
        diff = compare_schemas(committed, current)
        print(f"{name}: {diff.kind}{' (new version)' if diff.version_bumped else ''}")
        for line in diff.breaking:
            print(f"  BREAKING {line}")
        for line in diff.additive:
            print(f"  additive {line}")
        if not diff.acceptable:
            print("  a breaking change needs a new schema version (cdp.event/2)")
            worst = 2
        else:
            worst = max(worst, 1)
    if worst == 1:
        print("run `cdp-hub schema export` and commit schemas/")
    return worst


# -- plugins -----------------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.plugins import get_registry

    reg = get_registry()
    rows: list[dict[str, Any]] = []
    for kind, table in (("connector", reg.connectors), ("channel", reg.channels)):
        for name in sorted(table):
            info = table[name]
            rows.append({"kind": kind, "name": name, "plugin": info.plugin, "distribution": info.distribution,
                         "version": info.version, "description": info.description})
    failures = [f.__dict__ for f in reg.failures]
    if args.json:
        print_json({"plugins": rows, "failures": failures}, ensure_ascii=True)
        return 1 if failures else 0
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        origin = f"{r['distribution']} {r['version']}" if r["distribution"] else "(not from a distribution)"
        print(f"{r['kind']:<9} {r['name']:<{width}}  {origin:<22} {r['description']}")
    for f in reg.failures:
        print(f"FAILED    {f.name:<{width}}  {f.distribution or '?':<22} {f.error}", file=sys.stderr)
    return 1 if failures else 0


# -- migrate / run -----------------------------------------------------------------------------------


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    async with store_for(settings) as store:
        applied = await store.migrate()
    for mig in applied:
        print(f"applied {mig.version:04d}_{mig.name}")
    if not applied:
        print("up to date")
    return 0


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.daemon import check_listen_address, http_server
    from cdp_hub.hub import Hub
    from cdp_hub.jobs.scheduler import scheduler_for
    from cdp_hub.pipeline.build import STAGE_NAMES, Pipeline

    if not args.no_http:  # before connecting to anything: beyond loopback only with an admin token
        check_listen_address(settings, settings.http_host)

    stages = list(STAGE_NAMES) if args.stages is None else args.stages
    for name in stages:
        if name not in STAGE_NAMES:
            raise ConfigurationError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
    port = args.http_port or settings.http_port
    if args.mute_triggers:
        settings = settings.model_copy(update={"mute_triggers": True})
    if "triggers" in stages:
        from cdp_hub.triggers.cli import check_scenarios

        check_scenarios(settings)  # an invalid scenario stops the daemon before it starts
    async with Hub(settings) as hub:
        from cdp_hub.checks import instance_problems

        for problem in instance_problems(settings, hub.registry):  # /readyz fails on them too
            log.error("configuration: %s", problem)
        loop = asyncio.get_running_loop()
        pipeline = Pipeline(hub, stages) if stages else None
        server = None if args.no_http else http_server(hub, settings.http_host, port, pipeline=pipeline)
        scheduler = None if args.no_scheduler else scheduler_for(hub, pipeline)

        grace = settings.shutdown_grace_seconds
        tasks: list[asyncio.Task[None]] = []
        stopping = False

        def overdue() -> None:
            # Past the grace period: what still runs is cancelled. Its batch was not committed, so the
            # next owner of the partitions replays it (stages are idempotent).
            for task in tasks:
                if not task.done():
                    log.warning("shutdown: %s still busy after %.0fs; cancelled, its uncommitted batch is "
                                "replayed after the restart", task.get_name(), grace)
                    task.cancel()

        def shutdown() -> None:
            nonlocal stopping
            if stopping:
                return
            stopping = True
            log.warning("shutting down: intake stops, the current batches finish (grace %.0fs)", grace)
            if pipeline is not None:
                pipeline.stop()
            if server is not None:
                server.stop()
            if scheduler is not None:
                scheduler.stop()
            loop.call_later(grace, overdue)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, shutdown)
        if pipeline is not None:
            tasks.append(asyncio.create_task(pipeline.run(), name="stages"))
        if server is not None:
            tasks.append(asyncio.create_task(server.serve(), name="http"))
        if not tasks:
            raise ConfigurationError("nothing to run: no stages and no HTTP")
        if scheduler is not None:
            tasks.append(asyncio.create_task(scheduler.serve(), name="scheduler"))
        print(f"cdp-hub running stages {', '.join(stages) or '(none)'}"
              + ("" if server is None else f"; http://{settings.http_host}:{port}")
              + ("" if scheduler is None else f"; scheduler: {', '.join(sorted(scheduler.jobs))}"), flush=True)
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        shutdown()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if not task.cancelled():  # cancelled: cut short by the grace period, nothing lost
                task.result()
        # Leaving the hub flushes the producer and closes the pool and Redis.
    return 0


# -- dlq ---------------------------------------------------------------------------------------------


async def cmd_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.dlq.replay import list_dead_letters
    from cdp_hub.hub import Hub

    async with Hub(settings) as hub:
        items = await list_dead_letters(hub, limit=args.limit, failure_type=args.failure_type,
                                        source=args.source, include_replayed=args.all)
    if args.json:
        print(orjson.dumps(items, option=orjson.OPT_INDENT_2).decode())
        return 0
    for it in items:
        where = f"{it.get('source') or '-'}/{it.get('record_id') or '-'}"
        print(f"{it['dlq_id']}  {it['failed_at'][:19]}  {it['failure_type']:<20} {it['stage']:<9} {where}")
        print(f"    {it['error']}")
    print(f"{len(items)} dead letter(s)")
    return 0


async def cmd_dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.dlq.replay import replay_dead_letters
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.embedded import downstream

    fixes: dict[str, Any] = {}
    if args.fixes:
        for n, line in enumerate(args.fixes.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                fixes[item["dlq_id"]] = item["payload"]
            except (ValueError, KeyError) as exc:
                raise ConfigurationError(f"{args.fixes}:{n}: expected {{\"dlq_id\", \"payload\"}}: {exc}") from None
    ids = args.ids or list(fixes)  # with a fixes file, the records it fixes (not every pending one)
    async with Hub(settings) as hub, downstream(hub) as settle:
        res = await replay_dead_letters(hub, ids=ids, failure_type=args.failure_type, source=args.source,
                                        fixes=fixes, again=args.again, dry_run=args.dry_run, settle=settle,
                                        mute_triggers=not args.fire_triggers)
    for line in res.details:
        print(line)
    print(f"replayed {res.replayed}, failed again {res.failed_again}, skipped {res.skipped}")
    return 0 if res.failed_again == 0 else 1


async def cmd_dlq_purge(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.durations import parse_duration
    from cdp_hub.store import DeadLetterRepository

    try:
        age = parse_duration(args.older_than, field="--older-than")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    async with store_for(settings) as store:
        deleted = await DeadLetterRepository(store).purge(age, replayed_only=args.replayed_only)
    print(f"deleted {deleted} dead letter(s)")
    return 0


# -- demo --------------------------------------------------------------------------------------------


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.demo import print_summary, run_demo

    summary = await run_demo(customers=args.customers, seed=args.seed, data_dir=args.data_dir)
    if args.json:
        print_json(summary, ensure_ascii=True)
    else:
        print_summary(summary)
    return 0
