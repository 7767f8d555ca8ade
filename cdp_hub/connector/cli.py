"""Connector commands of the ``cdp-hub`` CLI.

    cdp-hub connectors list                         installed connector types and configured instances
    cdp-hub connectors spec NAME                    JSON Schema of a connector's config
    cdp-hub connectors check NAME                   credentials and reachability (reads one page)
    cdp-hub connectors state NAME [--reset]         sync checkpoints (reset: the next sync starts over)
    cdp-hub sync NAME [--stream S] [--full-refresh] pull sync into cdp.events, checkpointed
    cdp-hub ingest-file NAME FILE... [--stream S]   CSV / JSON Lines (gzip too) through a connector

On the in-process bus (``bus = "memory"``) ``sync`` and ``ingest-file`` run the stages in this process
(:func:`cdp_hub.pipeline.embedded.downstream`) until what they published is stored, and a sync checkpoint
moves only after that: nothing lives only in the memory of a process about to exit.

(``cdp-hub new connector NAME`` is in :mod:`cdp_hub.scaffold.cli`.)

``NAME`` is a configured instance (``[connectors.shop]``) or a connector type (its defaults).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cdp_hub.cli.helpers import SubParsers, command_group, print_json, store_for
from cdp_hub.config import Settings
from cdp_hub.errors import ConfigurationError

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    """Add the connector commands to the ``cdp-hub`` parser."""
    csub = command_group(sub, "connectors", "list, describe and check connectors", metavar="ACTION")
    p = csub.add_parser("list", help="installed connector types and configured instances")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_list)
    p = csub.add_parser("spec", help="JSON Schema of a connector's config")
    p.add_argument("name", help="connector type or configured instance")
    p.set_defaults(handler=cmd_spec)
    p = csub.add_parser("check", help="test credentials and reachability (reads one page)")
    p.add_argument("name")
    p.set_defaults(handler=cmd_check)
    p = csub.add_parser("state", help="show (or reset) the sync checkpoints of an instance")
    p.add_argument("name")
    p.add_argument("--reset", action="store_true", help="forget the checkpoints: the next sync starts over")
    p.add_argument("--stream", help="only this stream")
    p.set_defaults(handler=cmd_state)

    p = sub.add_parser("sync", help="pull new and updated records of a connector into cdp.events")
    p.add_argument("name", help="configured connector instance (or a type, with its defaults)")
    p.add_argument("--stream", help="one stream (default: all)")
    p.add_argument("--full-refresh", action="store_true", help="ignore the checkpoint: read everything again")
    p.set_defaults(handler=cmd_sync)

    p = sub.add_parser("ingest-file", help="import CSV / JSON Lines exports (gzip too) through a connector")
    p.add_argument("name", help="connector instance or type whose normalize() reads the rows")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--stream", help="the stream the rows belong to (default: told by each row's shape)")
    p.add_argument("--format", choices=("csv", "jsonl"), help="default: from the name, else the content")
    p.add_argument("--encoding", help="e.g. cp1251, utf-8, utf-8-sig (default: the connector's, else detected)")
    p.add_argument("--delimiter", help="CSV delimiter (default: the connector's, else detected)")
    p.set_defaults(handler=cmd_ingest_file)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
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
    for t in types:
        streams = ", ".join(t["streams"]) or "push only"
        print(f"{t['name']:<12} {t['title']:<22} streams: {streams}   [{t['distribution'] or t['plugin']}]")
    for inst in instances:
        print(f"instance {inst['instance']} -> {inst['type']}{'' if inst['enabled'] else ' (disabled)'}")
    for f in failures:
        print(f"FAILED {f['plugin']}: {f['error']}", file=sys.stderr)
    return 0


def _connector_class(settings: Settings, name: str) -> type[Any]:
    from cdp_hub.plugins import get_registry

    inst = settings.connectors.get(name)
    return get_registry().connector(inst.type if inst else name)


def cmd_spec(args: argparse.Namespace, settings: Settings) -> int:
    cls = _connector_class(settings, args.name)
    schema = cls.config_model.model_json_schema()
    schema["title"] = f"{cls.name} connector config"
    print_json(schema)
    return 0


async def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.hub import Hub

    hub = Hub(settings)
    try:
        connector = hub.connector(args.name)
        if not connector.stream_names():
            print(f"{args.name}: push-only connector ({connector.name}); nothing to reach. It receives "
                  f"POST /v1/webhooks/{args.name}" + ("" if getattr(connector.config, "webhook_secret", None)
                                                      else " once webhook_secret is configured"))
            return 0
        await connector.check()
    finally:
        await hub.http.aclose()
    print(f"{args.name}: ok (credentials accepted, first page of {connector.stream_names()[0]} read)")
    return 0


async def cmd_state(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.connector.state import PgStateStore

    async with store_for(settings) as store:
        await store.migrate()
        states = PgStateStore(store)
        if args.reset:
            await states.reset(args.name, args.stream)
            print(f"{args.name}: checkpoints reset{f' for {args.stream}' if args.stream else ''}")
            return 0
        print_json({stream: state for stream, state in await states.all(args.name)
                    if args.stream is None or stream == args.stream})
    return 0


async def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.connector.sync import sync
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.embedded import downstream

    async with Hub(settings) as hub, downstream(hub) as settle:
        connector = hub.connector(args.name)
        try:
            results = await sync(hub, connector, stream=args.stream, full_refresh=args.full_refresh,
                                 settle=settle)
        finally:
            await connector.aclose()
    print_json([r.summary() for r in results])
    return 0


async def cmd_ingest_file(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.connector.files import import_file
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.embedded import downstream

    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        raise ConfigurationError(f"no such file: {', '.join(missing)}")
    # No checkpoint here; on the in-process bus the stages run until the rows are stored, before it exits.
    async with Hub(settings) as hub, downstream(hub):
        connector = hub.connector(args.name)
        result = await import_file(hub, connector, args.files, stream=args.stream, format=args.format,
                                   encoding=args.encoding, delimiter=args.delimiter)
    print_json({"files": [str(f) for f in args.files], "records": result.records, "events": result.events,
                "dead_letters": result.dead, "by_type": result.by_type,
                "first_errors": [{"record": d.record_id, "field": d.field, "error": d.error}
                                 for d in result.errors[:10]]})
    return 0
