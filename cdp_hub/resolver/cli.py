"""Command line of identity resolution.

    cdp-hub profiles show (--email E | --phone P | --kind K --value V | --id PROFILE_ID) [--json] [--events N]
    cdp-hub profiles merge PROFILE_ID PROFILE_ID... [--reason TEXT] [--force]
    cdp-hub profiles unmerge PROFILE_ID [--reason TEXT]
    cdp-hub identity dry-run RULES [--json] [--show N]
    cdp-hub identity conflicts [--all] [--limit N] [--json]
    cdp-hub import FILE... --source NAME [--type customer.updated] [--format auto|csv|jsonl] [--json]

Commands that apply identity rules read them from ``--rules FILE`` or ``$CDP_HUB_IDENTITY_RULES``
(defaults otherwise).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson

from cdp_hub.cli.helpers import SubParsers, command_group
from cdp_hub.config import Settings
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub
from cdp_hub.resolver.profiles import ProfileView, find_profile, load_profile
from cdp_hub.resolver.rules import IdentityRules, load_rules
from cdp_hub.store import ProfileRepository, Store

__all__ = ["register"]


def register(subparsers: SubParsers) -> None:
    profiles = command_group(subparsers, "profiles", "look up, merge and unmerge profiles",
                             metavar="SUBCOMMAND", required=False)
    p = profiles.add_parser("show", help="a profile by any identity: golden record, identities, provenance, "
                                         "recent events, merge history")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--email")
    who.add_argument("--phone")
    who.add_argument("--kind", help="identity kind (with --value): crm_id, loyalty_card, device_id, ...")
    who.add_argument("--id", dest="profile_id", help="a profile id (a merged-away id leads to the survivor)")
    p.add_argument("--value", help="identity value, with --kind")
    p.add_argument("--events", type=int, default=20, help="how many recent events (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_show)

    p = profiles.add_parser("merge", help="merge profiles into the oldest of them (operator decision)")
    p.add_argument("profile_ids", nargs="+", metavar="PROFILE_ID")
    p.add_argument("--reason", default="operator merge")
    p.add_argument("--force", action="store_true", help="merge even when the identity rules forbid it")
    p.add_argument("--rules", type=Path, help="identity rules file (default: $CDP_HUB_IDENTITY_RULES)")
    p.set_defaults(handler=cmd_merge)

    p = profiles.add_parser("unmerge", help="split a wrongly merged profile back out; its events follow it")
    p.add_argument("profile_id", metavar="PROFILE_ID", help="the profile that was merged away")
    p.add_argument("--reason", default="operator unmerge")
    p.add_argument("--rules", type=Path, help="identity rules file (default: $CDP_HUB_IDENTITY_RULES)")
    p.set_defaults(handler=cmd_unmerge)

    identity = command_group(subparsers, "identity",
                             "identity resolution: rules, conflicts, merge suggestions",
                             metavar="SUBCOMMAND", required=False)
    p = identity.add_parser("dry-run", help="replay stored history under new identity rules and report the "
                                            "merges and splits they would cause (changes nothing)")
    p.add_argument("rules_file", type=Path, metavar="RULES", help="rules file (.toml, .yaml, .json)")
    p.add_argument("--show", type=int, default=10, help="list this many example merges and splits")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_dry_run)

    p = identity.add_parser("conflicts", help="what the identity rules refused (open ones by default)")
    p.add_argument("--all", action="store_true", help="include resolved ones")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_conflicts)

    p = subparsers.add_parser(
        "import", help="bulk-load historical customer records (CSV/JSONL) and resolve them set-wise",
        description="Load customer records from legacy systems with COPY, resolve identities as connected "
                    "components in SQL and build golden records set-wise (not the schema migrations: "
                    "that is `cdp-hub migrate`).")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--source", required=True, help="source name recorded as provenance (e.g. legacy_crm)")
    p.add_argument("--type", default="customer.updated", help="event type of each record")
    p.add_argument("--format", choices=("auto", "csv", "jsonl"), default="auto")
    p.add_argument("--rules", type=Path, help="identity rules file (default: $CDP_HUB_IDENTITY_RULES)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--report", type=Path, metavar="FILE",
                   help="write the reconciliation report (JSON) to FILE and print its readable summary")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--temp-buffers-mb", type=int, default=3072,
                   help="PostgreSQL session memory for the staging tables (default 3072; ~1 GB per million records)")
    p.add_argument("--work-mem-mb", type=int, default=256, help="PostgreSQL memory per sort or hash (default 256)")
    p.add_argument("--workers", type=int, help="processes that normalize records (default: cores, at most 4)")
    p.set_defaults(handler=cmd_import)


def _rules(path: Path | None) -> IdentityRules:
    return load_rules(path)


async def _open_store(settings: Settings) -> Store:
    store = Store(settings.postgres_dsn, dialect=settings.dialect, pool_size=4, data_dir=settings.data_dir)
    await store.start()
    await store.migrate()
    return store


def _dump(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


async def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    store = await _open_store(settings)
    try:
        view: ProfileView | None
        if args.profile_id:
            try:
                pid = uuid.UUID(args.profile_id)
            except ValueError:
                raise ConfigurationError(f"--id {args.profile_id!r} is not a profile id (a UUID)") from None
            view = await load_profile(store, pid, events_limit=args.events)
            asked = f"profile {pid}"
        else:
            if args.email:
                kind, value = "email", args.email
            elif args.phone:
                kind, value = "phone", args.phone
            else:
                if not args.value:
                    raise ConfigurationError("--kind needs --value (e.g. --kind crm_id --value C-1001)")
                kind, value = args.kind, args.value
            view = await find_profile(store, kind, value, options=settings.normalization,
                                      events_limit=args.events)
            asked = f"{kind} {value!r}"
    finally:
        await store.stop()
    if view is None:
        print(f"no profile for {asked}", file=sys.stderr)
        return 1
    if args.json:
        _dump(view.model_dump(mode="json"))
    else:
        print(render_profile(view))
    return 0


def render_profile(view: ProfileView) -> str:
    """The human-readable form of ``profiles show``."""
    lines = [f"Profile {view.profile_id}  (version {view.version}, created {view.created_at:%Y-%m-%d %H:%M:%S})"]
    if view.requested_id:
        lines.append(f"  {view.requested_id} was merged into this profile")
    lines.append("Golden record:")
    for key, value in view.golden.items():
        if key == "consent" and isinstance(value, dict):
            value = "  ".join(f"{ch}={st}" for ch, st in value.items())
        lines.append(f"  {key:<14} {value}")
    lines.append("Identities:")
    for ident in view.identities:
        lines.append(f"  {ident.kind:<14} {ident.value:<32} source={ident.source}  "
                     f"seen {ident.first_seen:%Y-%m-%d}..{ident.last_seen:%Y-%m-%d}")
    lines.append("Provenance (trait, value, source, times seen, last seen):")
    for t in view.traits:
        lines.append(f"  {t.trait:<14} {orjson.dumps(t.value).decode():<32} {t.source:<12} "
                     f"x{t.seen_count:<4} {t.observed_at:%Y-%m-%d %H:%M}")
    lines.append(f"Recent events ({len(view.recent_events)}):")
    for e in view.recent_events:
        lines.append(f"  {e.occurred_at:%Y-%m-%d %H:%M}  {e.type:<22} {e.source:<12} {e.event_id}")
    lines.append("Merge history:")
    for m in view.merges:
        undone = f"  (undone {m.undone_at:%Y-%m-%d %H:%M})" if m.undone_at else ""
        lines.append(f"  {m.merged_at:%Y-%m-%d %H:%M}  {m.merged_profile_id} -> {m.surviving_profile_id}: "
                     f"{m.reason}{undone}")
    if not view.merges:
        lines.append("  (none)")
    if view.conflicts:
        lines.append("Conflicts held by the identity rules:")
        for c in view.conflicts:
            lines.append(f"  {c.detected_at:%Y-%m-%d %H:%M}  {c.rule}: {c.kind}:{c.value} -- {c.detail}")
    return "\n".join(lines)


def _hub(settings: Settings) -> Hub:
    return Hub(settings)


async def cmd_merge(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.pipeline.embedded import downstream
    from cdp_hub.resolver.merge import merge_profiles, publish_profile_event

    try:
        ids = [uuid.UUID(p) for p in args.profile_ids]
    except ValueError as exc:
        raise ConfigurationError(f"not a profile id: {exc}") from None
    async with _hub(settings) as hub, downstream(hub):  # the profile event reaches the triggers
        outcome = await merge_profiles(hub.store, ids, reason=args.reason, rules=_rules(args.rules),
                                       force=args.force)
        if outcome is None:
            print("these ids are one profile already; nothing to do")
            return 0
        await publish_profile_event(hub, outcome.event)
    print(f"merged {', '.join(map(str, outcome.losers))} into {outcome.survivor}")
    return 0


async def cmd_unmerge(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.pipeline.embedded import downstream
    from cdp_hub.resolver.merge import publish_profile_event, unmerge_profile

    try:
        pid = uuid.UUID(args.profile_id)
    except ValueError:
        raise ConfigurationError(f"{args.profile_id!r} is not a profile id (a UUID)") from None
    async with _hub(settings) as hub, downstream(hub):  # the profile event reaches the triggers
        outcome = await unmerge_profile(hub.store, pid, rules=_rules(args.rules), reason=args.reason)
        if outcome.event is not None:
            await publish_profile_event(hub, outcome.event)
    print(f"profile {outcome.restored} split from {outcome.holder}: "
          f"{len(outcome.identities)} identities and {outcome.events_moved} events moved back")
    return 0


async def cmd_dry_run(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.resolver.dryrun import dry_run

    rules = load_rules(args.rules_file)
    store = await _open_store(settings)
    try:
        report = await dry_run(store, rules, examples=args.show)
    finally:
        await store.stop()
    if args.json:
        _dump(report.as_dict())
    else:
        print(report.render())
    return 0


async def cmd_conflicts(args: argparse.Namespace, settings: Settings) -> int:
    store = await _open_store(settings)
    try:
        rows = await ProfileRepository(store).conflicts(include_resolved=args.all, limit=args.limit)
    finally:
        await store.stop()
    if args.json:
        _dump(rows)
        return 0
    if not rows:
        print("no conflicts")
    for r in rows:
        ids = ", ".join(str(p) for p in r["profile_ids"])
        print(f"{r['detected_at']:%Y-%m-%d %H:%M}  {r['rule']:<16} {r['kind'] or '-'}:{r['value'] or '-'}  "
              f"profiles {ids}\n    {r['detail']}")
    return 0


async def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from cdp_hub.resolver.bulk import BulkImporter

    for f in args.files:
        if not f.exists():
            raise ConfigurationError(f"file not found: {f}")
    from cdp_hub.pipeline.embedded import downstream

    # The import writes PostgreSQL directly; its dead letters go through the bus, and on the in-process bus
    # the DLQ stage of this process archives them before the command returns.
    async with _hub(settings) as hub, downstream(hub):
        importer = BulkImporter(hub, source=args.source, event_type=args.type, rules=_rules(args.rules),
                                progress=None if args.quiet or args.json else sys.stderr,
                                temp_buffers_mb=args.temp_buffers_mb, work_mem_mb=args.work_mem_mb,
                                workers=args.workers)
        summary = await importer.run(args.files, fmt=args.format)
    if args.report is not None:
        args.report.write_bytes(orjson.dumps(summary.reconciliation(), option=orjson.OPT_INDENT_2))
    if args.json:
        _dump(summary.as_dict())
    else:
        print(summary.render())
        if args.report is not None:
            print(summary.render_reconciliation())
    return 0 if summary.records else 1
