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

import sys
import uuid
from pathlib import Path
from typing import Any

import click
import orjson

from cdp_hub.cli.helpers import Args, command, group, json_option, print_json
from cdp_hub.cli.progress import progress_reporter
from cdp_hub.config import Settings
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub
from cdp_hub.resolver.profiles import ProfileView, find_profile, load_profile
from cdp_hub.resolver.rules import IdentityRules, load_rules
from cdp_hub.store import ProfileRepository, Store

__all__ = ["commands"]


PATH = click.Path(path_type=Path)
RULES_HELP = "identity rules file (default: $CDP_HUB_IDENTITY_RULES)"

commands: list[click.Command] = []
profiles = group(commands, "profiles", "look up, merge and unmerge profiles")
identity = group(commands, "identity", "identity resolution: rules, conflicts, merge suggestions")


def _rules(path: Path | None) -> IdentityRules:
    return load_rules(path)


async def _open_store(settings: Settings) -> Store:
    store = Store.for_settings(settings, pool_size=4)
    await store.start()
    await store.migrate()
    return store


def _dump(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


@command(profiles, "show", help="a profile by any identity: golden record, identities, provenance, recent events, "
                               "merge history", one_of=[("email", "phone", "kind", "profile_id")])
@click.option("--email", help="find the profile by this e-mail address")
@click.option("--phone", help="find the profile by this phone number")
@click.option("--kind", help="identity kind (with --value): crm_id, loyalty_card, device_id, ...")
@click.option("--id", "profile_id", help="a profile id (a merged-away id leads to the survivor)")
@click.option("--value", help="identity value, with --kind")
@click.option("--events", type=int, default=20, show_default=True, help="how many recent events")
@json_option("print JSON")
async def cmd_show(args: Args, settings: Settings) -> int:
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


@command(profiles, "merge", help="merge profiles PROFILE_ID... into the oldest of them (operator decision)")
@click.argument("profile_ids", nargs=-1, required=True, metavar="PROFILE_ID...")
@click.option("--reason", default="operator merge", show_default=True, help="recorded in the merge history")
@click.option("--force", is_flag=True, help="merge even when the identity rules forbid it")
@click.option("--rules", type=PATH, help=RULES_HELP)
@json_option("print the outcome as JSON")
async def cmd_merge(args: Args, settings: Settings) -> int:
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
            if args.json:
                print_json({"merged": [], "survivor": None})
            else:
                print("these ids are one profile already; nothing to do")
            return 0
        await publish_profile_event(hub, outcome.event)
    if args.json:
        print_json({"merged": [str(p) for p in outcome.losers], "survivor": str(outcome.survivor)})
        return 0
    print(f"merged {', '.join(map(str, outcome.losers))} into {outcome.survivor}")
    return 0


@command(profiles, "unmerge", help="split the wrongly merged-away profile PROFILE_ID back out; its events "
                                  "follow it")
@click.argument("profile_id", metavar="PROFILE_ID")
@click.option("--reason", default="operator unmerge", show_default=True, help="recorded in the merge history")
@click.option("--rules", type=PATH, help=RULES_HELP)
@json_option("print the outcome as JSON")
async def cmd_unmerge(args: Args, settings: Settings) -> int:
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
    if args.json:
        print_json({"restored": str(outcome.restored), "holder": str(outcome.holder),
                    "identities": len(outcome.identities), "events_moved": outcome.events_moved})
        return 0
    print(f"profile {outcome.restored} split from {outcome.holder}: "
          f"{len(outcome.identities)} identities and {outcome.events_moved} events moved back")
    return 0


@command(identity, "dry-run", help="replay stored history under the identity rules in RULES (.toml, .yaml, "
                                  ".json) and report the merges and splits they would cause (changes nothing)")
@click.argument("rules_file", type=PATH, metavar="RULES")
@click.option("--show", type=int, default=10, show_default=True, help="list this many example merges and splits")
@json_option("print the report as JSON")
async def cmd_dry_run(args: Args, settings: Settings) -> int:
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


@command(identity, "conflicts", help="what the identity rules refused (open ones by default)")
@click.option("--all", is_flag=True, help="include resolved ones")
@click.option("--limit", type=int, default=50, show_default=True, help="at most this many")
@json_option("print the conflicts as JSON")
async def cmd_conflicts(args: Args, settings: Settings) -> int:
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


@command(commands, "import", help="bulk-load historical customer records (CSV/JSONL FILES) with COPY, resolve "
                                 "identities as connected components in SQL and build golden records set-wise (not "
                                 "the schema migrations: that is `cdp-hub migrate`)")
@click.argument("files", nargs=-1, required=True, type=PATH, metavar="FILE...")
@click.option("--source", required=True, help="source name recorded as provenance (e.g. legacy_crm)")
@click.option("--type", default="customer.updated", show_default=True, help="event type of each record")
@click.option("--format", type=click.Choice(("auto", "csv", "jsonl")), default="auto", show_default=True,
              help="the files' format (auto: from the name, else the content)")
@click.option("--rules", type=PATH, help=RULES_HELP)
@json_option("print the summary as JSON")
@click.option("--report", type=PATH, metavar="FILE",
              help="write the reconciliation report (JSON) to FILE and print its readable summary")
@click.option("--quiet", is_flag=True, help="no progress on stderr")
@click.option("--temp-buffers-mb", type=int, default=3072, show_default=True,
              help="PostgreSQL session memory for the staging tables (~1 GB per million records)")
@click.option("--work-mem-mb", type=int, default=256, show_default=True,
              help="PostgreSQL memory per sort or hash")
@click.option("--workers", type=int, help="processes that normalize records (default: cores, at most 4)")
async def cmd_import(args: Args, settings: Settings) -> int:
    from cdp_hub.resolver.bulk import BulkImporter

    for f in args.files:
        if not f.exists():
            raise ConfigurationError(f"file not found: {f}")
    from cdp_hub.pipeline.embedded import downstream

    # The import writes PostgreSQL directly; its dead letters go through the bus, and on the in-process bus
    # the DLQ stage of this process archives them before the command returns.
    quiet = args.quiet or args.json
    async with _hub(settings) as hub, downstream(hub):
        with progress_reporter(f"import {args.source}", unit="bytes", enabled=not quiet) as report:
            # sys.stderr inside the block: on a terminal the bar's console, which prints above the bar.
            importer = BulkImporter(hub, source=args.source, event_type=args.type, rules=_rules(args.rules),
                                    progress=None if quiet else sys.stderr, report=None if quiet else report,
                                    temp_buffers_mb=args.temp_buffers_mb, work_mem_mb=args.work_mem_mb,
                                    workers=args.workers)
            summary = await importer.run(list(args.files), fmt=args.format)
    if args.report is not None:
        args.report.write_bytes(orjson.dumps(summary.reconciliation(), option=orjson.OPT_INDENT_2))
    if args.json:
        _dump(summary.as_dict())
    else:
        print(summary.render())
        if args.report is not None:
            print(summary.render_reconciliation())
    return 0 if summary.records else 1
