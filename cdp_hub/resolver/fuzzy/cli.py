"""``cdp-hub identity suggest`` and ``cdp-hub identity suggestions``: fuzzy merge suggestions from the CLI.

    cdp-hub identity suggest [--threshold X] [--auto-merge [--rules RULES]] [--matcher matcher.toml] [--json]
    cdp-hub identity suggestions [--status open|auto|merged|rejected|stale|all] [--limit N] [--json]

The commands join the ``identity`` group of :mod:`cdp_hub.resolver.cli` (``cdp_hub.cli.helpers.attach``
merges the groups of the same name), or make it on their own when that module is not there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cdp_hub.cli.helpers import Args, command, group, json_option
from cdp_hub.config import Settings
from cdp_hub.errors import ConfigurationError
from cdp_hub.resolver.fuzzy.model import load_matcher_config
from cdp_hub.resolver.fuzzy.store import (
    SUGGESTION_STATUSES,
    AutoMergeResult,
    SuggestResult,
    list_suggestions,
    merge_auto_suggestions,
    suggest_merges,
)
from cdp_hub.store import Store

if TYPE_CHECKING:
    from cdp_hub.schema.events import Event

__all__ = ["commands"]


commands: list[click.Command] = []
identity = group(commands, "identity", "identity resolution: rules, conflicts, merge suggestions")


def _store(settings: Settings) -> Store:
    return Store.for_settings(settings, pool_size=2)


def _summary(result: SuggestResult, merged: AutoMergeResult | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "profiles": result.profiles,
        "candidate_pairs": result.candidate_pairs,
        "suggestions": result.suggestions,
        "new": result.inserted,
        "updated": result.updated,
        "stale": result.stale,
        "auto": len(result.auto),
        "matcher": result.matcher,
        "seconds": round(result.seconds, 3),
        "compared": result.compared if result.compared is not None else result.profiles,
        "incremental": result.compared is not None,
    }
    if result.run is not None and result.run.unreadable:
        out["unreadable"] = result.run.unreadable  # e.g. birth dates in no known notation: compared as missing
    if merged is not None:
        out["merged"] = merged.merged
        out["already_one"] = merged.already_one
        out["refused"] = [{"profile_a": p.a, "profile_b": p.b, "reason": why} for p, why in merged.refused]
        out["held_clusters"] = merged.held
    return out


@command(identity, "suggest", help="find profiles that are probably one person (fuzzy matching) and store merge "
                                  "suggestions: live profiles are scored pairwise (after blocking) on names, birth "
                                  "date, address, phone and e-mail; pairs at or above the threshold go to "
                                  "merge_suggestions (idempotent)")
@click.option("--threshold", type=float, default=None,
              help="minimum match probability to store (default: the matcher's suggest_threshold)")
@click.option("--auto-merge", is_flag=True,
              help="merge the pairs at or above auto_merge_threshold now (needs the threshold set in the matcher "
                   "configuration and parameters estimated on this data)")
@click.option("--incremental", is_flag=True,
              help="compare only the profiles changed since the last run (of the same matcher configuration) "
                   "against the rest, with that run's parameters; a full run when there is none")
@click.option("--report", is_flag=True,
              help="print the calibration report: score histogram and expected precision per threshold")
@click.option("--matcher", default=None, help="matcher configuration (TOML or JSON); default: built-in")
@click.option("--rules", type=click.Path(path_type=Path), default=None,
              help="identity rules for --auto-merge (default: $CDP_HUB_IDENTITY_RULES or built-in)")
@json_option("print the result as JSON")
async def cmd_suggest(args: Args, settings: Settings) -> int:
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigurationError(f"--threshold must be a probability between 0 and 1, got {args.threshold}")
    config = load_matcher_config(args.matcher)
    merged: AutoMergeResult | None = None
    if args.auto_merge:
        # Merges emit profile.merged events on the bus, so this needs the whole hub, not just the store.
        from cdp_hub.hub import Hub
        from cdp_hub.resolver.merge import publish_profile_event
        from cdp_hub.resolver.rules import load_rules

        rules = load_rules(args.rules)
        async with Hub(settings) as hub:
            result = await suggest_merges(hub.store, config, threshold=args.threshold, report=args.report,
                                    incremental=args.incremental)

            async def publish(event: Event) -> None:
                await publish_profile_event(hub, event)

            merged = await merge_auto_suggestions(hub.store, result.auto, config, rules=rules, publish=publish)
    else:
        async with _store(settings) as store:
            await store.migrate()
            result = await suggest_merges(store, config, threshold=args.threshold, report=args.report,
                                    incremental=args.incremental)
    summary = _summary(result, merged)
    if result.calibration is not None:
        summary["calibration"] = result.calibration.as_json()
    if args.json:
        print(json.dumps(summary))
        return 0
    auto_note = ("auto-merge off" if config.auto_merge_threshold is None
                 else f"{len(result.auto)} at or above auto_merge_threshold {config.auto_merge_threshold:g}")
    scope = "" if result.compared is None else f" ({result.compared} changed since the last run compared)"
    print(f"{result.profiles} profiles{scope}, {result.candidate_pairs} candidate pairs -> {result.suggestions} "
          f"suggestions ({result.inserted} new, {result.updated} updated, {result.stale} stale), "
          f"{auto_note} in {result.seconds:.2f}s")
    if result.calibration is not None:
        print("\n".join(result.calibration.lines()))
    if result.run is not None and result.run.unreadable:
        print("values that could not be read (compared as missing): "
              + ", ".join(f"{k}={v}" for k, v in sorted(result.run.unreadable.items())), file=sys.stderr)
    for pair in ([p for p in result.run.pairs if p.score >= (args.threshold or config.suggest_threshold)][:10]
                 if result.run and not args.report else []):
        print(f"  {pair.score:.6f}  {pair.a}  {pair.b}")
    if merged is not None:
        print(f"auto-merged {merged.merged} pairs ({merged.already_one} already one profile)")
        for pair, why in merged.refused:
            print(f"  not merged {pair.a} {pair.b}: {why}", file=sys.stderr)
        for group in merged.held:
            print(f"  held for an operator: {len(group)} profiles chained by fuzzy pairs: {' '.join(group)}",
                  file=sys.stderr)
    elif result.auto:
        print(f"{len(result.auto)} pairs stored with status 'auto'; run with --auto-merge to merge them",
              file=sys.stderr)
    return 0


@command(identity, "suggestions", help="list stored merge suggestions, best first")
@click.option("--status", default="open", show_default=True, type=click.Choice([*SUGGESTION_STATUSES, "all"]),
              help="only suggestions in this status")
@click.option("--limit", type=int, default=50, show_default=True, help="at most this many")
@json_option("print JSON lines")
async def cmd_suggestions(args: Args, settings: Settings) -> int:
    status = None if args.status == "all" else args.status
    async with _store(settings) as store:
        await store.migrate()
        rows = await list_suggestions(store, status=status, limit=args.limit)
    for row in rows:
        if args.json:
            print(json.dumps({"profile_a": str(row.profile_a), "profile_b": str(row.profile_b),
                              "score": row.score, "weight": row.weight, "status": row.status,
                              "matcher": row.matcher, "evidence": row.evidence}))
        else:
            fields = ", ".join(f"{k}={v['level']}" for k, v in sorted(row.evidence.items())
                               if isinstance(v, dict) and "level" in v)
            print(f"{row.score:.4f}  {row.status:<8} {row.profile_a}  {row.profile_b}  {fields}")
    if not rows and not args.json:
        print(f"no suggestions{'' if status is None else f' with status {status!r}'}", file=sys.stderr)
    return 0
