"""Connector commands of the ``cdp-hub`` CLI.

    cdp-hub connectors list                         installed connector types and configured instances
    cdp-hub connectors spec NAME                    JSON Schema of a connector's config
    cdp-hub connectors check NAME                   credentials and reachability (reads one page)
    cdp-hub connectors state NAME [--reset]         sync checkpoints (reset: the next sync starts over)
    cdp-hub sync NAME [--stream S] [--full-refresh] pull sync into cdp.events, checkpointed
                      [--backfill | --mute-triggers] a backfill: everything again, no scenario fires
    cdp-hub ingest-file NAME FILE... [--stream S]   CSV / JSON Lines (gzip too) through a connector
                      [--mute-triggers]             a history import: no scenario fires

On the in-process bus (``bus = "memory"``) ``sync`` and ``ingest-file`` run the stages in this process
(:func:`cdp_hub.pipeline.embedded.downstream`) until what they published is stored, and a sync checkpoint
moves only after that: nothing lives only in the memory of a process about to exit.

(``cdp-hub new connector NAME`` is in :mod:`cdp_hub.scaffold.cli`.)

``NAME`` is a configured instance (``[connectors.shop]``) or a connector type (its defaults).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from cdp_hub.cli.helpers import Args, command, group, json_option, print_json, print_table, store_for
from cdp_hub.cli.progress import progress_reporter
from cdp_hub.config import Settings
from cdp_hub.errors import ConfigurationError

__all__ = ["commands"]


PATH = click.Path(path_type=Path)

commands: list[click.Command] = []
connectors = group(commands, "connectors", "list, describe and check connectors")


@command(connectors, "list", help="installed connector types and configured instances")
@json_option("print the types, instances and load failures as JSON")
def cmd_list(args: Args, settings: Settings) -> int:
    from cdp_hub.plugins import get_registry

    registry = get_registry()
    types: list[dict[str, Any]] = [{"name": name, "title": getattr(info.cls, "title", "") or info.description,
              "streams": list(info.cls.stream_names()) if hasattr(info.cls, "stream_names") else [],
              "plugin": info.plugin, "distribution": info.distribution, "version": info.version}
             for name, info in sorted(registry.connectors.items())]
    instances = [{"instance": name, "type": inst.type, "enabled": inst.enabled}
                 for name, inst in sorted(settings.connectors.items())]
    failures = [{"plugin": f.name, "error": f.error} for f in registry.failures if f.group.endswith("connectors")]
    if args.json:
        print_json({"types": types, "instances": instances, "failures": failures})
        return 0
    print_table(("type", "title", "streams", "from"),
                [(t["name"], t["title"], ", ".join(t["streams"]) or "push only", t["distribution"] or t["plugin"])
                 for t in types],
                plain=lambda r: f"{r[0]:<12} {r[1]:<22} streams: {r[2]}   [{r[3]}]")
    for inst in instances:
        print(f"instance {inst['instance']} -> {inst['type']}{'' if inst['enabled'] else ' (disabled)'}")
    for f in failures:
        print(f"FAILED {f['plugin']}: {f['error']}", file=sys.stderr)
    return 0


def _connector_class(settings: Settings, name: str) -> type[Any]:
    from cdp_hub.plugins import get_registry

    inst = settings.connectors.get(name)
    return get_registry().connector(inst.type if inst else name)


@command(connectors, "spec", help="JSON Schema of a connector's config; NAME: a connector type or configured "
                                  "instance (always JSON)")
@click.argument("name")
@json_option("the schema is JSON anyway; accepted for symmetry")
def cmd_spec(args: Args, settings: Settings) -> int:
    cls = _connector_class(settings, args.name)
    schema = cls.config_model.model_json_schema()
    schema["title"] = f"{cls.name} connector config"
    print_json(schema)
    return 0


@command(connectors, "check", help="test the credentials and reachability of connector NAME (reads one page)")
@click.argument("name")
@json_option("print the outcome as JSON")
async def cmd_check(args: Args, settings: Settings) -> int:
    from cdp_hub.hub import Hub

    hub = Hub(settings)
    try:
        connector = hub.connector(args.name)
        if not connector.stream_names():
            if args.json:
                print_json({"connector": args.name, "ok": True, "push_only": True})
                return 0
            print(f"{args.name}: push-only connector ({connector.name}); nothing to reach. It receives "
                  f"POST /v1/webhooks/{args.name}" + ("" if getattr(connector.config, "webhook_secret", None)
                                                      else " once webhook_secret is configured"))
            return 0
        await connector.check()
    finally:
        await hub.http.aclose()
    if args.json:
        print_json({"connector": args.name, "ok": True, "stream": connector.stream_names()[0]})
        return 0
    print(f"{args.name}: ok (credentials accepted, first page of {connector.stream_names()[0]} read)")
    return 0


@command(connectors, "state", help="show (or reset) the sync checkpoints of instance NAME (JSON)")
@click.argument("name")
@click.option("--reset", is_flag=True, help="forget the checkpoints: the next sync starts over")
@click.option("--stream", help="only this stream")
@json_option("the checkpoints are JSON anyway; accepted for symmetry")
async def cmd_state(args: Args, settings: Settings) -> int:
    from cdp_hub.connector.state import PgStateStore

    async with store_for(settings) as store:
        await store.migrate()
        states = PgStateStore(store)
        if args.reset:
            await states.reset(args.name, args.stream)
            if args.json:
                print_json({"connector": args.name, "reset": True, "stream": args.stream})
                return 0
            print(f"{args.name}: checkpoints reset{f' for {args.stream}' if args.stream else ''}")
            return 0
        print_json({stream: state for stream, state in await states.all(args.name)
                    if args.stream is None or stream == args.stream})
    return 0


@command(commands, "sync", help="pull new and updated records of connector NAME (a configured instance, or a "
                               "type with its defaults) into cdp.events; prints one JSON summary per stream")
@click.argument("name")
@click.option("--stream", help="one stream (default: all)")
@click.option("--full-refresh", is_flag=True, help="ignore the checkpoint: read everything again")
@click.option("--backfill", is_flag=True,
              help="read everything again with triggers muted: profiles update, no message is sent")
@click.option("--mute-triggers", is_flag=True, help="no scenario fires for these events (they are decided muted)")
@click.option("--quiet", is_flag=True, help="no progress on stderr")
@json_option("the summary is JSON anyway; accepted for symmetry")
async def cmd_sync(args: Args, settings: Settings) -> int:
    from cdp_hub.connector.sync import sync
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.embedded import downstream

    async with Hub(settings) as hub, downstream(hub) as settle:
        connector = hub.connector(args.name)
        try:
            with progress_reporter(f"sync {args.name}", enabled=not args.quiet) as report:
                results = await sync(hub, connector, stream=args.stream,
                                     full_refresh=args.full_refresh or args.backfill, settle=settle,
                                     mute_triggers=args.mute_triggers or args.backfill, progress=report)
        finally:
            await connector.aclose()
    print_json([r.summary() for r in results])
    return 0


@command(commands, "ingest-file", help="import CSV / JSON Lines exports (gzip too) FILES through connector NAME "
                                      "(an instance or type whose normalize() reads the rows); prints a JSON summary")
@click.argument("name")
@click.argument("files", nargs=-1, required=True, type=PATH)
@click.option("--stream", help="the stream the rows belong to (default: told by each row's shape)")
@click.option("--format", type=click.Choice(("csv", "jsonl")), help="default: from the name, else the content")
@click.option("--encoding", help="e.g. cp1251, utf-8, utf-8-sig (default: the connector's, else detected)")
@click.option("--delimiter", help="CSV delimiter (default: the connector's, else detected)")
@click.option("--mute-triggers", is_flag=True,
              help="a history import: profiles and segments update, no scenario fires")
@click.option("--quiet", is_flag=True, help="no progress on stderr")
@json_option("the summary is JSON anyway; accepted for symmetry")
async def cmd_ingest_file(args: Args, settings: Settings) -> int:
    from cdp_hub.connector.files import import_file
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.embedded import downstream

    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        raise ConfigurationError(f"no such file: {', '.join(missing)}")
    # No checkpoint here; on the in-process bus the stages run until the rows are stored, before it exits.
    async with Hub(settings) as hub, downstream(hub):
        connector = hub.connector(args.name)
        with progress_reporter(f"ingest-file {args.name}", unit="bytes", enabled=not args.quiet) as report:
            result = await import_file(hub, connector, args.files, stream=args.stream, format=args.format,
                                       encoding=args.encoding, delimiter=args.delimiter,
                                       mute_triggers=args.mute_triggers, progress=report)
    print_json({"files": [str(f) for f in args.files], "records": result.records, "events": result.events,
                "dead_letters": result.dead, "by_type": result.by_type,
                "first_errors": [{"record": d.record_id, "field": d.field, "error": d.error}
                                 for d in result.errors[:10]]})
    return 0
