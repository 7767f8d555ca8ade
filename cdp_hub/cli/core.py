"""Core sub-commands: schema, plugins, migrate, run, dlq, demo (scenarios: cdp_hub/triggers/cli.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from cdp_hub.cli.helpers import Args, command, group, json_option, print_json, print_table, store_for
from cdp_hub.config import Settings
from cdp_hub.errors import ConfigurationError

log = logging.getLogger(__name__)

DEFAULT_SCHEMA_DIR = Path("schemas")
PATH = click.Path(path_type=Path)

commands: list[click.Command] = []
schema = group(commands, "schema", "export or check the canonical JSON Schemas")
dlq = group(commands, "dlq", "browse and replay the dead-letter queue")


# -- schema ------------------------------------------------------------------------------------------


@command(schema, "export", help="write schemas/*.json from the models")
@click.option("--out", type=PATH, default=DEFAULT_SCHEMA_DIR, show_default=True, help="folder to write to")
@json_option("print the written paths as JSON")
def cmd_schema_export(args: Args, settings: Settings) -> int:
    from cdp_hub.catalogue import write_schemas

    written = write_schemas(args.out)
    if args.json:
        print_json([str(path) for path in written])
        return 0
    for path in written:
        print(path)
    return 0


@command(schema, "check", help="compare the models with the committed schemas: identical/additive/breaking "
                               "(exit 0 identical, 1 additive changes to commit, 2 breaking)")
@click.option("--dir", type=PATH, default=DEFAULT_SCHEMA_DIR, show_default=True, help="the committed schemas")
@json_option("print each schema's verdict as JSON")
def cmd_schema_check(args: Args, settings: Settings) -> int:
    from cdp_hub.catalogue import exported_schemas
    from cdp_hub.schema.export import compare_schemas, dumps

    worst = 0
    verdicts: list[dict[str, Any]] = []
    for name, current in exported_schemas().items():
        path = args.dir / name
        if not path.exists():
            verdicts.append({"schema": name, "verdict": "missing", "breaking": [], "additive": []})
            worst = max(worst, 1)
            continue
        committed = json.loads(path.read_text(encoding="utf-8"))
        if path.read_bytes() == dumps(current):
            verdicts.append({"schema": name, "verdict": "identical", "breaking": [], "additive": []})
            continue
        diff = compare_schemas(committed, current)
        verdicts.append({"schema": name, "verdict": diff.kind, "new_version": diff.version_bumped,
                         "breaking": list(diff.breaking), "additive": list(diff.additive),
                         "acceptable": diff.acceptable})
        worst = 2 if not diff.acceptable else max(worst, 1)
    if args.json:
        print_json({"exit_code": worst, "schemas": verdicts})
        return worst
    for v in verdicts:
        if v["verdict"] == "missing":
            print(f"{v['schema']}: missing (run `cdp-hub schema export`)")
            continue
        if v["verdict"] == "identical":
            print(f"{v['schema']}: identical")
            continue
        print(f"{v['schema']}: {v['verdict']}{' (new version)' if v['new_version'] else ''}")
        for line in v["breaking"]:
            print(f"  BREAKING {line}")
        for line in v["additive"]:
            print(f"  additive {line}")
        if not v["acceptable"]:
            print("  a breaking change needs a new schema version (cdp.event/2)")
    if worst == 1:
        print("run `cdp-hub schema export` and commit schemas/")
    return worst


# -- plugins -----------------------------------------------------------------------------------------


@command(commands, "plugins", help="list connector and channel plugins and where they came from (exit 1 when "
                                   "a plugin failed to load)")
@json_option("print the plugins and the failures as JSON")
def cmd_plugins(args: Args, settings: Settings) -> int:
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
    listing = [(r["kind"], r["name"], f"{r['distribution']} {r['version']}" if r["distribution"]
                else "(not from a distribution)", r["description"]) for r in rows]
    print_table(("kind", "name", "from", "description"), listing,
                plain=lambda t: f"{t[0]:<9} {t[1]:<{width}}  {t[2]:<22} {t[3]}")
    for f in reg.failures:
        print(f"FAILED    {f.name:<{width}}  {f.distribution or '?':<22} {f.error}", file=sys.stderr)
    return 1 if failures else 0


# -- migrate / run -----------------------------------------------------------------------------------


@command(commands, "migrate", help="apply the database migrations (idempotent)")
@json_option("print the applied migrations as JSON")
async def cmd_migrate(args: Args, settings: Settings) -> int:
    async with store_for(settings) as store:
        applied = await store.migrate()
    if args.json:
        print_json({"applied": [f"{mig.version:04d}_{mig.name}" for mig in applied]})
        return 0
    for mig in applied:
        print(f"applied {mig.version:04d}_{mig.name}")
    if not applied:
        print("up to date")
    return 0


def _supervised(args: Args, settings: Settings, stages: list[str], port: int) -> int:
    """``run --processes``: the workers of cdp_hub/supervisor.py, each a ``cdp-hub run`` of its own."""
    from cdp_hub.supervisor import plan_workers, supervise

    if settings.bus != "kafka":
        raise ConfigurationError(f'--processes {args.processes}: needs bus = "kafka"; the in-process bus lives in '
                                 "one process, so its stages cannot be spread over several (auto runs them in one)")
    workers = plan_workers(args.processes, stages=stages, http_port=port, http=not args.no_http,
                           scheduler=not args.no_scheduler)
    if args.mute_triggers:
        for worker in workers:
            worker.args.append("--mute-triggers")
    global_args = [a for name, flag in (("config", "--config"), ("log_level", "--log-level"),
                                        ("log_format", "--log-format"))
                   if args.cli_globals.get(name) is not None for a in (flag, str(args.cli_globals[name]))]
    return supervise(workers, global_args, grace=settings.shutdown_grace_seconds)


@command(commands, "run", help="run the pipeline stages (all, or --stage NAME ...), the scheduler and the HTTP "
                               "server")
@click.option("--stage", "stages", multiple=True, metavar="NAME", callback=lambda _c, _p, v: list(v) or None,
              help="resolver, triggers, delivery, dlq (repeatable; default: all)")
@click.option("--no-http", is_flag=True, help="do not serve HTTP (ingestion, /metrics)")
@click.option("--http-port", type=int, help="override http_port")
@click.option("--mute-triggers", is_flag=True,
              help="profiles and segments update, no scenario fires (replays, backfills); decided muted")
@click.option("--no-scheduler", is_flag=True,
              help="do not run the [jobs] schedule in this process (default: run it when jobs are configured)")
@click.option("--processes", metavar="auto|N",
              help="run as supervised worker processes (bus = \"kafka\"): auto, one per stage and more for more "
                   "cores (one process on the in-process bus); N, N whole pipelines (docs/scaling.md)")
@command(commands, "serve", help="serve HTTP only (ingestion, admin, /metrics), no stages",
         defaults={"stages": [], "no_http": False, "no_scheduler": True, "mute_triggers": False})
@click.option("--http-port", type=int, help="override http_port")
async def cmd_run(args: Args, settings: Settings) -> int:
    from cdp_hub.daemon import check_listen_address, http_server, settle_heap
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
    processes = getattr(args, "processes", None)
    if processes == "auto" and settings.bus != "kafka":
        # The container image's default: on the in-process bus every stage must share one process.
        log.warning("--processes auto: bus = %r runs every stage in this one process", settings.bus)
    elif processes is not None:
        return _supervised(args, settings, stages, port)
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
        settle_heap(settings)

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


@command(dlq, "list", help="dead letters, newest first")
@click.option("--limit", type=int, default=50, show_default=True, help="at most this many")
@click.option("--type", "failure_type", help="only this failure type (schema_violation, processing_error, ...)")
@click.option("--source", help="only dead letters of this source (a connector instance, the edge)")
@click.option("--all", is_flag=True, help="include replayed ones")
@json_option("print the dead letters as JSON")
async def cmd_dlq_list(args: Args, settings: Settings) -> int:
    from cdp_hub.dlq.replay import list_dead_letters
    from cdp_hub.hub import Hub

    async with Hub(settings) as hub:
        items = await list_dead_letters(hub, limit=args.limit, failure_type=args.failure_type,
                                        source=args.source, include_replayed=args.all)
    if args.json:
        print(orjson.dumps(items, option=orjson.OPT_INDENT_2).decode())
        return 0
    table = [(it["dlq_id"], it["failed_at"][:19], it["failure_type"], it["stage"],
              f"{it.get('source') or '-'}/{it.get('record_id') or '-'}", it["error"]) for it in items]
    print_table(("dlq id", "failed at", "failure type", "stage", "source/record", "error"), table,
                plain=lambda t: f"{t[0]}  {t[1]}  {t[2]:<20} {t[3]:<9} {t[4]}\n    {t[5]}")
    print(f"{len(items)} dead letter(s)")
    return 0


@command(dlq, "replay", help="put dead letters back into the flow (fixed, or as they were). IDS: dlq ids "
                            "(default: every one matching the filters, or the ones --fixes fixes)")
@click.argument("ids", nargs=-1)
@click.option("--type", "failure_type", help="only this failure type")
@click.option("--source", help="only dead letters of this source")
@click.option("--fixes", type=PATH,
              help='JSON Lines of {"dlq_id": ..., "payload": {...}}: corrected records')
@click.option("--again", is_flag=True, help="also replay ones replayed before")
@click.option("--dry-run", is_flag=True, help="say what would be replayed, change nothing")
@click.option("--fire-triggers", is_flag=True,
              help="let scenarios fire for the replayed events (default: muted, profiles update only)")
@json_option("print the outcome as JSON")
async def cmd_dlq_replay(args: Args, settings: Settings) -> int:
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
    if args.json:
        print_json({"replayed": res.replayed, "failed_again": res.failed_again, "skipped": res.skipped,
                    "details": list(res.details)})
        return 0 if res.failed_again == 0 else 1
    for line in res.details:
        print(line)
    print(f"replayed {res.replayed}, failed again {res.failed_again}, skipped {res.skipped}")
    return 0 if res.failed_again == 0 else 1


@command(dlq, "purge", help="delete archived dead letters older than a given age")
@click.option("--older-than", required=True, help="a duration: e.g. 30d, 12h, 1d12h, P30D")
@click.option("--replayed-only", is_flag=True, help="only ones already replayed")
@json_option("print the number deleted as JSON")
async def cmd_dlq_purge(args: Args, settings: Settings) -> int:
    from cdp_hub.durations import parse_duration
    from cdp_hub.store import DeadLetterRepository

    try:
        age = parse_duration(args.older_than, field="--older-than")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    async with store_for(settings) as store:
        deleted = await DeadLetterRepository(store).purge(age, replayed_only=args.replayed_only)
    if args.json:
        print_json({"deleted": deleted})
        return 0
    print(f"deleted {deleted} dead letter(s)")
    return 0


# -- demo --------------------------------------------------------------------------------------------


@command(commands, "demo", help="run the whole pipeline on generated retail data (embedded, no servers)")
@click.option("--customers", type=int, default=1000, show_default=True, help="how many customers to generate")
@click.option("--seed", type=int, default=7, show_default=True, help="random seed (the same seed, the same data)")
@click.option("--data-dir", type=PATH, help="keep the embedded database here (default: a temp dir)")
@json_option("print the summary as JSON")
async def cmd_demo(args: Args, settings: Settings) -> int:
    from cdp_hub.demo import print_summary, run_demo

    summary = await run_demo(customers=args.customers, seed=args.seed, data_dir=args.data_dir)
    if args.json:
        print_json(summary, ensure_ascii=True)
    else:
        print_summary(summary)
    return 0
